"""Rows a write route has committed, counted in its database while the benchmark drives it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

# Reads a table name per line and answers its row count: one connection for the run.
COUNTER = (
    "import asyncio, sys, asyncpg\n"
    "async def main():\n"
    "    connection = await asyncpg.connect(sys.argv[1])\n"
    "    for table in sys.stdin:\n"
    "        print(await connection.fetchval(f'SELECT count(*) FROM {table.strip()}'), flush=True)\n"
    "asyncio.run(main())\n"
)
# How often the count is read once the load has ended, in seconds.
POLL = 0.05


class CommittedRows:
    """The row count of one table, read by a helper process with the project's asyncpg."""

    def __init__(self, python: Path, database: str, table: str) -> None:
        self.table = table
        self.process = subprocess.Popen(
            [str(python), "-c", COUNTER, database.replace("+asyncpg", "")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def count(self) -> int:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(self.table + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the row counter of {self.table} exited {self.process.wait()}")
        return int(answer)

    def rate_since(self, before: int, started: float, timeout: float = 30.0) -> float:
        """Rows committed a second from `started` (a `time.perf_counter()`) to the last commit.

        Read once the load has ended: a server that commits after responding goes on
        committing, and its rate counts the time that takes.
        """
        last, last_seen = self.count(), time.perf_counter()
        deadline = last_seen + timeout
        while time.perf_counter() < deadline:
            time.sleep(POLL)
            now = self.count()
            if now == last:
                break
            last, last_seen = now, time.perf_counter()
        return (last - before) / (last_seen - started)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=10)
