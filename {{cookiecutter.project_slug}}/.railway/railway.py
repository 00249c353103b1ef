"""Railway Infrastructure as Code: the whole Railway environment of this service.

Preview with `railway config plan`, apply with `railway config apply`; the CLI
evaluates this file (it is not read at deploy time). It replaces railway.json /
railway.toml (Config as Code), which Railway stops reading on 2026-12-01.
Python authoring is in beta at Railway (TypeScript is generally available). See
the README, "Deploy to Railway".
"""

import re
import subprocess
from typing import Any

from railway_sdk import (
    Project,
    define_railway,
    github,
{% if cookiecutter.use_postgres %}
    postgres,
{% endif %}
    preserve,
    project,
{% if cookiecutter.use_redis %}
    redis,
{% endif %}
    service,
)

# Instances of the API. Railway has no sticky sessions: each request may reach
{% if cookiecutter.use_socketio %}
# any instance, so with more than one, Socket.IO runs on WebSockets only (set
# below) and clients must connect with `transports: ["websocket"]`.
{% else %}
# any instance, so state shared between requests must not live in the process.
{% endif %}
REPLICAS = 1
{% if cookiecutter.use_worker %}
# Instances of the background worker; a scheduled job still runs once, on one of them.
WORKER_REPLICAS = 1
{% endif %}
# The branch Railway deploys on every push, from this checkout's GitHub repository.
BRANCH = "main"


def github_repository() -> str:
    """`owner/name` of this checkout's `origin` remote on GitHub.

    The service's source is declared here, not only connected in the dashboard:
    `railway config apply` makes the service match this file, and would remove a
    source the file does not name.
    """
    # A fixed command, no input: nothing for a shell to interpret.
    url = subprocess.run(
        ["git", "config", "--get", "remote.origin.url"],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    found = re.fullmatch(
        r"(?:https://github\.com/|git@github\.com:|ssh://git@github\.com/)"
        r"([\w.-]+/[\w.-]+?)(?:\.git)?/?",
        url,
    )
    if found is None:
        raise SystemExit(
            "railway.py: Railway builds from GitHub, and this checkout's origin remote "
            f"({url or 'none'}) is not a GitHub repository: push it to one first"
        )
    return found.group(1)


@define_railway
def main(ctx: Any = None) -> Project:
{% if cookiecutter.use_postgres %}
    database = postgres("postgres")
{% endif %}
{% if cookiecutter.use_redis %}
    cache = redis("redis")
{% endif %}
    api = service(
        "api",
        source=github(github_repository(), branch=BRANCH),
        # Built from the Dockerfile; its CMD is the start command, scripts/serve.
        build={"builder": "DOCKERFILE", "dockerfilePath": "Dockerfile"},
        start="scripts/serve",
{% if cookiecutter.use_postgres %}
        # Once per deploy, before the new version takes traffic (no shell: a script).
        preDeploy="scripts/migrate",
{% endif %}
        # Gates each deploy: traffic moves once {{ "the database answers" if cookiecutter.use_postgres else "the app answers" }}.
        healthcheck="/health/ready",
        healthcheckTimeout=120,
        replicas=REPLICAS,
        deploy={
            "restartPolicyType": "ON_FAILURE",
            "restartPolicyMaxRetries": 10,
            # Seconds between SIGTERM and SIGKILL for a replaced deployment.
            "drainingSeconds": 30,
        },
        env={
            "ENVIRONMENT": "production",
            # Set once with `railway variables --set SECRET_KEY=...`; kept as it is.
            "SECRET_KEY": preserve(),
            # The service's public domain, and the host Railway's health checks use.
            "TRUSTED_HOSTS": "{{ '${{RAILWAY_PUBLIC_DOMAIN}}' }},healthcheck.railway.app",
            # Requests reach the app only through Railway's edge, which sets X-Real-IP
            # to the client's address (replacing one the client sent).
            "FORWARDED_ALLOW_IPS": "*",
            "CLIENT_IP_HEADER": "X-Real-IP",
{% if cookiecutter.use_postgres %}
            "DATABASE_URL": database.env.DATABASE_URL,
{% endif %}
{% if cookiecutter.use_redis %}
            "REDIS_URL": cache.env.REDIS_URL,
{% endif %}
{% if cookiecutter.use_socketio %}
            "SOCKETIO_TRANSPORTS": "websocket" if REPLICAS > 1 else "polling,websocket",
{% endif %}
        },
    )
{% if cookiecutter.use_worker %}
    # The same image as `api`, started as the worker. No domain: it serves nothing. No
    # health check: Railway's requests a path on the service's PORT only while a deploy
    # goes live, never afterwards, and the worker listens on no PORT.
    worker = service(
        "worker",
        source=github(github_repository(), branch=BRANCH),
        build={"builder": "DOCKERFILE", "dockerfilePath": "Dockerfile"},
        start="python -m app.jobs",
{% if cookiecutter.use_postgres %}
        # Its deploy is not ordered after api's: migrating here too keeps new jobs code
        # off an old schema (the migrations take a lock; the second run does nothing).
        preDeploy="scripts/migrate",
{% endif %}
        replicas=WORKER_REPLICAS,
        deploy={
            # It only stops when told to: whatever its exit status, it is started again.
            "restartPolicyType": "ALWAYS",
            # Running jobs get WORKER_SHUTDOWN_GRACE_SECONDS (8 s) after SIGTERM, then
            # go back to the queue.
            "drainingSeconds": 30,
        },
        env={
            "ENVIRONMENT": "production",
            # The one set on api.
            "SECRET_KEY": api.env.SECRET_KEY,
{% if cookiecutter.use_postgres %}
            "DATABASE_URL": database.env.DATABASE_URL,
{% endif %}
            "REDIS_URL": cache.env.REDIS_URL,
        },
    )
{% endif %}
    return project("{{ cookiecutter.project_slug }}", resources=[{{ "database, " if cookiecutter.use_postgres else "" }}{{ "cache, " if cookiecutter.use_redis else "" }}api{{ ", worker" if cookiecutter.use_worker else "" }}])
