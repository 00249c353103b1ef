"""Regeneration with cruft: create, check, diff, update across template commits, switch answers.

The template is the working tree committed into a scratch git repository. For
the update tests that commit is "old", and a scripted template release on top
of it is "new": it edits a generated file a few lines from where the user edits
it, edits a file the user deleted, and writes files the project owns (its
`[tool.cruft]` skip list). cruft exits 0 even when an update leaves `.rej`
files or conflict markers, so every update test asserts on the resulting tree.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cookiecutter.environment import StrictEnvironment
from cookiecutter.main import cookiecutter
from jinja2 import FileSystemLoader

from toolkit.bakery import TEMPLATE_DIR, bake, render_pyproject
from toolkit.features import ALL_OFF, CONTEXT, ROOT, TARGETS
from toolkit.processes import GIT_IDENTITY, clean_env, git, run

BIN = Path(sys.executable).parent
CRUFT = BIN / "cruft"
ACTIONLINT = BIN / "actionlint"
SHELLCHECK = BIN / "shellcheck"
CHECK_MERGE_CONFLICT = BIN / "check-merge-conflict"

# Lines that check-merge-conflict reports (pre-commit-hooks' own list).
CONFLICT_MARKERS = (b"<<<<<<< ", b"======= ", b"=======\n", b"=======\r\n", b">>>>>>> ")
EVERY_TARGET_AND_ALL_OFF = [{"deploy_target": target} for target in TARGETS] + [ALL_OFF]


def variant_id(answers: dict[str, Any]) -> str:
    return str(answers.get("deploy_target", "all-features-off"))


# --- The scripted template release ("new") and the user's edits ------------------------------

SETTINGS = "app/settings.py"
# The template adds a setting right after this line...
TEMPLATE_ANCHOR = '    service_name: str = "{{ cookiecutter.project_slug }}"\n'
TEMPLATE_LINE = '    release_channel: str = "stable"\n'
# ...and the user adds one two lines further down: inside the context of the template's
# hunk (so the patch does not apply as it is and git has to merge three-way), not on it.
USER_ANCHOR = "    debug: bool = False\n"
USER_LINE = "    maintenance_mode: bool = False\n"

RELEASE_TEST = """\
from app.settings import Settings


def test_release_channel_defaults_to_stable() -> None:
    assert Settings(_env_file=None).release_channel == "stable"
"""
USER_TEST = """\
from app.settings import Settings


def test_maintenance_mode_is_off_by_default() -> None:
    assert Settings(_env_file=None).maintenance_mode is False
