"""The feature switches, read from cookiecutter.json: one list for the hooks, the
tests and the benchmark. A switch is any yes/no question there.

Which combinations are valid is the pre-generation hook's own rule (`problems`),
loaded from the hook itself so there is one copy of it.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONTEXT: dict[str, Any] = json.loads((ROOT / "cookiecutter.json").read_text())
FEATURES: tuple[str, ...] = tuple(name for name, value in CONTEXT.items() if isinstance(value, bool))
PYTHONS: tuple[str, ...] = tuple(CONTEXT["python_version"])
TARGETS: tuple[str, ...] = tuple(CONTEXT["deploy_target"])
DEFAULT_PYTHON = PYTHONS[0]
DEFAULT_TARGET = TARGETS[0]
# What `--no-input` bakes: every switch on but the worker.
DEFAULTS: dict[str, bool] = {name: CONTEXT[name] for name in FEATURES}
ALL_ON: dict[str, bool] = dict.fromkeys(FEATURES, True)
ALL_OFF: dict[str, bool] = dict.fromkeys(FEATURES, False)

# Words that only a feature's code, docs and deploy files may contain: none may
# be left in a project generated without it.
FEATURE_WORDS: dict[str, list[str]] = {
    "use_postgres": [
        "sqlalchemy",
        "alembic",
        "asyncpg",
        "database_url",
        "postgres",
        "sqlite",
        "migrat",
        "cloudsql",
        "cloud sql",
    ],
    "use_redis": ["redis", "memorystore"],
    "use_socketio": ["socketio", "socket.io", "app.realtime", "realtime/", "/realtime"],
    "use_rate_limit": ["slowapi", "rate_limit", "ratelimit", "rate limit", "rate-limit"],
    "use_sentry": ["sentry"],
    "use_metrics": [
        "prometheus",
        "metrics_token",
        "/metrics",
        "app.metrics",
        "from opentelemetry",
        "opentelemetry-",
        "otel_",
        "otlp",
        "trace_id",
        "app.tracing",
    ],
    "use_auth": [
        "pwdlib",
        "pyjwt",
        "app.auth",
        "/auth/",
        "create-admin",
        "refresh_token",
        "api_key",
        "argon2",
    ],
    "use_worker": ["saq", "app.jobs", "jobsdep", "worker_concurrency", "jobs_cleanup_cron"],
}
# Cloud Run's, Kubernetes' and the VM's deploy files and docs mention WebSockets only for
# Socket.IO; the app, Caddy and Fly's files mention them for any ASGI WebSocket.
PLATFORM_WORDS: dict[str, list[str]] = FEATURE_WORDS | {
    "use_socketio": [*FEATURE_WORDS["use_socketio"], "websocket"]
}


def _load_pre_gen_hook() -> Any:
    """The pre-generation hook as a module. Unrendered, its one template expression
    sits inside `answers()`, which is never called here."""
    spec = importlib.util.spec_from_file_location("pre_gen_project", ROOT / "hooks" / "pre_gen_project.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_PRE_GEN = _load_pre_gen_hook()


def answers_for(**changes: Any) -> dict[str, Any]:
    """Every answer the template would take, the defaults changed by `changes`."""
    answers = {name: value[0] if isinstance(value, list) else value for name, value in CONTEXT.items()}
    answers = {name: value for name, value in answers.items() if not name.startswith("_")}
    answers["project_slug"] = "my-service"
    return answers | changes


def refusal(**changes: Any) -> str | None:
    """Why the hook would refuse these answers, or None when it generates them."""
    found: list[str] = _PRE_GEN.problems(answers_for(**changes))
    return found[0] if found else None


def every_combination(target: str = DEFAULT_TARGET) -> list[dict[str, bool]]:
    """Every combination of the switches that `target` can generate."""
    rows = [
        dict(zip(FEATURES, bits, strict=True))
        for bits in itertools.product([True, False], repeat=len(FEATURES))
    ]
    return [row for row in rows if refusal(deploy_target=target, **row) is None]


def pairwise_cover(
    first: Iterable[dict[str, bool]], candidates: list[dict[str, bool]]
) -> list[dict[str, bool]]:
    """`first`, plus candidates chosen greedily until every valid pair of switch values occurs."""

    def pairs(row: dict[str, bool]) -> set[tuple[str, bool, str, bool]]:
        return {(a, row[a], b, row[b]) for a, b in itertools.combinations(FEATURES, 2)}

    possible = set().union(*(pairs(row) for row in candidates))
    chosen = list(first)
    needed = possible - set().union(set(), *(pairs(row) for row in chosen))
    while needed:
        best = max(candidates, key=lambda row: len(pairs(row) & needed))
        chosen.append(best)
        needed -= pairs(best)
    return chosen


def combination_name(answers: dict[str, bool]) -> str:
    off = [feature.removeprefix("use_") for feature in FEATURES if not answers.get(feature, True)]
    return "off-" + "-".join(off) if off else "all-on"


def removed_features(answers: Mapping[str, Any]) -> list[str]:
    """The features these answers turn off (a switch left out is on)."""
    return [feature for feature in FEATURES if not answers.get(feature, True)]


def traces(text: str, removed: Iterable[str], words: Mapping[str, list[str]] = FEATURE_WORDS) -> list[str]:
    """The words of removed features that `text` still holds."""
    # Railway's command that turns railway.json into Python is not about databases.
    lowered = text.lower().replace("railway config migrate", "")
    return [word for feature in removed for word in words[feature] if word in lowered]
