"""A dependency taken away under load and given back: Redis (a private redis-server,
stopped and started, for the web instances and for the background-job worker) and
PostgreSQL (cut at a TCP proxy in front of it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from toolkit.auth import writer_headers
from toolkit.events import EventProcess
from toolkit.live import (
    EXPECTED,
    UNAVAILABLE,
    Database,
    RedisServer,
    Server,
    app_env,
    check_error_bodies,
    check_log,
    check_writes,
    listener,
    outside,
    report_run,
    serve_grace,
    show,
    stopped_at_exit,
    uvicorn,
)
from toolkit.load import DATABASE_OPS, Sample, Traffic, first_after, probe, write_probe
from toolkit.processes import free_port
from toolkit.report import Figures
from toolkit.tcp_proxy import TcpProxy

pytestmark = pytest.mark.xdist_group("reliability")

FAULT_CLIENTS = 50  # concurrent clients while a fault is injected
BEFORE_FAULT = 4.0  # seconds of load before a fault
FAULT_SECONDS = 6.0  # how long a dependency stays down
AFTER_FAULT = 5.0  # seconds of load after it is back
RECOVERY_DEADLINE = 45.0  # longest wait for a feature to come back (Redis is retried up to every 32 s)


def emit_reaches(base: str, client: EventProcess, room: str, marker: int) -> bool:
    """An emit through `base` arrives at `client` within a second."""
    mark = len(client.events)
    response = httpx.post(f"{base}/realtime/rooms/{room}/emit", json={"data": {"n": marker}}, timeout=10)
    assert response.status_code == 202, response.text
    with contextlib.suppress(AssertionError):
        while True:
            event = client.wait_for("message", after=mark, timeout=1)
            if event["data"] == {"n": marker}:
                return True
            mark = client.events.index(event) + 1
    return False


def limits_shared(a: str, b: str, attempt: int, signed_in: dict[str, str]) -> bool:
    """One client's writes alternate between the instances: only 10 of 12 may pass (10/minute)."""
    headers = {"X-Forwarded-For": f"10.99.{attempt // 200}.{attempt % 200 + 1}", **signed_in}
    statuses = [
        httpx.post(
            f"{base}/items", json={"name": f"limits-{uuid.uuid4().hex}"}, headers=headers, timeout=10
        ).status_code
        for _ in range(6)
        for base in (a, b)
    ]
    assert set(statuses) <= {201, 429}, statuses
    return statuses.count(201) == 10


