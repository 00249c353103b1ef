"""Every variant bakes to a project that lints, type-checks and passes its own tests.

Variants: the default project, each feature switched off alone, each other
Python version, and every combination of the five feature switches (all 32 in
CI; locally a pairwise-covering subset unless FULL_MATRIX=1). The generated
tests run on the real PostgreSQL and Redis; for the default, the single-switch
and the Python-version variants they also run on the embedded defaults.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from tests.bakery import (
    CACHE_DIR,
    FEATURES,
    PYTHONS,
    clean_env,
    leftover_jinja,
    run,
    superset_dependencies,
    venv_for,
)

# Words that only the code, docs and settings of a feature may contain.
FEATURE_WORDS = {
    "use_postgres": ["sqlalchemy", "alembic", "asyncpg", "database_url", "postgres", "sqlite"],
    "use_redis": ["redis"],
    "use_socketio": ["socketio", "socket.io", "app.realtime", "realtime.py", "/realtime"],
    "use_rate_limit": ["slowapi", "rate_limit", "ratelimit", "rate limit", "rate-limit"],
    "use_sentry": ["sentry"],
}


def combination_name(answers: dict[str, bool]) -> str:
    off = [feature.removeprefix("use_") for feature in FEATURES if not answers[feature]]
    return "off-" + "-".join(off) if off else "all-on"


def pairwise_cover(rows: list[dict[str, bool]], candidates: list[dict[str, bool]]) -> list[dict[str, bool]]:
    """`rows` plus candidates, greedily, until every pair of switch values occurs."""

    def pairs(row: dict[str, bool]) -> set[tuple[str, bool, str, bool]]:
        return {(a, row[a], b, row[b]) for a, b in itertools.combinations(FEATURES, 2)}

    needed = {
        (a, x, b, y)
        for a, b in itertools.combinations(FEATURES, 2)
        for x in (True, False)
        for y in (True, False)
    }
    chosen = list(rows)
    for row in chosen:
        needed -= pairs(row)
    while needed:
        best = max(candidates, key=lambda row: len(pairs(row) & needed))
        chosen.append(best)
        needed -= pairs(best)
    return chosen


ALL_COMBINATIONS = [
    dict(zip(FEATURES, bits, strict=True)) for bits in itertools.product([True, False], repeat=5)
]
SINGLE_OFF = [{feature: feature != off for feature in FEATURES} for off in (None, *FEATURES)]
FULL_MATRIX = bool(os.environ.get("CI") or os.environ.get("FULL_MATRIX"))
COMBINATIONS = ALL_COMBINATIONS if FULL_MATRIX else pairwise_cover(SINGLE_OFF, ALL_COMBINATIONS)


class Variant:
    def __init__(self, name: str, answers: dict[str, Any], embedded: bool) -> None:
        self.name = name
        self.answers = answers
        # Also run the generated tests on the embedded defaults.
        self.embedded = embedded

    def venv(self, default: Path) -> Path:
        version = self.answers.get("python_version")
        return venv_for(version, superset_dependencies()) if version else default


VARIANTS = [Variant(combination_name(row), row, embedded=row in SINGLE_OFF) for row in COMBINATIONS]
VARIANTS += [
    Variant(f"python-{version}", {"python_version": version}, embedded=True) for version in PYTHONS[1:]
]


def variant_params(only_embedded: bool = False) -> list[Any]:
    return [
        pytest.param(variant, id=variant.name, marks=pytest.mark.xdist_group(variant.name))
        for variant in VARIANTS
        if variant.embedded or not only_embedded
    ]


@pytest.mark.parametrize("variant", variant_params())
def test_renders_cleanly_with_no_trace_of_removed_features(bakery: Any, variant: Variant) -> None:
    project = bakery(**variant.answers)

    assert leftover_jinja(project) == []
    empty = [str(path) for path in project.rglob("*") if path.is_dir() and not any(path.iterdir())]
    assert empty == []
    removed = [feature for feature in FEATURES if variant.answers.get(feature) is False]
    traces = []
    for path in project.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="ignore").lower()
            for feature in removed:
                traces += [
                    f"{path.relative_to(project)}: {word}" for word in FEATURE_WORDS[feature] if word in text
                ]
    assert traces == []


@pytest.mark.parametrize("variant", variant_params())
def test_lints_and_type_checks(bakery: Any, venv: Path, variant: Variant, worker_id: str) -> None:
    project = bakery(**variant.answers)
    bin_dir = variant.venv(venv) / "bin"
    # One mypy cache per worker and Python: third-party modules are checked once.
    version = variant.answers.get("python_version", "default")
    env = clean_env(MYPY_CACHE_DIR=str(CACHE_DIR / f"mypy-{version}-{worker_id}"))

    run([bin_dir / "ruff", "check", "--no-cache", "."], project, env)
    run([bin_dir / "ruff", "format", "--check", "--no-cache", "."], project, env)
    run([bin_dir / "mypy"], project, env)
    run([bin_dir / "deptry", "."], project, env)


@pytest.mark.parametrize("variant", variant_params(only_embedded=True))
def test_suite_passes_on_embedded_defaults(bakery: Any, venv: Path, variant: Variant) -> None:
    project = bakery(**variant.answers)
    python = variant.venv(venv) / "bin" / "python"

    result = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, clean_env())
    assert " passed" in result.stdout


@pytest.mark.parametrize("variant", variant_params())
def test_suite_passes_on_real_services(
    bakery: Any, venv: Path, services: dict[str, str], variant: Variant
) -> None:
    project = bakery(**variant.answers)
    python = variant.venv(venv) / "bin" / "python"

    result = run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"], project, clean_env(**services)
    )
    summary = result.stdout.strip().splitlines()[-1]
    assert " passed" in summary
    # With every service up, nothing may be skipped.
    assert "skipped" not in summary, result.stdout[-3000:]
