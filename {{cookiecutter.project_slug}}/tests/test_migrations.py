"""Migrations go up and down, match the models, and tolerate concurrent runners."""

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.models import Base
from tests.postgres import PROJECT_ROOT, create_database, drop_database, migrate


@pytest.fixture
def empty_database(tmp_path: Path) -> Iterator[str]:
    """An empty database: a scratch one on DATABASE_URL's server, else a SQLite file."""
    server_url = os.environ.get("DATABASE_URL")
    if not server_url:
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    url = asyncio.run(create_database(server_url, f"test_mig_{uuid.uuid4().hex[:12]}"))
    yield url
    asyncio.run(drop_database(server_url, url))


def inspect_database(url: str) -> tuple[set[str], list[object]]:
    """The tables present, and the differences between the schema and the models."""

    def read(connection: Connection) -> tuple[set[str], list[object]]:
        tables = set(inspect(connection).get_table_names())
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        return tables, diff

    async def run() -> tuple[set[str], list[object]]:
        engine = create_async_engine(url)
        async with engine.connect() as connection:
            result = await connection.run_sync(read)
        await engine.dispose()
        return result

    return asyncio.run(run())


def test_upgrade_matches_the_models_and_downgrade_empties(empty_database: str) -> None:
    migrate(empty_database, "head")
    tables, diff = inspect_database(empty_database)
    assert "items" in tables
    assert diff == []

    migrate(empty_database, "base")
    tables, _ = inspect_database(empty_database)
    assert tables <= {"alembic_version"}

    migrate(empty_database, "head")
    assert "items" in inspect_database(empty_database)[0]


def test_concurrent_upgrades_do_not_race(empty_database: str) -> None:
    if empty_database.startswith("sqlite"):
        pytest.skip("the advisory lock is PostgreSQL's; SQLite has one writer anyway")
    env = {**os.environ, "DATABASE_URL": empty_database}
    runners = [
        subprocess.Popen(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    outputs = [runner.communicate(timeout=60)[0].decode() for runner in runners]

    assert [runner.returncode for runner in runners] == [0, 0, 0], outputs
    assert inspect_database(empty_database)[1] == []


def test_the_app_does_not_import_alembic() -> None:
    code = "import sys, app.main; sys.exit('alembic' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=False)
    assert result.returncode == 0