"""
MIGRATION = "migrations/versions/0001_create_items.py"
AUTH_MIGRATION = "migrations/versions/0002_create_auth.py"
TEMPLATE_MIGRATION = "migrations/versions/0002_template_change.py"
# Files the project owns (its skip list), with the template's and the user's versions.
OWNED = {
    MIGRATION: ("\n\n# A template edit that must never reach a project.\n", "\n\n# Reviewed.\n"),
    "uv.lock": ("# the template's lock file\n", "# the project's lock file\n"),
    ".env": ("TEMPLATE_ONLY_SETTING=1\n", "LOCAL_ONLY_SETTING=1\n"),
}


@dataclass(frozen=True)
class Template:
    repo: Path
    old: str
    new: str


def env(**extra: str) -> dict[str, str]:
    return clean_env(**GIT_IDENTITY, **extra)


def cruft(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([CRUFT, *args], cwd, env(), timeout=300, check=check)


def commit_template(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def copy_template(repo: Path) -> str:
    """The working tree of the template, committed into a new git repository."""
    shutil.copytree(
        ROOT,
        repo,
        ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", ".*_cache", "build", "bench"),
    )
    git(repo, "init", "-q", "-b", "main")
    return commit_template(repo, "old")


def release_new(repo: Path) -> None:
    """The scripted template change that the update tests bring into a project."""
    project = repo / "{{cookiecutter.project_slug}}"
    settings = project / SETTINGS
    text = settings.read_text()
    assert TEMPLATE_ANCHOR in text, f"the update scenario needs {TEMPLATE_ANCHOR!r} in {SETTINGS}"
    settings.write_text(text.replace(TEMPLATE_ANCHOR, TEMPLATE_ANCHOR + TEMPLATE_LINE, 1))
    (project / "tests" / "test_release.py").write_text(RELEASE_TEST)
    makefile = project / "Makefile"
    makefile.write_text(makefile.read_text() + "\nhelp:  ## List the targets\n\t@grep '^[a-z]' Makefile\n")
    for path, (template_version, _) in OWNED.items():
        target = project / path
        target.write_text((target.read_text() if target.exists() else "") + template_version)
    (project / TEMPLATE_MIGRATION).write_text('"""A migration the template adds later."""\n')


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """The template as it is, one commit."""
    repo = tmp_path_factory.mktemp("pristine") / "template"
    head = copy_template(repo)
    return Template(repo, head, head)


@pytest.fixture(scope="session")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """The template as it is ("old") and a scripted release on top of it ("new")."""
    repo = tmp_path_factory.mktemp("releases") / "template"
    old = copy_template(repo)
    release_new(repo)
    return Template(repo, old, commit_template(repo, "new"))


def create(template: Path, out: Path, answers: dict[str, Any] | None = None, checkout: str = "") -> Path:
    out.mkdir(parents=True)
    command = ["create", str(template), "--no-input", "--output-dir", str(out)]
    command += ["--checkout", checkout] if checkout else []
    command += ["--extra-context", json.dumps(answers)] if answers else []
    cruft(out, *command)
    (project,) = out.iterdir()
    return project


def bake_from(template: Path, out: Path, **answers: Any) -> Path:
    """A plain cookiecutter bake of the template repository's checked-out tree."""
    out.mkdir(parents=True)
    return Path(cookiecutter(str(template), no_input=True, extra_context=answers, output_dir=str(out)))


def init_git(project: Path) -> None:
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "Generated from the template")


def commit_all(project: Path, message: str) -> None:
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", message)


def files(root: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in root.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(root).parts
    }


def differences(left: Path, right: Path, ignore: frozenset[str] = frozenset({".cruft.json"})) -> list[str]:
    """Paths that exist on one side only or differ, with the side or 'differs'."""
    a, b = files(left), files(right)
    found = [f"{path}: only in {left.name}" for path in a.keys() - b.keys()]
    found += [f"{path}: only in {right.name}" for path in b.keys() - a.keys()]
    found += [f"{path}: differs" for path in a.keys() & b.keys() if a[path] != b[path]]
    return sorted(entry for entry in found if entry.split(":")[0] not in ignore)


def leftovers(project: Path) -> list[str]:
    """`.rej`/`.orig` files and lines with conflict markers: what an update left unresolved."""
    found = []
    for path, content in files(project).items():
        if path.endswith((".rej", ".orig")):
            found.append(path)
        found += [
            f"{path}:{number}"
            for number, line in enumerate(content.splitlines(keepends=True), start=1)
            if line.startswith(CONFLICT_MARKERS)
        ]
    return found


def unmerged(project: Path) -> str:
    return git(project, "ls-files", "--unmerged").stdout


def lint_type_check_and_test(project: Path, venv: Path) -> subprocess.CompletedProcess[str]:
    bin_dir = venv / "bin"
    checks = env(MYPY_CACHE_DIR=str(project.parent / ".mypy_cache"))
    run([bin_dir / "ruff", "check", "--no-cache", "."], project, checks)
    run([bin_dir / "ruff", "format", "--check", "--no-cache", "."], project, checks)
    run([bin_dir / "mypy"], project, checks)
    run([bin_dir / "deptry", "."], project, checks)
    return run([bin_dir / "python", "-m", "pytest", "-v", "-p", "no:cacheprovider"], project, clean_env())


# --- Create, check, diff ------------------------------------------------------------------------

CREATE_ANSWERS = {
    "no-input": None,
    "answers": {
        "project_name": "Order Service",
        "python_version": "3.13",
        "deploy_target": "fly",
        "use_redis": False,
        "use_sentry": False,
    },
}


