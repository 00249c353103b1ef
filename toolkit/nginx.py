"""nginx from Debian's packages, running a generated site file the way a VM runs it."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from toolkit.processes import run

TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def wrapper(site: Path, prefix: Path, *, foreground: bool = False) -> Path:
    """An nginx.conf that includes `site` in its http block, as sites-enabled is."""
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    main = [f"pid {prefix}/nginx.pid;", f"error_log {prefix}/error.log;"]
    if foreground:
        main += ["daemon off;", "worker_processes 1;"]
        if os.geteuid() == 0:
            # Workers would otherwise switch to a user that cannot read the test's directories.
            main.append("user root;")
    temp_paths = [f"    {kind}_temp_path {prefix}/{kind};" for kind in TEMP_KINDS]
    http = ["http {", f"    access_log {prefix}/access.log;", *temp_paths, f"    include {site};", "}"]
    conf.write_text("\n".join([*main, "events {}", *http]) + "\n")
    return conf


def check(site: Path, prefix: Path, *, must_pass: bool = True) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on the site."""
    conf = wrapper(site, prefix)
    return run(
        ["nginx", "-t", "-q", "-p", prefix, "-e", prefix / "error.log", "-c", conf], prefix, check=must_pass
    )


def on_loopback(site_text: str, port: int, upstreams: dict[int, int]) -> str:
    """A VM site listening on 127.0.0.1:`port`, its upstream ports mapped by `upstreams`."""
    text = re.sub(r"listen \[::\]:80;\n\s*", "", site_text)
    text = text.replace("listen 80;", f"listen 127.0.0.1:{port};")
    for old, new in upstreams.items():
        text = re.sub(rf"server 127\.0\.0\.1:{old}\b", f"server 127.0.0.1:{new}", text)
    return text


@contextlib.contextmanager
def serving(site: Path, prefix: Path, port: int, timeout: float = 10) -> Iterator[Path]:
    """nginx in the foreground with `site`, until the block ends; yields its error log."""
    conf = wrapper(site, prefix, foreground=True)
    process = subprocess.Popen(
        ["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"nginx did not start:\n{(prefix / 'error.log').read_text()[-3000:]}")
            time.sleep(0.05)
        yield prefix / "error.log"
    finally:
        process.terminate()
        process.wait(timeout=20)
