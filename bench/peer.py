"""The nearest peer template's project, baked with its own CLI, for the same data paths side by side.

The peer is s3rius/FastAPI-template (the `fastapi_template` package on PyPI): REST,
PostgreSQL through SQLAlchemy with Alembic, Redis, and its example model, as a new
user comparing templates would generate it. Its CLI installs the project's own
dependencies with `uv sync`, as its README says; the benchmark then migrates it on
a scratch database of its own, seeds as many rows as the generated project's, and
serves it with the same uvicorn options. Nothing of it is committed here: it is
fetched from PyPI on the first run (the CLI's virtualenv is cached, keyed by the
pinned version) and baked into the run's scratch directory.

Its routes for the three paths: `GET /api/dummy/?limit=10` (a page, no total),
`GET /api/redis/?key=...` (one value from Redis) and `PUT /api/dummy/` (a new row,
committed by its session dependency).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from redis import Redis

from bench.project import SEEDED, Project
from bench.servers import Server
from toolkit.bakery import DATABASE_URL, REDIS_URL, find_python, uv, venv_for
from toolkit.features import DEFAULT_PYTHON, ROOT
from toolkit.processes import clean_env, run
from toolkit.servers import scratch

TEMPLATE = "fastapi_template==6.1.2"
NAME = "peer"
# Its CLI's switches for the project the README compares: everything else off.
ANSWERS = (
    "--api-type=rest",
    "--db=postgresql",
    "--orm=sqlalchemy",
    "--ci=none",
    "--redis",
    "--migrations",
    "--dummy",
    "--routers",
    "--quiet",
)
HEALTH = "/api/health"


@dataclass
class Peer:
    directory: Path
    python: Path
    env: dict[str, str]
    # Its database's URL (its settings take it in parts).
    database: str
    # The Redis key its GET /api/redis/ reads: the generated project's cached item, as stored.
    cache_key: str

    def copy_cached_item(self, project: Project) -> None:
        """Give the peer's key the generated project's cached item (call once the app has cached it)."""
        source = f"{project.env['CACHE_KEY_PREFIX']}items:{project.item}"
        with Redis.from_url(REDIS_URL) as client:
            if not client.copy(source, self.cache_key, replace=True):
                raise RuntimeError(f"{source} is not cached: the peer would read nothing")
            client.persist(self.cache_key)

    def server(self, project: Project, name: str) -> Server:
        return Server(
            name,
            f"{NAME}.web.application:get_app",
            self.python,
            self.directory,
            self.env,
            project.logs,
            project.pinning,
            ["--factory"],
            health=HEALTH,
        )


@contextlib.contextmanager
def prepared(project: Project) -> Iterator[Peer]:
    """Bake the peer's project, migrate and seed it; drop its database at the end."""
    python = bake_peer(project.work)
    with scratch(project.python, project.directory, DATABASE_URL, f"bench_{project.run_id}_peer") as database:
        env = clean_env(LOG_LEVEL="WARNING", **settings_for(database))
        run([python, "-m", "alembic", "upgrade", "head"], project.work / NAME, env)
        seed = (
            "import asyncio, sys, asyncpg\n"
            "async def main():\n"
            "    connection = await asyncpg.connect(sys.argv[1])\n"
            "    await connection.executemany('INSERT INTO dummy_model (name) VALUES ($1)',\n"
            f"        [(f'benchmark-read-{{n}}',) for n in range({SEEDED})])\n"
            "    await connection.close()\n"
            "asyncio.run(main())\n"
        )
        run([python, "-c", seed, database.replace("+asyncpg", "")], ROOT)
        yield Peer(project.work / NAME, python, env, database, f"{project.env['CACHE_KEY_PREFIX']}peer-item")


def bake_peer(work: Path) -> Path:
    """Run the peer's CLI in `work`; returns the interpreter of the project's own virtualenv."""
    cli = venv_for(DEFAULT_PYTHON, [TEMPLATE]) / "bin" / "fastapi_template"
    tools = os.pathsep.join([str(Path(uv()).parent), os.environ.get("PATH", "")])
    env = clean_env(PATH=tools, UV_PYTHON=find_python(DEFAULT_PYTHON), UV_PYTHON_DOWNLOADS="never")
    run([cli, "--name", NAME, *ANSWERS], work, env, timeout=900)
    python = work / NAME / ".venv" / "bin" / "python"
    if not python.exists():
        raise RuntimeError(f"the peer's CLI did not install its dependencies into {python.parent.parent}")
    return python


def settings_for(database: str) -> dict[str, str]:
    """The peer's settings (variables prefixed PEER_) for this database and the benchmark's Redis."""
    db, redis = urlsplit(database), urlsplit(REDIS_URL)
    found = {
        "PEER_DB_HOST": db.hostname or "127.0.0.1",
        "PEER_DB_PORT": str(db.port or 5432),
        "PEER_DB_USER": db.username or "postgres",
        "PEER_DB_PASS": db.password or "",
        "PEER_DB_BASE": db.path.lstrip("/"),
        "PEER_REDIS_HOST": redis.hostname or "127.0.0.1",
        "PEER_REDIS_PORT": str(redis.port or 6379),
    }
    if redis.path.strip("/"):
        found["PEER_REDIS_BASE"] = redis.path.strip("/")
    return found