@pytest.mark.parametrize("answers", list(CREATE_ANSWERS.values()), ids=list(CREATE_ANSWERS))
def test_create_records_the_template_and_leaves_nothing_to_update(
    pristine: Template, tmp_path: Path, answers: dict[str, Any] | None
) -> None:
    project = create(pristine.repo, tmp_path / "created", answers)

    state = json.loads((project / ".cruft.json").read_text())
    assert state["template"] == str(pristine.repo)
    assert state["commit"] == pristine.new
    for name, value in (answers or {}).items():
        assert state["context"]["cookiecutter"][name] == value
    assert "up to date" in cruft(project, "check").stdout
    diff = cruft(project, "diff", "--exit-code", check=False)
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr
    # The same tree as plain cookiecutter gives, plus .cruft.json.
    assert differences(project, bake_from(pristine.repo, tmp_path / "plain", **(answers or {}))) == []


# --- Determinism ----------------------------------------------------------------------------------

COMBINATIONS = [
    {},
    {**ALL_OFF, "deploy_target": "vm", "python_version": "3.11"},
    {"deploy_target": "kubernetes", "use_redis": False, "use_socketio": False},
    {"deploy_target": "cloud-run", "use_sentry": False, "use_rate_limit": False, "python_version": "3.13"},
    {"deploy_target": "fly", "use_postgres": False, "use_auth": False},
    {"deploy_target": "railway", "use_socketio": False},
    {"deploy_target": "render", "use_redis": False, "use_socketio": False},
]


@pytest.mark.parametrize("answers", COMBINATIONS, ids=lambda answers: json.dumps(answers, sort_keys=True))
def test_generation_is_deterministic(tmp_path: Path, answers: dict[str, Any]) -> None:
    # Different output depths too: nothing may depend on where the project is written.
    first = bake(tmp_path / "a", **answers)
    second = bake(tmp_path / "b" / "deeper", **answers)

    assert files(first), "nothing was generated"
    assert differences(first, second) == []


def test_every_deploy_target_is_baked_for_determinism() -> None:
    targets = {answers.get("deploy_target", CONTEXT["deploy_target"][0]) for answers in COMBINATIONS}
    assert targets == set(TARGETS)


# --- Update to a newer template commit ------------------------------------------------------------


@dataclass(frozen=True)
class Updated:
    project: Path
    template: Template
    owned_before: dict[str, bytes]


@pytest.fixture(scope="module")
def updated(releases: Template, tmp_path_factory: pytest.TempPathFactory) -> Updated:
    """A project from "old", committed, edited by its user, then `cruft update -y` to "new"."""
    project = create(releases.repo, tmp_path_factory.mktemp("update") / "out", checkout=releases.old)
    init_git(project)

    settings = project / SETTINGS
    text = settings.read_text()
    lines = text.splitlines(keepends=True)
    template_line = next(i for i, line in enumerate(lines) if line.startswith("    service_name: str ="))
    assert USER_ANCHOR in lines[template_line + 1 : template_line + 3], "the user's edit must be near"
    settings.write_text(text.replace(USER_ANCHOR, USER_ANCHOR + USER_LINE, 1))
    (project / "tests" / "test_maintenance.py").write_text(USER_TEST)
    (project / "Makefile").unlink()
    for path, (_, user_version) in OWNED.items():
        target = project / path
        target.write_text((target.read_text() if target.exists() else "") + user_version)
    commit_all(project, "The user's own changes")
    assert git(project, "check-ignore", ".env").returncode == 0  # a local file, never committed
    owned = {path: (project / path).read_bytes() for path in OWNED}
    assert cruft(project, "check", check=False).returncode != 0, "the project must start out of date"

    cruft(project, "update", "-y")
    return Updated(project, releases, owned)


@pytest.mark.xdist_group("cruft-update")
def test_update_leaves_no_rejected_hunk_and_no_conflict(updated: Updated) -> None:
    assert leftovers(updated.project) == []
    assert unmerged(updated.project) == ""
    state = json.loads((updated.project / ".cruft.json").read_text())
    assert state["commit"] == updated.template.new


