"""The default project as the benchmark serves it: baked, migrated, seeded, and cleaned up after."""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

from bench.config import BENCH, UNREFUSED_LIMIT
from bench.servers import Pinning, Server
from toolkit.bakery import DATABASE_URL, REDIS_URL, bake, superset_dependencies, venv_for
from toolkit.features import DEFAULT_PYTHON, ROOT
from toolkit.processes import clean_env, run
from toolkit.servers import drop_scratch_database, scratch_database

# Rows in the read database (and the peer's): the list reads the first page of them.
SEEDED = 100


@dataclass
class Project:
    """A baked default project (and one without Redis) on a scratch database, and its settings."""

    work: Path
    python: Path
    directory: Path
    without_redis: Path
    # The same two projects without metrics, for the cost of `use_metrics`.
    without_metrics: Path
    without_redis_or_metrics: Path
    env: dict[str, str]
    # A database of its own for the write rows, so that the rows they add do not
    # change what the list reads (its total counts every row).
    write_database: str
    item: int
    logs: Path
    pinning: Pinning
    run_id: str

    def server(
        self,
        name: str,
        target: str = "app.main:app",
        cwd: Path | None = None,
        pin: Pinning | None = None,
        interpreter: Path | None = None,
        **settings: str,
    ) -> Server:
        """A uvicorn process serving `target` (the app, or a ceiling from bench/) with these settings."""
        app_dir = ["--app-dir", str(BENCH)] if target.startswith(("ceilings:", "protected:")) else []
        return Server(
            name,
            target,
            interpreter or self.python,
            cwd or self.directory,
            self.env | settings,
            self.logs,
            pin or self.pinning,
            app_dir,
        )


@contextlib.contextmanager
def prepared(logs: Path, pinning: Pinning) -> Iterator[Project]:
    """Bake, migrate and seed; at the end drop the scratch databases and the run's Redis keys."""
    run_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{run_id}:"
    python = venv_for(DEFAULT_PYTHON, superset_dependencies()) / "bin" / "python"
    env = clean_env(
        ENVIRONMENT="production",
        SECRET_KEY=secrets.token_urlsafe(48),
        LOG_LEVEL="WARNING",
        REDIS_URL=REDIS_URL,
        CACHE_KEY_PREFIX=prefix,
        CORS_ORIGINS="https://app.example.com",
        TRUSTED_HOSTS="127.0.0.1,localhost",
        RATE_LIMIT_DEFAULT=UNREFUSED_LIMIT,
        # The cached rows measure hits: at 64 connections an expired entry is
        # read from the database by every request in flight at once.
        CACHE_TTL_SECONDS="3600",
        SOCKETIO_TRANSPORTS="websocket",
    )
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch, ThreadPoolExecutor(2) as pool:
        work = Path(scratch)
        directory = bake(work / "default")
        # The two databases are created and migrated while the variants bake.
        names = (f"bench_{run_id}", f"bench_{run_id}_writes")
        databases = [pool.submit(migrated_database, python, directory, env, name) for name in names]
        try:
            without_redis = bake(work / "no-redis", use_redis=False)
            without_metrics = bake(work / "no-metrics", use_metrics=False)
            without_redis_or_metrics = bake(work / "no-redis-no-metrics", use_redis=False, use_metrics=False)
            baked = (directory, without_redis, without_metrics, without_redis_or_metrics)
            run([python, "-m", "compileall", "-q", *baked], ROOT)
            database, write_database = (future.result() for future in databases)
            env["DATABASE_URL"] = database
            item = seed(python, database)
            yield Project(work, python, *baked, env, write_database, item, logs, pinning, run_id)
        finally:
            created = [future.result() for future in databases if future.exception() is None]
            list(pool.map(lambda url: drop_scratch_database(python, directory, DATABASE_URL, url), created))
            forget_redis_keys(prefix)


def migrated_database(python: Path, directory: Path, env: dict[str, str], name: str) -> str:
    """A scratch database named `name` with the project's migrations applied; returns its URL."""
    url = scratch_database(python, directory, DATABASE_URL, name)
    try:
        run([python, "-m", "alembic", "upgrade", "head"], directory, env | {"DATABASE_URL": url})
    except BaseException:
        drop_scratch_database(python, directory, DATABASE_URL, url)
        raise
    return url


def seed(python: Path, database: str) -> int:
    """SEEDED items for the reads and the list; returns the first one's id."""
    code = (
        "import asyncio, sys, asyncpg\n"
        "async def main():\n"
        "    connection = await asyncpg.connect(sys.argv[1])\n"
        "    rows = [(f'benchmark-read-{n}', 'read by the benchmark') for n in range(int(sys.argv[2]))]\n"
        "    await connection.executemany('INSERT INTO items (name, description) VALUES ($1, $2)', rows)\n"
        "    print(await connection.fetchval('SELECT min(id) FROM items'))\n"
        "    await connection.close()\n"
        "asyncio.run(main())\n"
    )
    return int(run([python, "-c", code, database.replace("+asyncpg", ""), str(SEEDED)], ROOT).stdout)


def forget_redis_keys(prefix: str) -> None:
    with Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
