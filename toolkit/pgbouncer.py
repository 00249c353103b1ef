"""A real PgBouncer in transaction mode in front of the test PostgreSQL: what Fly's
managed Postgres, Supabase, Neon and most pooled URLs put between a service and its
database. Debian's package; it refuses to run as root, so it runs as `postgres`."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from toolkit.processes import free_port

CONFIG = """\
[databases]
* = host={host} port={port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/users.txt
pool_mode = transaction
; Fewer server connections than the app's pool: client connections share them.
default_pool_size = 2
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
"""


def unavailable() -> str | None:
    if shutil.which("pgbouncer") is None and not Path("/usr/sbin/pgbouncer").exists():
        return "pgbouncer is not installed (it is in .ci/run's APT_PACKAGES)"
    return None


@contextlib.contextmanager
def transaction_pooler(database_url: str) -> Iterator[str]:
    """PgBouncer in transaction mode in front of `database_url`'s server; yields the same
    URL through the pooler."""
    parts = urlsplit(database_url)
    listen = free_port()
    # Readable by the postgres user, which pytest's private temporary directories are not.
    directory = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    directory.chmod(0o755)
    (directory / "users.txt").write_text(f'"{parts.username}" ""\n')
    config = directory / "pgbouncer.ini"
    config.write_text(
        CONFIG.format(host=parts.hostname, port=parts.port or 5432, listen=listen, directory=directory)
    )
    for path in directory.iterdir():
        path.chmod(0o644)
    shutil.chown(directory, "postgres")
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    process = subprocess.Popen(["runuser", "-u", "postgres", "--", binary, str(config)])
    try:
        deadline = time.monotonic() + 15
        while not _accepting(listen):
            if process.poll() is not None or time.monotonic() > deadline:
                log = directory / "pgbouncer.log"
                raise RuntimeError(f"pgbouncer did not start:\n{log.read_text() if log.exists() else ''}")
            time.sleep(0.1)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{listen}" if credentials else f"127.0.0.1:{listen}"
        yield parts._replace(netloc=netloc).geturl()
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


def _accepting(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False