@pytest.mark.xdist_group("cruft-update")
def test_update_merges_the_template_change_next_to_the_user_edit(updated: Updated) -> None:
    settings = (updated.project / SETTINGS).read_text()

    assert TEMPLATE_LINE in settings
    assert USER_LINE in settings
    assert settings.index(TEMPLATE_LINE) < settings.index(USER_ANCHOR) < settings.index(USER_LINE)
    assert (updated.project / "tests" / "test_release.py").read_text() == RELEASE_TEST
    assert (updated.project / "tests" / "test_maintenance.py").read_text() == USER_TEST


@pytest.mark.xdist_group("cruft-update")
def test_update_leaves_a_file_the_user_deleted_deleted(updated: Updated) -> None:
    assert not (updated.project / "Makefile").exists()
    assert sorted(path.name for path in updated.project.glob("Makefile*")) == []


@pytest.mark.xdist_group("cruft-update")
def test_update_never_writes_the_files_the_project_owns(updated: Updated) -> None:
    owned_now = {path: (updated.project / path).read_bytes() for path in OWNED}

    assert owned_now == updated.owned_before
    assert not (updated.project / TEMPLATE_MIGRATION).exists()


@pytest.mark.xdist_group("cruft-update")
def test_after_the_update_the_project_is_current_and_its_tests_pass(updated: Updated, venv: Path) -> None:
    assert "up to date" in cruft(updated.project, "check").stdout
    bin_dir = venv / "bin"
    run([bin_dir / "ruff", "check", "--no-cache", "."], updated.project, clean_env())
    run([bin_dir / "ruff", "format", "--check", "--no-cache", "."], updated.project, clean_env())

    pytest_command = [bin_dir / "python", "-m", "pytest", "-v", "-p", "no:cacheprovider"]
    result = run(pytest_command, updated.project, clean_env())

    assert "test_release.py::test_release_channel_defaults_to_stable PASSED" in result.stdout
    assert "test_maintenance.py::test_maintenance_mode_is_off_by_default PASSED" in result.stdout


# --- What cruft leaves when a change does not apply, and the guards against committing it ---------


def guard_config(project: Path, path: Path) -> Path:
    """The generated pre-commit guards, runnable offline.

    `no-rejected-hunks` is a local hook and is copied as it is. `check-merge-conflict`
    comes from a remote repository; it is replaced by a local hook running the same
    code (the pre-commit-hooks package at the configured rev) with the configured args.
    """
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    hooks = []
    for repo in config["repos"]:
        for hook in repo["hooks"]:
            if hook["id"] == "no-rejected-hunks":
                hooks.append(hook)
            elif hook["id"] == "check-merge-conflict":
                assert repo["rev"] == "v" + importlib.metadata.version("pre-commit-hooks")
                hooks.append(
                    {
                        "id": hook["id"],
                        "name": hook["id"],
                        "entry": str(CHECK_MERGE_CONFLICT),
                        "language": "system",
                        "types": ["text"],
                        "args": hook.get("args", []),
                    }
                )
    assert sorted(hook["id"] for hook in hooks) == ["check-merge-conflict", "no-rejected-hunks"]
    path.write_text(yaml.safe_dump({"repos": [{"repo": "local", "hooks": hooks}]}))
    return path


