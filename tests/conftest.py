"""Template test fixtures: real services, the shared virtualenv, cached bakes."""

from __future__ import annotations

import os
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from toolkit import docker as docker_engine
from toolkit import images
from toolkit.bakery import DATABASE_URL, REDIS_URL, bake, superset_dependencies, venv_for
from toolkit.deploy import fresh_database
from toolkit.features import DEFAULT_PYTHON
from toolkit.live import (
    MAX_BODY,
    Database,
    Server,
    app_env,
    check_log,
    serve_grace,
    stopped_at_exit,
    uvicorn,
    with_password,
)
from toolkit.processes import clean_env, free_port, run
from toolkit.report import REPORT_FILE, Figures
from toolkit.servers import drop_scratch_database, scratch_database

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
def app_images(docker: docker_engine.Docker, bakery: Bakery) -> images.AppImages:
    return images.AppImages(docker, bakery)


@pytest.fixture
def empty_database(venv: Path, services: dict[str, str], bakery: Bakery) -> Iterator[str]:
    """A fresh PostgreSQL database (its URL) that a deploy target's migrations run on,
    dropped afterwards."""
    with fresh_database(venv, bakery(), services) as url:
        yield url


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


# --- Live instances of the default project (the reliability and security tests) ---


@pytest.fixture(scope="module")
def project(bakery: Bakery) -> Path:
    """The default project, every feature on."""
    return bakery()


@pytest.fixture(scope="module")
def python(venv: Path) -> Path:
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def database(project: Path, python: Path, services: dict[str, str]) -> Iterator[Database]:
    """A scratch database, migrated, with a password in its URL that no output may show."""
    server, password = with_password(services["DATABASE_URL"])
    url = scratch_database(python, project, server, f"rel_{uuid.uuid4().hex[:12]}")
    migrated = run([python, "-m", "alembic", "upgrade", "head"], project, clean_env(DATABASE_URL=url))
    assert password not in migrated.stdout + migrated.stderr
    yield Database(url, server, password, python)
    drop_scratch_database(python, project, server, url)


@pytest.fixture(scope="module")
def production(
    project: Path,
    python: Path,
    database: Database,
    services: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    """One production instance for the bad-input and header checks: docs on (for the
    OpenAPI document), rate limits off (so every request reaches validation), a small body limit."""
    port = free_port()
    env = app_env(
        database.url,
        services["REDIS_URL"],
        DOCS_ENABLED="true",
        RATE_LIMIT_ENABLED="false",
        MAX_BODY_BYTES=str(MAX_BODY),
        TRUSTED_HOSTS="127.0.0.1,api.example.com",
    )
    server = Server(
        uvicorn(python, project, port),
        project,
        env,
        tmp_path_factory.mktemp("production") / "server.log",
        port,
    )
    with stopped_at_exit(server):
        server.wait_healthy()
        yield server
        assert server.terminate(serve_grace(project) + 10) in (0, -signal.SIGTERM)
    check_log(server, database)
