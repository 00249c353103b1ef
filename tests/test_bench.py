"""The benchmark script still runs: a quick pass over every part, on real services.

The measurements themselves are not checked here (a second per endpoint on a
shared machine means nothing); `make bench` runs the real thing. This only keeps
the bench package from rotting: it bakes, serves, drives every endpoint and every
realtime setup, and writes its table, JSON and chart.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from toolkit.features import ROOT
from toolkit.processes import run

pytestmark = pytest.mark.xdist_group("bench")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_quick_benchmark_writes_a_table_and_a_chart(
    services: dict[str, str], venv: Path, tmp_path: Path
) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed (it is in .ci/run's APT_PACKAGES)")
    result = run(
        [sys.executable, "-m", "bench", "--quick", "--no-peer", "--output", tmp_path], ROOT, timeout=300
    )

    table = (tmp_path / "results.md").read_text()
    assert table in result.stdout
    for row in (
        "| GET /health |",
        "| GET /health, project without metrics |",
        "| The same read, project without metrics* |",
        "| The same read on SQLAlchemy's default pool (5 kept, 10 more opened and closed)* |",
        "| GET /items/{id} from the database",
        "| GET /items/{id} from the Redis cache* |",
        "| The same read behind a bearer token (access token checked)* |",
        "| The same read, traced (spans sent to a local OTLP endpoint)* |",
        "Tracing: the database read traced ÷ untraced",
        "Pool: the database read with every connection kept",
        "the database paths on asyncpg alone",
        "Logging in (`POST /auth/token`",
        "| GET /items?limit=10 (a page of 10 and the total) |",
        "| POST /items |",
        "| GET /, rate-limited (Redis storage)† |",
        "| GET /, rate limiting off |",
        "| slowapi, storage calls in `asyncio.to_thread` |",
        "| slowapi, storage calls in Starlette's `run_in_threadpool` |",
        "| `limits` with its async Redis storage (one round trip per request) |",
        "| Emit-to-receive p99, ms |",
        "| Enqueue to start p99, ms |",
        "| Jobs started per second |",
        "| Cold start to the first 200 on /health",
        "| Bake the default project with the cookiecutter CLI",
    ):
        assert row in table, row
    assert (tmp_path / "throughput.png").read_bytes().startswith(PNG_SIGNATURE)

    results = json.loads((tmp_path / "results.json").read_text())
    # Every HTTP target of every row answered 2xx and was timed.
    rounds = [load for measured in results["http"].values() for load in measured["rounds"]]
    assert len(results["http"]) == 31
    assert all(load["rps"] > 0 and load["requests"] > 0 and load["cpu_us"] > 0 for load in rounds)
    # The write's rows were counted in its database as it committed them.
    assert all(load["committed_per_s"] > 0 for load in results["http"]["app-writes POST /items"]["rounds"])
    # Every broadcast reached every client: the app's Socket.IO, bare python-socketio, the plain path.
    for kind in ("app", "ceiling", "plain"):
        assert results["socketio"][kind]["lost"] == 0
    assert len(results["targets"]) == 16
