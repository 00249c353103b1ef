"""The all-features project under repeated load: every request answered, every write
kept, and the process's memory levelling off. Figures go to the reliability report."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from toolkit.auth import writer_headers
from toolkit.live import (
    EXPECTED,
    Database,
    Server,
    app_env,
    check_error_bodies,
    check_log,
    check_writes,
    outside,
    report_run,
    serve_grace,
    show,
    stopped_at_exit,
    uvicorn,
)
from toolkit.load import Traffic
from toolkit.processes import free_port
from toolkit.report import Figures

pytestmark = pytest.mark.xdist_group("reliability")

CLIENTS = 100  # concurrent virtual clients in the load runs
LOAD_SECONDS = 8.0  # length of each load run
LOAD_RUNS = 3  # load runs after a warm-up, to compare memory between them
# Memory of the one uvicorn process serving the load (every feature on): about
# 100 MiB, within 1 MiB between runs here. The bounds leave room for other machines.
RSS_LIMIT_MIB = 250
RSS_GROWTH_LIMIT_MIB = 15


def test_load_mix_is_answered_loses_no_write_and_memory_stays_bounded(
    project: Path,
    python: Path,
    database: Database,
    services: dict[str, str],
    figures: Figures,
    tmp_path: Path,
) -> None:
    """Repeated load runs over every route: no 5xx, no connection error, every write kept,
    and the process's memory levels off."""
    port = free_port()
    server = Server(
        uvicorn(python, project, port),
        project,
        app_env(database.url, services["REDIS_URL"]),
        tmp_path / "server.log",
        port,
    )
    memory: list[tuple[str, float]] = []

    async def scenario() -> list[Traffic]:
        warm_up = Traffic(server.base, clients=CLIENTS // 2, network=10, headers=writer_headers(server))
        await warm_up.seed(20)
        await warm_up.run(3)
        memory.append(("after warm-up", server.rss_mib()))
        runs = [warm_up]
        for number in range(LOAD_RUNS):
            traffic = Traffic(
                server.base,
                clients=CLIENTS,
                network=11 + number,
                seed=number,
                writers=2,
                headers=warm_up.headers,
            )
            traffic.readable = list(warm_up.readable)
            await traffic.run(LOAD_SECONDS)
            await asyncio.sleep(1)
            memory.append((f"after run {number + 1}", server.rss_mib()))
            runs.append(traffic)
        return runs

    with stopped_at_exit(server):
        server.wait_healthy()
        memory.append(("started", server.rss_mib()))
        runs = asyncio.run(scenario())
        code = server.terminate(serve_grace(project) + 10)

    samples = [sample for traffic in runs for sample in traffic.samples]
    scenario_name = f"Load ({CLIENTS} clients, {LOAD_RUNS} x {LOAD_SECONDS:.0f} s + warm-up)"
    figures.note(
        "Every scenario runs baked projects in production mode (all features, PostgreSQL, Redis) over "
        "loopback for a few seconds at a time; the client runs in the test process on the same machine, "
        "so throughput and latency depend on the machine and are reported, never asserted."
    )
    report_run(figures, scenario_name, samples)
    wrong = outside(samples, EXPECTED)
    assert not wrong, f"{len(wrong)} unexpected answers or errors:\n{show(wrong)}"
    check_error_bodies(samples)
    kept = check_writes(runs, database.rows())
    figures.add(scenario_name, "acknowledged writes, all in the database", kept)
    figures.add(scenario_name, "rate-limited writes (429)", sum(1 for s in samples if s.status == 429))
    assert code in (0, -signal.SIGTERM)
    check_log(server, database)

    rss = dict(memory)
    growth = rss[f"after run {LOAD_RUNS}"] - rss["after run 1"]
    figures.add(
        "Memory (RSS of the uvicorn process)",
        "MiB " + ", ".join(name for name, _ in memory),
        ", ".join(f"{value}" for _, value in memory),
    )
    figures.add(
        "Memory (RSS of the uvicorn process)",
        f"growth run 1 -> run {LOAD_RUNS}",
        f"{growth:+.1f} MiB (bound {RSS_GROWTH_LIMIT_MIB} MiB; total bound {RSS_LIMIT_MIB} MiB)",
    )
    assert max(rss.values()) < RSS_LIMIT_MIB, memory
    assert growth < RSS_GROWTH_LIMIT_MIB, memory
