"""Run a job of a generated GitHub Actions workflow here, its `run:` steps as written.

The project directory stands for the job's checkout; `setup-uv` for the uv of the
template's own virtualenv; `upload-artifact` checks that the files it would upload
exist. Any other action is refused, so a new step cannot be skipped unnoticed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from toolkit.processes import clean_env

# What the workflow's `uvx pip-audit` needs that this machine's PyPI mirror does not
# serve (the per-release JSON API): the look-up is left out, the rest runs.
AUDIT = "uvx pip-audit@"
OFFLINE_AUDIT = "--dry-run"
TOOLS = Path(sys.executable).parent


@dataclass
class Step:
    name: str
    command: str
    result: subprocess.CompletedProcess[str]


def job(project: Path, name: str, workflow: str = "ci.yml") -> dict[str, Any]:
    jobs: dict[str, Any] = yaml.safe_load((project / ".github" / "workflows" / workflow).read_text())["jobs"]
    return dict(jobs[name])


def expand(value: object, contexts: dict[str, dict[str, str]]) -> str:
    """A step's `env:` value with its `${{ secrets.X }}` or `${{ vars.X }}` filled in, as
    GitHub does (an unset one is empty); any other expression is refused."""
    text = str(value)
    found = re.fullmatch(r"\$\{\{ (\w+)\.(\w+) \}\}", text)
    if found is None:
        assert "${{" not in text, f"no stand-in for {text}"
        return text
    assert found[1] in {"secrets", "vars"}, f"no stand-in for {text}"
    return contexts.get(found[1], {}).get(found[2], "")


def run_job(
    project: Path,
    name: str,
    services: dict[str, str],
    extra_env: dict[str, str] | None = None,
    contexts: dict[str, dict[str, str]] | None = None,
    check: bool = True,
) -> list[Step]:
    """Run job `name` of ci.yml in `project`, with `services` (say DATABASE_URL) replacing
    the job's own values for its service containers, `extra_env` standing for what the
    runner sets, and `contexts` for the repository's secrets and variables. Stops at the
    first failing step: raises, or (without `check`) returns the steps run so far."""
    spec = job(project, name)
    env = clean_env() | {key: str(value) for key, value in spec.get("env", {}).items()}
    env |= services | (extra_env or {})
    env["PATH"] = f"{TOOLS}:{env['PATH']}"
    done: list[Step] = []
    for step in spec["steps"]:
        action = step.get("uses", "").split("@")[0]
        if action in {"actions/checkout", "astral-sh/setup-uv"}:
            continue
        if action == "actions/upload-artifact":
            missing = [path for path in step["with"]["path"].split() if not (project / path).is_file()]
            assert missing == [], f"{step['with']['name']}: nothing at {missing}"
            continue
        assert action == "", f"no stand-in for the action {action}"
        command = step["run"]
        if command.startswith(AUDIT):
            command = f"{command} {OFFLINE_AUDIT}"
        # GitHub's default shell on Linux runners: bash -e {0}.
        result = subprocess.run(
            ["bash", "-e", "-c", command],
            cwd=project,
            env=env | {key: expand(value, contexts or {}) for key, value in step.get("env", {}).items()},
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        done.append(Step(step.get("name", command), command, result))
        if result.returncode != 0:
            if not check:
                break
            raise AssertionError(
                f"step {done[-1].name!r} exited {result.returncode}\n"
                f"--- stdout ---\n{result.stdout[-6000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
            )
    return done