def run_guards(project: Path, venv: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """pre-commit runs the guards on every tracked file, as on a commit of them all."""
    config = guard_config(project, tmp_path / "guards.yaml")
    return run(
        [venv / "bin" / "pre-commit", "run", "--all-files", "--config", config],
        project,
        env(PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home")),
        check=False,
    )


def test_a_conflicting_edit_leaves_markers_that_the_guard_refuses(
    releases: Template, venv: Path, tmp_path: Path
) -> None:
    project = create(releases.repo, tmp_path / "out", checkout=releases.old)
    init_git(project)
    settings = project / SETTINGS
    # The user changes the very line the template adds a line after.
    rendered = TEMPLATE_ANCHOR.replace("{{ cookiecutter.project_slug }}", "my-service")
    settings.write_text(settings.read_text().replace(rendered, rendered.replace("my-", "renamed-"), 1))
    commit_all(project, "Rename the service")

    result = cruft(project, "update", "-y")

    assert result.returncode == 0  # cruft reports success...
    assert unmerged(project) != ""  # ...with the file left unmerged
    assert [entry.split(":")[0] for entry in leftovers(project)] == [SETTINGS] * 3
    # A user who stages the file as it is cannot commit it.
    git(project, "add", "-A")
    guards = run_guards(project, venv, tmp_path)
    assert guards.returncode == 1, guards.stdout
    assert f"{SETTINGS}:" in guards.stdout
    assert "Merge conflict string" in guards.stdout


def test_outside_git_an_update_leaves_rej_files_that_the_guard_refuses(
    releases: Template, venv: Path, tmp_path: Path
) -> None:
    project = create(releases.repo, tmp_path / "out", checkout=releases.old)
    settings = project / SETTINGS
    settings.write_text(settings.read_text().replace(USER_ANCHOR, USER_ANCHOR + USER_LINE, 1))

    result = cruft(project, "update", "-y")

    assert result.returncode == 0
    assert (project / f"{SETTINGS}.rej").exists()
    assert TEMPLATE_LINE not in settings.read_text()
    init_git(project)
    assert git(project, "ls-files", "*.rej").stdout == ""  # git-ignored
    git(project, "add", "--force", f"{SETTINGS}.rej")
    guards = run_guards(project, venv, tmp_path)
    assert guards.returncode == 1, guards.stdout
    assert "- hook id: no-rejected-hunks" in guards.stdout
    assert f"{SETTINGS}.rej" in guards.stdout


@pytest.mark.parametrize("answers", EVERY_TARGET_AND_ALL_OFF, ids=variant_id)
def test_the_guards_pass_on_a_generated_project(
    bakery: Any, venv: Path, tmp_path: Path, answers: dict[str, Any]
) -> None:
    project = tmp_path / "project"
    shutil.copytree(bakery(**answers), project)
    init_git(project)

    guards = run_guards(project, venv, tmp_path)

    assert guards.returncode == 0, guards.stdout
    assert "check-merge-conflict" in guards.stdout
    assert "Passed" in guards.stdout


# --- Switching features on an existing project ---------------------------------------------------


def switch(template: Template, tmp_path: Path, before: dict[str, Any], after: dict[str, Any]) -> Path:
    project = create(template.repo, tmp_path / "out", before)
    init_git(project)
    cruft(project, "update", "-y", "--variables-to-update", json.dumps(after))
    assert leftovers(project) == []
    assert unmerged(project) == ""
    state = json.loads((project / ".cruft.json").read_text())
    assert {name: state["context"]["cookiecutter"][name] for name in after} == after
    return project


def test_switching_a_feature_on_and_another_off(pristine: Template, tmp_path: Path, venv: Path) -> None:
    project = switch(
        pristine,
        tmp_path,
        {"use_postgres": False, "use_auth": False},
        {"use_postgres": True, "use_redis": False},
    )

    assert (project / "app" / "db.py").exists()
    assert (project / MIGRATION).exists()
    assert not (project / "app" / "cache.py").exists()
    # Exactly what a new project with these answers would be.
    fresh = bake_from(pristine.repo, tmp_path / "fresh", use_postgres=True, use_redis=False, use_auth=False)
    assert differences(project, fresh) == []
    diff = cruft(project, "diff", "--exit-code", check=False)
    assert (diff.returncode, diff.stdout) == (0, ""), diff.stdout + diff.stderr

    result = lint_type_check_and_test(project, venv)
    assert "test_items.py" in result.stdout
    assert "test_cache.py" not in result.stdout


def test_switching_postgres_off_keeps_the_migration_history(pristine: Template, tmp_path: Path) -> None:
    project = switch(
        pristine,
        tmp_path,
        {"use_redis": False},
        {"use_postgres": False, "use_auth": False, "use_redis": True},
    )

    assert (project / "app" / "cache.py").exists()
    assert not (project / "app" / "db.py").exists()
    assert not (project / "alembic.ini").exists()
    # migrations/versions is on the skip list: the history stays until the user deletes it
    # (as the README's "Updating from the template" says); everything else is a fresh project.
    fresh = bake_from(pristine.repo, tmp_path / "fresh", use_postgres=False, use_auth=False, use_redis=True)
    assert differences(project, fresh) == [
        f"{migration}: only in {project.name}" for migration in (MIGRATION, AUTH_MIGRATION)
    ]


# --- The generated pieces: skip list, weekly check, README section, compatibility ---------------


@pytest.mark.parametrize("use_postgres", [True, False])
def test_skip_list_holds_what_the_project_owns(use_postgres: bool) -> None:
    skip = render_pyproject(use_postgres=use_postgres)["tool"]["cruft"]["skip"]

    assert {".env", "uv.lock"} <= set(skip)
    assert ("migrations/versions" in skip) == use_postgres


def render_readme_part(name: str, **answers: Any) -> str:
    """A templates/readme part rendered as the generated README includes it."""
    context = {key: value for key, value in CONTEXT.items() if not key.startswith("_")}
    context = {key: value[0] if isinstance(value, list) else value for key, value in context.items()}
    context |= {"project_slug": "my-service", **answers}
    environment = StrictEnvironment(
        context={"cookiecutter": CONTEXT},
        loader=FileSystemLoader(str(ROOT / "templates")),
        **CONTEXT["_jinja2_env_vars"],
    )
    return environment.get_template(f"readme/{name}").render(cookiecutter=context)


@pytest.mark.parametrize("use_postgres", [True, False])
def test_updating_guide_matches_the_generated_project(use_postgres: bool) -> None:
    guide = render_readme_part("updating.md", use_postgres=use_postgres)
    skip = render_pyproject(use_postgres=use_postgres)["tool"]["cruft"]["skip"]

    assert guide.startswith("## Updating from the template\n")
    assert not any(marker in guide for marker in ("{%", "%}", "{{", "{#", "cookiecutter."))
    assert [path for path in skip if f"`{path}" not in guide] == []
    assert "uvx cruft update -y" in guide
    assert "--variables-to-update" in guide
    workflow = ".github/workflows/template-update.yml"
    assert workflow in guide
    assert (TEMPLATE_DIR / workflow).exists()
    if not use_postgres:
        assert [word for word in ("postgres", "migration", "alembic") if word in guide.lower()] == []


# Every prompt and choice value ever released. cruft replays old answers on update, and
# crashes on a choice value the template no longer offers: see the compatibility policy in
# CHANGELOG.md before removing anything here.
RELEASED_PROMPTS = {
    "project_name": None,
    "project_slug": None,
    "description": None,
    "author_name": None,
    "author_email": None,
    "python_version": ["3.12", "3.13", "3.11"],
    "deploy_target": ["docker-compose", "railway", "cloud-run", "kubernetes", "vm", "fly", "render"],
    "use_postgres": None,
    "use_redis": None,
    "use_socketio": None,
    "use_rate_limit": None,
    "use_sentry": None,
}


def test_no_released_prompt_or_choice_value_is_removed() -> None:
    missing = [name for name in RELEASED_PROMPTS if name not in CONTEXT]
    missing += [
        f"{name}={value}"
        for name, values in RELEASED_PROMPTS.items()
        if values and name in CONTEXT
        for value in values
        if value not in CONTEXT[name]
    ]
    assert missing == []


# --- Workflows ------------------------------------------------------------------------------------


def actionlint(*paths: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run([ACTIONLINT, "-no-color", "-shellcheck", SHELLCHECK, *paths], cwd, clean_env(), check=False)


def test_actionlint_runs_shellcheck_on_run_scripts(tmp_path: Path) -> None:
    """Guards the test below: a shell problem in a `run:` script must be reported."""
    workflow = tmp_path / "bad.yml"
    workflow.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo $1 $(ls *)\n"
    )
    result = actionlint(workflow, cwd=tmp_path)
    assert result.returncode == 1
    assert "shellcheck reported issue" in result.stdout


@pytest.mark.parametrize("answers", EVERY_TARGET_AND_ALL_OFF, ids=variant_id)
def test_every_generated_workflow_passes_actionlint(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    workflows = sorted((project / ".github" / "workflows").glob("*.y*ml"))

    assert {"ci.yml", "template-update.yml"} <= {path.name for path in workflows}
    result = actionlint(*workflows, cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr


def template_update_step(project: Path) -> str:
    workflow = yaml.safe_load((project / ".github" / "workflows" / "template-update.yml").read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["schedule"][0]["cron"]
    assert "workflow_dispatch" in triggers
    (job,) = workflow["jobs"].values()
    (step,) = [step for step in job["steps"] if step.get("name") == "Compare with the template"]
    assert step["shell"] == "bash"
    script: str = step["run"]
    return script


def run_template_update_step(project: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    """The job's script as GitHub runs a `shell: bash` step, with `uvx` running this cruft."""
    shims = tmp_path / "shims"
    shims.mkdir()
    uvx = shims / "uvx"
    uvx.write_text(f'#!/bin/sh\ncase "$1" in cruft@*) shift ;; *) exit 97 ;; esac\nexec "{CRUFT}" "$@"\n')
    uvx.chmod(0o755)
    script = tmp_path / "step.sh"
    script.write_text(template_update_step(project))
    summary = tmp_path / "summary.md"
    result = run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", script],
        project,
        env(PATH=f"{shims}{os.pathsep}{os.environ['PATH']}", GITHUB_STEP_SUMMARY=str(summary)),
        check=False,
    )
    return result, summary.read_text() if summary.exists() else ""


def test_weekly_check_fails_with_the_update_steps_when_behind(releases: Template, tmp_path: Path) -> None:
    project = create(releases.repo, tmp_path / "out", checkout=releases.old)

    result, summary = run_template_update_step(project, tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "::error::This project is behind its template" in result.stdout
    for text in (result.stdout, summary):
        assert "cruft@2.16.0 update -y" in text
        assert "make check" in text
        assert "*.rej" in text


def test_weekly_check_passes_when_current(releases: Template, tmp_path: Path) -> None:
    project = create(releases.repo, tmp_path / "out")

    result, summary = run_template_update_step(project, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "up to date" in result.stdout
    assert summary == ""


def test_weekly_check_explains_a_project_without_cruft_json(pristine: Template, tmp_path: Path) -> None:
    project = bake_from(pristine.repo, tmp_path / "out")

    result, _ = run_template_update_step(project, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "::notice::No .cruft.json" in result.stdout
    assert "cruft@2.16.0 link" in result.stdout


def test_weekly_check_fails_without_update_advice_when_the_template_is_unreachable(
    pristine: Template, tmp_path: Path
) -> None:
    project = create(pristine.repo, tmp_path / "out")
    state = json.loads((project / ".cruft.json").read_text())
    (project / ".cruft.json").write_text(json.dumps(state | {"template": str(tmp_path / "gone")}))

    result, summary = run_template_update_step(project, tmp_path)

    assert result.returncode != 0
    assert "::error::cruft could not compare" in result.stdout
    assert "update -y" not in result.stdout
    assert summary == ""


def test_the_workflow_pins_the_cruft_version_the_tests_use() -> None:
    workflow = (TEMPLATE_DIR / ".github" / "workflows" / "template-update.yml").read_text()

    assert f"cruft@{importlib.metadata.version('cruft')} " in workflow


def test_ci_runs_the_update_guards_on_every_push(bakery: Any) -> None:
    workflow = yaml.safe_load((bakery() / ".github" / "workflows" / "ci.yml").read_text())
    commands = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]

    for hook in ("check-merge-conflict", "no-rejected-hunks"):
        assert f"uv run pre-commit run {hook} --all-files" in commands
