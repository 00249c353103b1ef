"""gunicorn settings for a VM: `gunicorn --config gunicorn.conf.py app.main:app`.

Process-level environment: PORT (default 8000) and WEB_CONCURRENCY (worker
processes); the service reads everything else itself (app/settings.py).
"""

import os
{% if cookiecutter.use_metrics %}
import shutil
import tempfile
from pathlib import Path
from typing import Any
{% endif %}

# Loopback only: nginx on this machine is the one way in, whatever the firewall says.
bind = [f"127.0.0.1:{os.environ.get('PORT', '8000')}"]
{% if cookiecutter.use_socketio %}
# One worker: Socket.IO long-polling needs every request of a session in the same
# process. Serve more clients with more processes behind nginx (see the README).
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
{% else %}
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 1)
{% endif %}
worker_class = "uvicorn_worker.UvicornWorker"
# The app reads nginx's forwarding headers itself (FORWARDED_ALLOW_IPS, app/proxy.py);
# the worker's own proxy-headers pass, which would read them first, trusts no one.
forwarded_allow_ips = ""
proc_name = "{{ cookiecutter.project_slug }}"

# A worker silent for this long is killed and replaced.
timeout = 60
# On SIGTERM or SIGHUP, workers finish their requests within this many seconds.
graceful_timeout = 30
# Longer than nginx keeps an idle upstream connection, so nginx closes it first.
keepalive = 75

# gunicorn's own messages to stderr; the service's log lines, one per request among
# them, go to stdout in its own format (app/log.py).
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
{% if cookiecutter.use_metrics %}


# Prometheus: each worker writes its metrics to files in PROMETHEUS_MULTIPROC_DIR and
# /metrics adds up every worker's, so any worker answers for the whole process group.
# The directory made here when none was given, removed on the way out.
made_directories: list[str] = []


def on_starting(_server: Any) -> None:
    """Before the first worker starts: a fresh, empty directory (stale files from a
    previous run would be added to this one's figures)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        for stale in Path(directory).glob("*.db"):
            stale.unlink()
    else:
        directory = tempfile.mkdtemp(prefix=f"{proc_name}-metrics-")
        made_directories.append(directory)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def child_exit(_server: Any, worker: Any) -> None:
    """A worker is gone: drop its live gauges (its counters still count)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(_server: Any) -> None:
    for directory in made_directories:
        shutil.rmtree(directory, ignore_errors=True)
{% endif %}
