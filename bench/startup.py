"""Cold start, idle memory, and the time to bake the default project."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench.config import Settings
from bench.project import Project
from bench.servers import Server
from toolkit.bakery import bake, runtime_dependencies, venv_for
from toolkit.features import DEFAULT_PYTHON, ROOT
from toolkit.processes import run


def measure_cold_start(make: Callable[[str], Server], runs: int) -> dict[str, float]:
    """Process start to the first 200 on /health, and RSS once idle, for fresh processes."""
    starts, cpu, rss = [], [], []
    for index in range(runs):
        server = make(f"cold-{index}")
        server.start()
        try:
            starts.append(server.wait_ready(poll=0.005))
            cpu.append(server.cpu_seconds())
            time.sleep(1.0)
            rss.append(server.rss_mb())
        finally:
            server.stop()
    return {
        "cold_start_s": statistics.median(starts),
        "cold_start_max_s": max(starts),
        "cold_start_cpu_s": statistics.median(cpu),
        "idle_rss_mb": statistics.median(rss),
    }


def measure_bake(work: Path, runs: int) -> dict[str, float]:
    """Baking the default project, in process (what the hooks and templates cost) and with the CLI."""
    in_process, cli, cli_cpu = [], [], []
    cookiecutter = Path(sys.executable).with_name("cookiecutter")
    for index in range(runs):
        started = time.perf_counter()
        bake(work / f"in-process-{index}")
        in_process.append(time.perf_counter() - started)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        run([cookiecutter, ROOT, "--no-input", "--output-dir", work / f"cli-{index}"], ROOT)
        cli.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cli_cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {
        "bake_in_process_s": statistics.median(in_process),
        "bake_cli_s": statistics.median(cli),
        "bake_cli_cpu_s": statistics.median(cli_cpu),
    }


def measure_startup(project: Project, settings: Settings) -> dict[str, float]:
    """Baking, then cold starts in a virtualenv with the project's runtime dependencies only."""
    # As deployed: the shared virtualenv also holds the test tools, and aiohttp, which
    # python-socketio then imports for its client, adds about 0.3 s.
    deployed = venv_for(DEFAULT_PYTHON, runtime_dependencies()) / "bin" / "python"
    baking = measure_bake(project.work / "bakes", settings.bakes)
    return baking | measure_cold_start(
        lambda name: project.server(name, interpreter=deployed), settings.cold_starts
    )
