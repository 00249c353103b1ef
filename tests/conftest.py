"""Template test fixtures: real services, the shared virtualenv, cached bakes."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.bakery import DATABASE_URL, DEFAULT_PYTHON, REDIS_URL, bake, superset_dependencies, venv_for
from tests.report import REPORT_FILE, Figures
from toolkit import docker as docker_engine

# Reliability reports: this process's, or those the xdist workers sent back.
_REPORTS: list[str] = []


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def services() -> dict[str, str]:
    """PostgreSQL and Redis URLs for the generated tests. In CI they must be up."""
    down = [
        name
        for name, url, port in (("PostgreSQL", DATABASE_URL, 5432), ("Redis", REDIS_URL, 6379))
        if not _reachable(url, port)
    ]
    if down:
        message = f"{' and '.join(down)} not reachable ({DATABASE_URL}, {REDIS_URL})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return {"DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL}


@pytest.fixture(scope="session")
def docker() -> Iterator[docker_engine.Docker]:
    """The tests' own Docker daemon, started if it is not running. In CI it must run."""
    reason = docker_engine.unavailable()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the container tests cannot run: {reason}")
        pytest.skip(reason)
    with docker_engine.session() as client:
        yield client


@pytest.fixture(scope="session")
def venv() -> Path:
    """The shared virtualenv for the default Python version."""
    return venv_for(DEFAULT_PYTHON, superset_dependencies())


class Bakery:
    """Bakes each distinct set of answers once per test process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.baked: dict[str, Path] = {}

    def __call__(self, **answers: Any) -> Path:
        key = ",".join(f"{name}={value}" for name, value in sorted(answers.items())) or "default"
        if key not in self.baked:
            self.baked[key] = bake(self.root / f"bake-{len(self.baked)}", **answers)
        return self.baked[key]


@pytest.fixture(scope="session")
def bakery(tmp_path_factory: pytest.TempPathFactory) -> Bakery:
    return Bakery(tmp_path_factory.mktemp("bakes"))


@pytest.fixture(scope="session")
def figures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Figures]:
    """Figures measured by the reliability tests; written under basetemp and printed at the end."""
    collected = Figures()
    yield collected
    if collected.rows:
        path = tmp_path_factory.getbasetemp() / REPORT_FILE
        path.write_text(collected.markdown())
        _REPORTS.append(f"{collected.markdown()}\n(written to {path})")


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["reliability_reports"] = list(_REPORTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    _REPORTS.extend(getattr(node, "workeroutput", {}).get("reliability_reports", []))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for report in _REPORTS:
        terminalreporter.section("reliability report")
        terminalreporter.write(report + "\n")
