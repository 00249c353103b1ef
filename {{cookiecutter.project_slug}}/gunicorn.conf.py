"""gunicorn settings for a VM: `gunicorn --config gunicorn.conf.py app.main:app`.

Process-level environment: PORT (default 8000) and WEB_CONCURRENCY (worker
processes); the service reads everything else itself (app/settings.py).
"""

import os

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
