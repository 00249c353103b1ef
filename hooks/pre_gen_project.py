"""Validate the answers before anything is written; stop with a one-line reason.

Standard library only: no network, no git, no randomness (cruft replays this hook).
"""

import json
import re
import sys
from typing import Any

SLUG = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
SLUG_MAX = 40
EMAIL = re.compile(r"^[^@\s\"\\]+@[^@\s\"\\]+\.[^@\s\"\\]+$")
PLAIN_TEXT_FIELDS = ("project_name", "description", "author_name")
# Targets that run several instances by default; Socket.IO needs Redis there.
MULTI_INSTANCE_TARGETS = ("kubernetes", "cloud-run")


def problems(answers: dict[str, Any]) -> list[str]:
    """Every reason the answers cannot generate a working project, most basic first."""
    found = []
    for field in PLAIN_TEXT_FIELDS:
        value = answers[field]
        if not value.strip():
            found.append(f"{field} must not be empty")
        elif any(char in value for char in '"\\\n'):
            found.append(f"{field} must not contain double quotes, backslashes or newlines")
    slug = answers["project_slug"]
    if not SLUG.match(slug):
        found.append(
            f"project_slug {slug!r} must be lowercase letters and digits in words joined by "
            "single hyphens, starting with a letter (it names the directory and the distribution)"
        )
    elif len(slug) > SLUG_MAX:
        found.append(f"project_slug {slug!r} is longer than {SLUG_MAX} characters")
    if not EMAIL.match(answers["author_email"]):
        found.append(f"author_email {answers['author_email']!r} is not an email address")
    if (
        answers["deploy_target"] in MULTI_INSTANCE_TARGETS
        and answers["use_socketio"]
        and not answers["use_redis"]
    ):
        found.append(
            f"use_socketio needs use_redis on {answers['deploy_target']}, which runs several "
            "instances: without Redis an emit reaches only the clients of one instance"
        )
    if answers["use_auth"] and not answers["use_postgres"]:
        found.append("use_auth needs use_postgres: users and refresh tokens are stored in the database")
    if answers["use_worker"] and not answers["use_redis"]:
        found.append("use_worker needs use_redis: the jobs' queue is kept in Redis")
    return found


def answers() -> dict[str, Any]:
    context: dict[str, Any] = json.loads({{ cookiecutter | jsonify | tojson }})
    return context


def main() -> int:
    found = problems(answers())
    if found:
        print(f"ERROR: {found[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
