"""Bake projects from the template, and the shared virtualenvs their tools run in.

Every baked project is checked with one virtualenv per Python version holding
the union of all variants' dependencies; it is built once, keyed by that
dependency set, and reused across runs (see `venv_for`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from typing import Any

from cookiecutter.main import cookiecutter

from toolkit import cache_dir
from toolkit.features import ALL_ON, CONTEXT, ROOT, TARGETS, answers_for
from toolkit.processes import clean_env, run

TEMPLATE_DIR = ROOT / "{{cookiecutter.project_slug}}"
DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CACHE_DIR = cache_dir()


# cookiecutter changes the process's working directory while it renders.
_ONE_BAKE_AT_A_TIME = threading.Lock()


def bake(output_dir: Path, **answers: Any) -> Path:
    """Generate a project into `output_dir` and return its directory."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with _ONE_BAKE_AT_A_TIME:
        return Path(cookiecutter(str(ROOT), no_input=True, extra_context=answers, output_dir=str(output_dir)))


def find_python(version: str) -> str:
    """A working interpreter for `version` (PATH first, then pyenv's versions)."""
    candidates = [shutil.which(f"python{version}")]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(str(path) for path in pyenv_root.glob(f"versions/{version}.*/bin/python{version}"))
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    raise RuntimeError(f"no Python {version} interpreter found")


def uv() -> str:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    if not Path(found).exists():
        raise RuntimeError("uv is not installed next to the test interpreter")
    return found


def lock(project: Path, python_version: str) -> dict[str, str]:
    """Write the project's uv.lock, as `make install` does; returns the pinned versions."""
    run(
        [uv(), "lock", "--python", find_python(python_version)],
        project,
        clean_env(UV_PYTHON_DOWNLOADS="never"),
    )
    packages = tomllib.loads((project / "uv.lock").read_text())["package"]
    return {package["name"]: package["version"] for package in packages if "version" in package}


def render_file(relative: str, **changes: Any) -> str:
    """One template file rendered for these answers, without a full bake."""
    return render_text((TEMPLATE_DIR / relative).read_text(), **changes)


def render_text(text: str, **changes: Any) -> str:
    """Template text rendered as cookiecutter renders the project, for these answers."""
    from cookiecutter.environment import StrictEnvironment
    from jinja2 import FileSystemLoader

    env = StrictEnvironment(context={"cookiecutter": CONTEXT}, **CONTEXT["_jinja2_env_vars"])
    # Where cookiecutter looks for `{% include %}`d files: the project template, then templates/.
    env.loader = FileSystemLoader([TEMPLATE_DIR, TEMPLATE_DIR.parent / "templates"])
    return env.from_string(text).render(cookiecutter=answers_for(**changes))


def render_pyproject(**answers: Any) -> dict[str, Any]:
    """The generated pyproject.toml for these answers."""
    return tomllib.loads(render_file("pyproject.toml", **answers))


def dependencies(pyproject: dict[str, Any]) -> set[str]:
    return {*pyproject["project"]["dependencies"], *pyproject["dependency-groups"]["dev"]}


def superset_dependencies() -> list[str]:
    """The union of every variant's dependencies: every feature on, each target."""
    found: set[str] = set()
    for target in TARGETS:
        found |= dependencies(render_pyproject(deploy_target=target, **ALL_ON))
    return sorted(found)


def runtime_dependencies(**answers: Any) -> list[str]:
    """What a deployment of the project with these answers installs: no test tools."""
    return sorted(render_pyproject(**answers)["project"]["dependencies"])


def venv_for(python_version: str, dependencies: list[str]) -> Path:
    """A virtualenv for `python_version` with `dependencies`, built once and cached."""
    key = hashlib.sha256(json.dumps([python_version, dependencies]).encode()).hexdigest()[:16]
    venv = CACHE_DIR / f"venv-{python_version}-{key}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with (CACHE_DIR / f"venv-{python_version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            env = clean_env(UV_PYTHON_DOWNLOADS="never")
            run([uv(), "venv", "--quiet", "--python", find_python(python_version), venv], ROOT, env)
            run(
                [
                    uv(),
                    "pip",
                    "install",
                    "--quiet",
                    "--compile-bytecode",
                    "--python",
                    venv / "bin" / "python",
                    *dependencies,
                ],
                ROOT,
                env,
                timeout=1200,
            )
            (venv / ".complete").write_text("\n".join(dependencies))
    return venv


def leftover_jinja(project: Path) -> list[str]:
    """Files that still hold template syntax meant for cookiecutter."""
    found = []
    for path in project.rglob("*"):
        if path.is_file() and path.name != ".cruft.json":
            text = path.read_text(errors="ignore")
            if any(marker in text for marker in ("{%", "%}", "{#", "cookiecutter.")):
                found.append(str(path.relative_to(project)))
    return found
