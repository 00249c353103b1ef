"""What the benchmark runs: server options, run lengths, and the targets it reports."""

from __future__ import annotations

from dataclasses import dataclass

from toolkit.features import ROOT

BENCH = ROOT / "bench"
CONNECTIONS = 64
# The same for the generated app and every ceiling (the generated scripts/serve
# also turns uvicorn's proxy headers off: the app applies them itself).
SERVER_OPTIONS = [
    "--host",
    "127.0.0.1",
    "--workers",
    "1",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--no-proxy-headers",
    "--log-level",
    "warning",
]
# High enough that every request is counted and none is refused.
UNREFUSED_LIMIT = "100000000/minute"
TARGETS = {
    "health_vs_fastapi": 0.85,
    "cache_vs_database": 1.5,
    "limited_vs_unlimited": 0.65,
    "data_vs_ceiling": 0.85,
    "vs_peer": 1.0,
    "protected_vs_public": 0.8,
    "metrics_on_vs_off": 0.9,
    "limited_p99_ms": 50.0,
    "socketio_p99_ms": 50.0,
    "cold_start_s": 1.5,
    "idle_rss_mb": 120.0,
    "bake_s": 1.0,
}


@dataclass
class Settings:
    seconds: int
    # wrk's connections per target.
    connections: int
    # Drive every target of a round at once, with every HTTP server running (a
    # smoke run, whose figures mean nothing): else one target and group at a time.
    side_by_side: bool
    warmup: int
    rounds: int
    sio_clients: int
    sio_processes: int
    sio_warmup: int
    sio_emits: int
    sio_interval: float
    sio_burst: int
    sio_rounds: int
    cold_starts: int
    bakes: int
    logins: int
    job_spaced: int
    job_burst: int


FULL = Settings(
    seconds=4,
    connections=CONNECTIONS,
    side_by_side=False,
    warmup=2,
    rounds=5,
    sio_clients=1000,
    sio_processes=2,
    sio_warmup=5,
    sio_emits=40,
    sio_interval=0.25,
    sio_burst=100,
    sio_rounds=2,
    cold_starts=5,
    bakes=5,
    logins=20,
    job_spaced=300,
    job_burst=3000,
)
QUICK = Settings(
    # Every target at once: on a slow machine the slowest took over a second a request.
    seconds=3,
    # Few enough that every server of every group can hold its connections at once.
    connections=2,
    side_by_side=True,
    warmup=0,
    rounds=1,
    sio_clients=20,
    sio_processes=1,
    sio_warmup=1,
    sio_emits=4,
    sio_interval=0.05,
    sio_burst=10,
    sio_rounds=1,
    cold_starts=1,
    bakes=1,
    logins=2,
    job_spaced=20,
    job_burst=100,
)
