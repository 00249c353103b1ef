"""Remove what the answers did not select, from one declarative manifest.

Every path in the manifest must exist in the freshly rendered tree, whatever
the answers: a path that matches nothing means the manifest drifted from the
template, and generation fails. Standard library only: no network, no git, no
randomness (cruft replays this hook on every update).
"""

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

# Feature switch -> paths that exist only when the switch is on. A path listed
# under several switches stays while any of them is on.
FEATURE_PATHS: dict[str, list[str]] = {
    "use_postgres": [
        "alembic.ini",
        "app/db.py",
        "app/items",
        "app/models.py",
        "migrations",
        "tests/postgres.py",
        "tests/test_db.py",
        "tests/test_items.py",
        "tests/test_migrations.py",
        "deploy/cloud-run/migrate-job.yaml",
        "deploy/helm/{{cookiecutter.project_slug}}/templates/migrate-job.yaml",
        "deploy/helm/{{cookiecutter.project_slug}}/templates/backup-cronjob.yaml",
        "deploy/vm/systemd/{{cookiecutter.project_slug}}-migrate.service",
        "deploy/vm/systemd/{{cookiecutter.project_slug}}-backup.service",
        "deploy/vm/systemd/{{cookiecutter.project_slug}}-backup.timer",
        "deploy/vm/backup",
        "deploy/vm/restore",
        "scripts/migrate",
        "deploy/compose/backup",
        "deploy/compose/restore",
    ],
    "use_redis": [
        "app/cache.py",
        "app/redis_client.py",
        "tests/test_cache.py",
        "tests/test_redis_client.py",
    ],
    "use_socketio": [
        "app/realtime",
        "app/security.py",
        "tests/live.py",
        "tests/test_realtime.py",
        "tests/test_security.py",
    ],
    "use_rate_limit": [
        "app/ratelimit",
        "tests/live.py",
        "tests/test_ratelimit.py",
    ],
    "use_sentry": [
        "app/sentry.py",
        "tests/test_sentry.py",
    ],
    "use_metrics": [
        "app/metrics",
        # The gunicorn test finds a free port and waits for the server with it.
        "tests/live.py",
        "tests/test_metrics.py",
        "app/tracing",
        "tests/test_tracing.py",
        "deploy/helm/{{cookiecutter.project_slug}}/templates/servicemonitor.yaml",
    ],
    "use_auth": [
        "app/auth",
        "migrations/versions/0002_create_auth.py",
        "tests/auth.py",
        "tests/test_auth.py",
        "tests/test_auth_cli.py",
    ],
    "use_worker": [
        "app/jobs",
        "tests/jobs_worker.py",
        "tests/live.py",
        "tests/test_jobs.py",
        "deploy/cloud-run/worker-pool.yaml",
        "deploy/helm/{{cookiecutter.project_slug}}/templates/worker.yaml",
        "deploy/helm/{{cookiecutter.project_slug}}/templates/scheduler.yaml",
        "deploy/vm/systemd/{{cookiecutter.project_slug}}-worker.service",
        "deploy/vm/systemd/{{cookiecutter.project_slug}}-scheduler.service",
    ],
}

# Feature switch -> paths that a feature replaces: they exist only when it is off.
REPLACED_PATHS: dict[str, list[str]] = {
    # Socket.IO and the realtime bridge take the API's access tokens instead.
    "use_auth": ["app/security.py", "tests/test_security.py"],
}

# Deploy target -> paths that exist only for that target. Every target but the VM
# runs the image; CI checks it with the two deploy/ scripts.
IMAGE = ["Dockerfile", "deploy/check-image", "deploy/image-requirements"]
TARGET_PATHS: dict[str, list[str]] = {
    "docker-compose": [*IMAGE, "compose.prod.yaml", "Caddyfile", "deploy/compose"],
    "railway": [*IMAGE, ".railway"],
    "cloud-run": [*IMAGE, "deploy/cloud-run"],
    "kubernetes": [*IMAGE, "deploy/helm"],
    "vm": ["deploy/vm", "gunicorn.conf.py"],
    "fly": [*IMAGE, "fly.toml"],
    "render": [*IMAGE, "render.yaml"],
}


def unselected(answers: dict[str, Any]) -> list[str]:
    """The manifest paths to delete for these answers."""
    kept = {path for feature, group in FEATURE_PATHS.items() if answers[feature] for path in group}
    paths = [
        path
        for feature, group in FEATURE_PATHS.items()
        if not answers[feature]
        for path in group
        if path not in kept
    ]
    paths += [path for feature, group in REPLACED_PATHS.items() if answers[feature] for path in group]
    paths += [
        path
        for target, group in TARGET_PATHS.items()
        if target != answers["deploy_target"]
        for path in group
        if path not in TARGET_PATHS[answers["deploy_target"]]
    ]
    return paths


def missing(root: Path) -> list[str]:
    groups = (*FEATURE_PATHS.values(), *REPLACED_PATHS.values(), *TARGET_PATHS.values())
    every = [path for group in groups for path in group]
    return sorted({path for path in every if not (root / path).exists()})


def remove(root: Path, paths: list[str]) -> None:
    for path in paths:
        target = root / path
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    # Bottom-up, so a directory emptied by its children's removal goes too.
    for directory in sorted((Path(entry[0]) for entry in os.walk(root)), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()


def answers() -> dict[str, Any]:
    context: dict[str, Any] = json.loads({{ cookiecutter | jsonify | tojson }})
    return context


def main() -> int:
    root = Path.cwd()
    drifted = missing(root)
    if drifted:
        print(f"ERROR: template manifest lists paths that were not rendered: {drifted}", file=sys.stderr)
        return 1
    remove(root, unselected(answers()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
