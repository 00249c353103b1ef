"""Every combination of the switches bakes to a project that lints, type-checks and
passes its own tests.

Every combination is baked, checked for template syntax and for traces of the
features it removed, and linted with ruff: that is cheap. Type checks (mypy,
deptry) and the generated tests run on a covering set: all on, all off, each
switch changed alone from the default answers, and enough more that every pair
of switch values occurs together (FULL_MATRIX=1 runs them on every
combination), plus each other Python version. The generated tests run on the
real PostgreSQL and Redis, and, for all on, the defaults, each service
switched off alone and the other Python versions, also on the embedded defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from toolkit.bakery import CACHE_DIR, bake, leftover_jinja, superset_dependencies, venv_for
from toolkit.features import (
    ALL_OFF,
    ALL_ON,
    DEFAULTS,
    FEATURES,
    PYTHONS,
    combination_name,
    every_combination,
    pairwise_cover,
    refusal,
    traces,
)
from toolkit.processes import clean_env, run

EVERY = every_combination()
SINGLE_CHANGE = [
    row
    for row in ({**DEFAULTS, feature: not DEFAULTS[feature]} for feature in FEATURES)
    if refusal(**row) is None and row != ALL_ON
]
FULL_MATRIX = bool(os.environ.get("FULL_MATRIX"))
COVERING = EVERY if FULL_MATRIX else pairwise_cover([ALL_ON, ALL_OFF, DEFAULTS, *SINGLE_CHANGE], EVERY)


class Variant:
    def __init__(self, name: str, answers: dict[str, Any], embedded: bool) -> None:
        self.name = name
        self.answers = answers
        # Also run the generated tests on the embedded defaults.
        self.embedded = embedded

    def venv(self, default: Path) -> Path:
        version = self.answers.get("python_version")
        return venv_for(version, superset_dependencies()) if version else default


# On the embedded defaults, SQLite and in-process stand-ins replace the services.
# Every feature's code on them runs with all on, and a switched-off feature has none
# to run; what else changes there is which services a project has.
SERVICES = ("use_postgres", "use_redis")
EMBEDDED = [ALL_ON, DEFAULTS, *(row for row in SINGLE_CHANGE if not all(row[s] for s in SERVICES))]
VARIANTS = [Variant(combination_name(row), row, embedded=row in EMBEDDED) for row in COVERING]
VARIANTS += [
    Variant(f"python-{version}", {"python_version": version}, embedded=True) for version in PYTHONS[1:]
]


def variant_params(only_embedded: bool = False) -> list[Any]:
    return [
        pytest.param(variant, id=variant.name, marks=pytest.mark.xdist_group(variant.name))
        for variant in VARIANTS
        if variant.embedded or not only_embedded
    ]


@pytest.mark.parametrize(
    "answers",
    [pytest.param(row, id=combination_name(row)) for row in EVERY],
)
def test_every_combination_renders_cleanly_and_lints(
    venv: Path, tmp_path: Path, answers: dict[str, bool]
) -> None:
    project = bake(tmp_path, **answers)

    assert leftover_jinja(project) == []
    empty = [str(path) for path in project.rglob("*") if path.is_dir() and not any(path.iterdir())]
    assert empty == []
    removed = [feature for feature in FEATURES if not answers[feature]]
    left = [
        f"{path.relative_to(project)}: {word}"
        for path in project.rglob("*")
        if path.is_file()
        for word in traces(path.read_text(errors="ignore"), removed)
    ]
    assert left == []
    run([venv / "bin" / "ruff", "check", "--no-cache", "."], project, clean_env())
    run([venv / "bin" / "ruff", "format", "--check", "--no-cache", "."], project, clean_env())


@pytest.mark.parametrize("variant", variant_params())
def test_type_checks_and_declares_its_dependencies(
    bakery: Any, venv: Path, variant: Variant, worker_id: str
) -> None:
    project = bakery(**variant.answers)
    bin_dir = variant.venv(venv) / "bin"
    # One mypy cache per worker and Python: third-party modules are checked once.
    version = variant.answers.get("python_version", "default")
    env = clean_env(MYPY_CACHE_DIR=str(CACHE_DIR / f"mypy-{version}-{worker_id}"))

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
