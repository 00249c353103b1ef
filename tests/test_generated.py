"""Every variant bakes to a project that lints, type-checks and passes its own tests.

The generated tests run twice: on the embedded defaults (SQLite, in-process
cache) and on the real PostgreSQL and Redis.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.bakery import FEATURES, PYTHONS, clean_env, leftover_jinja, run, superset_dependencies, venv_for

VARIANTS: dict[str, dict[str, Any]] = {"default": {}}
VARIANTS |= {f"no-{feature.removeprefix('use_')}": {feature: False} for feature in FEATURES}
VARIANTS |= {f"python-{version}": {"python_version": version} for version in PYTHONS[1:]}


def variant_params() -> list[Any]:
    return [pytest.param(answers, id=name, marks=pytest.mark.xdist_group(name)) for name, answers in VARIANTS.items()]


def venv_of(answers: dict[str, Any], default_venv: Path) -> Path:
    version = answers.get("python_version")
    return venv_for(version, superset_dependencies()) if version else default_venv


@pytest.mark.parametrize("answers", variant_params())
def test_renders_without_template_syntax(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)

    assert leftover_jinja(project) == []
    empty = [str(path) for path in project.rglob("*") if path.is_dir() and not any(path.iterdir())]
    assert empty == []


@pytest.mark.parametrize("answers", variant_params())
def test_lints_and_type_checks(bakery: Any, venv: Path, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    bin_dir = venv_of(answers, venv) / "bin"
    env = clean_env(MYPY_CACHE_DIR=str(project.parent / ".mypy_cache"))

    run([bin_dir / "ruff", "check", "--no-cache", "."], project, env)
    run([bin_dir / "ruff", "format", "--check", "--no-cache", "."], project, env)
    run([bin_dir / "mypy"], project, env)
    run([bin_dir / "deptry", "."], project, env)


@pytest.mark.parametrize("answers", variant_params())
def test_suite_passes_on_embedded_defaults(bakery: Any, venv: Path, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    python = venv_of(answers, venv) / "bin" / "python"

    result = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], project, clean_env())
    assert " passed" in result.stdout


@pytest.mark.parametrize("answers", variant_params())
def test_suite_passes_on_real_services(
    bakery: Any, venv: Path, services: dict[str, str], answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    python = venv_of(answers, venv) / "bin" / "python"

    result = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs"], project, clean_env(**services))
    assert " passed" in result.stdout
    # On real services nothing may be skipped for want of a service.
    assert "is not set" not in result.stdout
