"""`DB_PGBOUNCER=true` behind a real PgBouncer in transaction mode, as Fly's managed
Postgres and most pooled database URLs put one in front: every request answers, where
without the setting asyncpg's prepared statements collide on shared server connections."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from toolkit import pgbouncer
from toolkit.auth import writer_headers
from toolkit.deploy import fresh_database
from toolkit.live import Server, app_env, stopped_at_exit, uvicorn
from toolkit.processes import clean_env, free_port, run

pytestmark = pytest.mark.xdist_group("server")

CLIENTS = 20
REQUESTS = 20  # per client


async def statuses(base: str, signed_in: dict[str, str], tag: str) -> Counter[int | str]:
    """Reads and writes from CLIENTS concurrent connections."""

    async def client(number: int) -> list[int | str]:
        answers: list[int | str] = []
        async with httpx.AsyncClient(base_url=base, timeout=15, headers=signed_in) as session:
            for n in range(REQUESTS):
                try:
                    if n % 4 == 0:
                        response = await session.post("/items", json={"name": f"{tag}-{number}-{n}"})
                    else:
                        response = await session.get("/items", params={"limit": 5, "offset": n})
                    answers.append(response.status_code)
                except httpx.HTTPError as error:
                    answers.append(type(error).__name__)
        return answers

    results = await asyncio.gather(*(client(number) for number in range(CLIENTS)))
    return Counter(answer for answers in results for answer in answers)


def test_the_pgbouncer_setting_is_what_makes_a_transaction_pooler_work(
    bakery: object, venv: Path, services: dict[str, str], tmp_path: Path
) -> None:
    reason = pgbouncer.unavailable()
    if reason:
        pytest.fail(reason)
    project = bakery()  # type: ignore[operator]
    python = venv / "bin" / "python"
    answers: dict[str, Counter[int | str]] = {}
    with fresh_database(venv, project, services) as database:
        run([python, "-m", "alembic", "upgrade", "head"], project, clean_env(DATABASE_URL=database))
        with pgbouncer.transaction_pooler(database) as pooled:
            for setting in ("false", "true"):
                port = free_port()
                env = app_env(pooled, services["REDIS_URL"], RATE_LIMIT_ENABLED="false", DB_PGBOUNCER=setting)
                server = Server(
                    uvicorn(python, project, port), project, env, tmp_path / f"{setting}.log", port
                )
                with stopped_at_exit(server):
                    server.wait_healthy()
                    answers[setting] = asyncio.run(statuses(server.base, writer_headers(server), setting))

    ok = {200, 201}
    assert set(answers["true"]) <= ok, answers["true"]
    # Without it the same traffic fails: the setting is the fix, not luck.
    assert set(answers["false"]) - ok, answers["false"]
