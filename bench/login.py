"""What a login costs: the signed-in round trip, and one argon2 hash alone."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench.servers import Server
from toolkit.auth import create_admin, log_in
from toolkit.processes import clean_env, run

# One argon2 hash with the project's parameters, in ms (the best of five).
_HASH_TIME = (
    "import timeit\n"
    "from app.auth.passwords import HASHER\n"
    "print(min(timeit.repeat(lambda: HASHER.hash('a password'), number=1, repeat=5)) * 1000)\n"
)


def measure_login(python: Path, project: Path, server: Server, logins: int) -> dict[str, float]:
    """What a login costs: POST /auth/token one at a time, and one argon2 hash alone."""
    create_admin(python, project, server.env)
    took = []
    for _ in range(logins):
        started = time.perf_counter()
        log_in(server.url)
        took.append((time.perf_counter() - started) * 1000)
    hashing = run([python, "-c", _HASH_TIME], project, clean_env()).stdout
    return {"logins": logins, "login_p50_ms": statistics.median(took), "hash_ms": float(hashing)}