def test_redis_outage_degrades_and_recovers_without_a_restart(
    project: Path, python: Path, database: Database, figures: Figures, tmp_path: Path
) -> None:
    """Redis stopped under load: readiness says degraded and stays 200, everything answers
    (from the database, with per-process limits); Redis back: cache, shared limits and
    cross-instance emits return."""
    redis = RedisServer(tmp_path / "redis.log")
    env = app_env(database.url, redis.url)
    prefix = env["CACHE_KEY_PREFIX"]
    ports = free_port(), free_port()
    a, b = (
        Server(uvicorn(python, project, port), project, env, tmp_path / f"{name}.log", port)
        for name, port in zip("ab", ports, strict=True)
    )
    room = f"room-{uuid.uuid4().hex[:8]}"
    scenario_name = f"Redis outage ({FAULT_CLIENTS} clients, Redis down {FAULT_SECONDS:.0f} s)"
    times: dict[str, float] = {}

    def recover(client: EventProcess, item: int) -> dict[str, float]:
        """Seconds from Redis's restart until each Redis-backed feature works again."""
        recovered: dict[str, float] = {}
        attempt = 0
        signed_in = writer_headers(a)
        while len(recovered) < 3 and time.monotonic() - times["up"] < RECOVERY_DEADLINE:
            attempt += 1
            if "cache" not in recovered:
                assert httpx.get(f"{a.base}/items/{item}", timeout=10).status_code == 200
                if redis.client.keys(f"{prefix}items:*"):
                    recovered["cache"] = round(time.monotonic() - times["up"], 2)
            if "shared rate limits" not in recovered and limits_shared(a.base, b.base, attempt, signed_in):
                recovered["shared rate limits"] = round(time.monotonic() - times["up"], 2)
            if "cross-instance emits" not in recovered and emit_reaches(a.base, client, room, attempt):
                recovered["cross-instance emits"] = round(time.monotonic() - times["up"], 2)
            time.sleep(0.25)
        return recovered

    async def scenario(
        traffic: Traffic, client: EventProcess
    ) -> tuple[list[Sample], list[Sample], dict[str, float]]:
        await traffic.seed(10)
        stop = asyncio.Event()
        probes = asyncio.gather(probe(a.base, "/health/ready", stop), probe(a.base, "/health", stop))
        load = asyncio.create_task(traffic.run())
        await asyncio.sleep(BEFORE_FAULT)
        times["down"] = time.monotonic()
        await asyncio.to_thread(redis.stop)
        await asyncio.sleep(FAULT_SECONDS)
        await asyncio.to_thread(redis.start)
        times["up"] = time.monotonic()
        recovery = asyncio.create_task(asyncio.to_thread(recover, client, traffic.readable[0]))
        await asyncio.sleep(AFTER_FAULT)
        traffic.stop.set()
        await load
        recovered = await recovery
        stop.set()
        ready, live = await probes
        return ready, live, recovered

    client: EventProcess | None = None
    try:
        with stopped_at_exit(a, b):
            a.wait_healthy()
            b.wait_healthy()
            client = listener(python, b.base, room)
            assert emit_reaches(a.base, client, room, 0), "no cross-instance emit before the outage"

            traffic = Traffic(a.base, clients=FAULT_CLIENTS, network=30, writers=2, headers=writer_headers(a))
            ready, live, recovered = asyncio.run(scenario(traffic, client))
            codes = [server.terminate(serve_grace(project) + 10) for server in (a, b)]
    finally:
        if client is not None:
            client.stop()
        redis.stop()

    samples = traffic.samples
    during = [s for s in samples if times["down"] <= s.started and s.started + s.elapsed <= times["up"]]
    report_run(figures, scenario_name, samples)
    degraded = first_after(ready, times["down"], 200, '"degraded"')
    healthy = first_after(ready, times["up"], 200, '"status":"ok"')
    figures.add(scenario_name, "readiness degraded after Redis stopped (s)", degraded)
    figures.add(scenario_name, "readiness ok after Redis started (s)", healthy)
    for feature in ("cache", "shared rate limits", "cross-instance emits"):
        figures.add(scenario_name, f"{feature} back after Redis started (s)", recovered.get(feature))
    figures.add(
        scenario_name, "answers while Redis was down", dict(Counter(f"{s.op} {s.status}" for s in during))
    )

    # Nothing says 503: Redis is not required, so the instance stays in service.
    wrong = outside(samples, EXPECTED)
    assert not wrong, f"unexpected answers:\n{show(wrong)}"
    check_error_bodies(samples)
    for sample in [s for s in ready if '"degraded"' in s.body]:
        checks = json.loads(sample.body)["checks"]
        assert checks["redis"]["status"] == "error" and checks["database"]["status"] == "ok", sample.body
        assert sample.started + sample.elapsed >= times["down"], "degraded before the outage"
    assert [s.status for s in ready + live] == [200] * len(ready + live), "a probe failed during the outage"
    assert degraded is not None and degraded < 5, "readiness did not report degraded within 5 s"
    assert healthy is not None, "readiness did not report ok again"
    # Reads kept coming from the database; limits failed open: writes still went through.
    assert any(s.op == "read" and s.status == 200 for s in during)
    assert any(s.op == "create" and s.status == 201 for s in during)
    assert set(recovered) == {"cache", "shared rate limits", "cross-instance emits"}, recovered
    check_writes([traffic], database.rows())
    assert codes == [codes[0]] * 2 and codes[0] in (0, -signal.SIGTERM), codes
    assert "Redis unavailable" in check_log(a, database)
    check_log(b, database)


