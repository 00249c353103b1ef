"""Background jobs: enqueue-to-start latency and jobs per second, the generated worker
next to SAQ used bare, on the same Redis, in alternating rounds."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from bench.config import BENCH, Settings
from bench.project import Project
from toolkit.bakery import bake
from toolkit.processes import free_port, run
from toolkit.servers import wait_until_serving

KINDS = ("app", "bare")


def measure_jobs(project: Project, settings: Settings) -> dict[str, Any]:
    directory = bake(project.work / "worker", use_worker=True)
    rounds: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    # Workers told to stop: the generated one stops once its wait on the queue
    # returns (up to five seconds), and the next round need not wait for that.
    stopping: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(settings.rounds):
            for kind in KINDS if index % 2 == 0 else reversed(KINDS):
                rounds[kind].append(one_round(project, directory, kind, settings, stopping))
    finally:
        # Their graceful stop measures nothing, and the run need not wait it out.
        for worker in stopping:
            worker.kill()
            worker.wait()
    return {
        "spaced": settings.job_spaced,
        "burst": settings.job_burst,
        **{
            kind: {key: statistics.median(row[key] for row in rows) for key in rows[0]}
            for kind, rows in rounds.items()
        },
    }


def one_round(
    project: Project,
    directory: Path,
    kind: str,
    settings: Settings,
    stopping: list[subprocess.Popen[bytes]],
) -> dict[str, float]:
    """Start a worker of `kind` on a queue of its own, drive it, tell it to stop
    (adding it to `stopping`)."""
    port = free_port()
    prefix = f"{project.env['CACHE_KEY_PREFIX']}{uuid.uuid4().hex[:6]}:"
    env = project.env | {"CACHE_KEY_PREFIX": prefix, "WORKER_HEALTH_PORT": str(port)}
    log = (project.logs / f"worker-{kind}.log").open("ab")
    worker = subprocess.Popen(
        [project.python, BENCH / "job_worker.py", kind], cwd=directory, env=env, stdout=log, stderr=log
    )
    try:
        if kind == "app":
            wait_until_serving(f"http://127.0.0.1:{port}/health", worker, 60)
        else:
            time.sleep(1.0)  # Bare SAQ has no health check: give it its start.
        driver = [project.python, BENCH / "job_driver.py", f"{prefix}jobs"]
        driven = run([*driver, str(settings.job_spaced), str(settings.job_burst)], directory, env)
        return json.loads(driven.stdout)  # type: ignore[no-any-return]
    finally:
        worker.terminate()
        stopping.append(worker)
        log.close()