def test_database_outage_is_503_json_and_the_pool_recovers_alone(
    project: Path,
    python: Path,
    database: Database,
    services: dict[str, str],
    figures: Figures,
    tmp_path: Path,
) -> None:
    """PostgreSQL cut off under load (a proxy resets every connection and refuses new ones):
    routes that need it answer 503 JSON, the others 200; back again, the pool recovers and
    every acknowledged write is there."""
    scenario_name = f"Database outage ({FAULT_CLIENTS} clients, PostgreSQL cut {FAULT_SECONDS:.0f} s)"
    times: dict[str, float] = {}
    with TcpProxy(*urlsplit(database.url).netloc.rpartition("@")[2].split(":")) as proxy:
        port = free_port()
        env = app_env(database.via(proxy.port), services["REDIS_URL"])
        server = Server(uvicorn(python, project, port), project, env, tmp_path / "server.log", port)

        async def scenario(traffic: Traffic) -> tuple[list[Sample], list[Sample], list[Sample]]:
            await traffic.seed(10)
            stop = asyncio.Event()
            probes = asyncio.gather(
                probe(server.base, "/health/ready", stop),
                probe(server.base, "/health", stop),
                # The load's writers use up their route limit within seconds; this one never does.
                write_probe(server.base, stop, traffic.headers),
            )
            load = asyncio.create_task(traffic.run())
            await asyncio.sleep(BEFORE_FAULT)
            times["cut"] = time.monotonic()
            await asyncio.to_thread(proxy.cut)
            await asyncio.sleep(FAULT_SECONDS)
            await asyncio.to_thread(proxy.restore)
            times["back"] = time.monotonic()
            await asyncio.sleep(AFTER_FAULT)
            traffic.stop.set()
            stop.set()
            await load
            ready, live, writes = await probes
            return ready, live, writes

        with stopped_at_exit(server):
            server.wait_healthy()
            traffic = Traffic(
                server.base, clients=FAULT_CLIENTS, network=40, writers=2, headers=writer_headers(server)
            )
            ready, live, writes = asyncio.run(scenario(traffic))
            code = server.terminate(serve_grace(project) + 10)
        cut = proxy.of("cut")[0]["connections"]

    samples = traffic.samples
    unavailable = [s for s in samples if s.status == 503]
    after = [s for s in samples if s.started >= times["back"]]
    report_run(figures, scenario_name, samples)
    figures.add(scenario_name, "pooled connections reset by the cut", cut)
    figures.add(scenario_name, "503 Database unavailable answers", len(unavailable))
    figures.add(scenario_name, "readiness 503 after the cut (s)", first_after(ready, times["cut"], 503))
    figures.add(
        scenario_name,
        "readiness 200 after the database came back (s)",
        first_after(ready, times["back"], 200),
    )
    first_write = first_after(writes, times["back"], 201)
    figures.add(scenario_name, "first acknowledged write after it came back (s)", first_write)
    last_503 = max((s.started - times["back"] for s in unavailable), default=None)
    figures.add(scenario_name, "last 503 started after it came back (s)", last_503 and round(last_503, 2))

    # Only routes that need the database may say 503, with the JSON body and no trace of the error.
    wrong = outside(
        samples, {op: codes | ({503} if op in DATABASE_OPS else set()) for op, codes in EXPECTED.items()}
    )
    assert not wrong, f"unexpected answers:\n{show(wrong)}"
    check_error_bodies(samples)
    for sample in unavailable:
        if sample.op == "ready":
            assert json.loads(sample.body)["checks"]["database"]["status"] == "error", sample.body
        else:
            assert json.loads(sample.body) == UNAVAILABLE, sample.body
    assert unavailable, "no request noticed the outage"
    assert [s.status for s in live] == [200] * len(live), "liveness changed during the outage"
    assert first_after(ready, times["cut"] + 0.5, 503) is not None
    assert first_after(ready, times["back"], 200) is not None, "readiness did not come back"
    # Recovered by itself: within a few seconds nothing needs the outage any more.
    assert not [s for s in after if s.status == 503 and s.started > times["back"] + 5], "503s long after"
    assert first_write is not None, "no write succeeded after the database came back"
    check_writes([traffic], database.rows())
    assert code in (0, -signal.SIGTERM)
    log = check_log(server, database)
    assert "Traceback" not in log


@pytest.fixture(scope="module")
def worker_project(bakery: Any) -> Path:
    return bakery(use_worker=True)


def finished_jobs(worker: Server, task: str) -> int:
    return worker.text().count(f"Finished Job<function: {task}")


def test_redis_restarted_under_load_the_same_worker_takes_jobs_again(
    worker_project: Path, python: Path, database: Database, tmp_path: Path
) -> None:
    """Items created without pause while Redis stops and starts: every write is answered
    201 (a job that cannot be queued runs in the web process), and the worker process that
    ran before the restart runs the jobs queued after it, without being restarted."""
    redis = RedisServer(tmp_path / "redis.log")
    port, worker_port = free_port(), free_port()
    env = app_env(database.url, redis.url, WORKER_HEALTH_PORT=str(worker_port))
    web = Server(uvicorn(python, worker_project, port), worker_project, env, tmp_path / "web.log", port)
    worker = Server([python, "-m", "app.jobs"], worker_project, env, tmp_path / "worker.log", worker_port)

    async def scenario(headers: dict[str, str]) -> tuple[list[Sample], int]:
        stop = asyncio.Event()
        writers = asyncio.gather(*(write_probe(web.base, stop, headers, interval=0.05) for _ in range(4)))
        await asyncio.sleep(BEFORE_FAULT)
        await asyncio.to_thread(redis.stop)
        await asyncio.sleep(FAULT_SECONDS)
        await asyncio.to_thread(redis.start)
        back = finished_jobs(worker, "item_created")
        deadline = time.monotonic() + RECOVERY_DEADLINE
        while finished_jobs(worker, "item_created") <= back and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)
        stop.set()
        writes = [sample for samples in await writers for sample in samples]
        return writes, finished_jobs(worker, "item_created") - back

    try:
        with stopped_at_exit(web), stopped_at_exit(worker):
            web.wait_healthy()
            worker.wait_healthy()
            writes, after_restart = asyncio.run(scenario(writer_headers(web)))
            assert worker.process.poll() is None, worker.text()[-3000:]
            assert worker.terminate(20) == 0
    finally:
        redis.stop()

    assert writes
    assert {sample.status for sample in writes} == {201}, show(outside(writes, {"create": {201}}))
    assert after_restart > 0, worker.text()[-3000:]
    assert "Traceback" not in web.text(), web.text()[-3000:]
