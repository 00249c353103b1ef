"""Prompts, hooks and the manifest: defaults, command-line switches, refusals, drift."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from toolkit.bakery import TEMPLATE_DIR, bake
from toolkit.features import CONTEXT, FEATURES, ROOT, TARGETS
from toolkit.processes import run

COOKIECUTTER = Path(sys.executable).with_name("cookiecutter")
CRUFT = Path(sys.executable).with_name("cruft")


def load_hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "hooks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cookiecutter_cli(
    output: Path, *args: str, template: str | Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(COOKIECUTTER), str(template), "--no-input", "-o", str(output), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_prompt_has_a_default_and_a_prompt_text() -> None:
    prompts = CONTEXT["__prompts__"]
    for name, value in CONTEXT.items():
        if name.startswith("_"):
            continue
        assert value not in ("", []), name
        assert name in prompts, name


def test_files_copied_without_rendering_hold_no_template_syntax() -> None:
    # Listed in `_copy_without_render` so a bake skips compiling them as templates
    # (a third of the files); one that gains a Jinja tag must leave the list.
    listed = CONTEXT["_copy_without_render"]
    assert listed == sorted(listed)
    for name in listed:
        text = (TEMPLATE_DIR / name).read_text()
        assert not any(tag in text for tag in ("{{", "{%", "{#")), name


def test_no_input_bakes_every_feature_but_the_worker(tmp_path: Path) -> None:
    result = cookiecutter_cli(tmp_path)

    assert result.returncode == 0, result.stderr
    project = tmp_path / "my-service"
    assert (project / ".python-version").read_text().strip() == CONTEXT["python_version"][0]
    assert (project / "app" / "db.py").exists()
    assert (project / "app" / "cache.py").exists()
    # A second process to run and pay for on every platform: asked for, not assumed.
    assert not (project / "app" / "jobs").exists()


def test_switches_are_set_from_the_command_line(tmp_path: Path) -> None:
    result = cookiecutter_cli(tmp_path, "use_redis=no", "project_name=Order Service", "python_version=3.13")

    assert result.returncode == 0, result.stderr
    project = tmp_path / "order-service"
    assert not (project / "app" / "cache.py").exists()
    assert (project / "app" / "db.py").exists()
    assert "redis" not in (project / "pyproject.toml").read_text()
    assert (project / ".python-version").read_text().strip() == "3.13"


def test_cruft_create_works_without_input(tmp_path: Path, template_repo: Path) -> None:
    run([CRUFT, "create", str(template_repo), "--no-input", "--output-dir", str(tmp_path)], tmp_path)

    cruft_state = json.loads((tmp_path / "my-service" / ".cruft.json").read_text())
    assert cruft_state["context"]["cookiecutter"]["use_postgres"] is True


def test_bakes_from_a_git_url(tmp_path: Path, template_repo: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"cookiecutters_dir: {tmp_path / 'clones'}\nreplay_dir: {tmp_path / 'replay'}\n")

    result = cookiecutter_cli(
        tmp_path / "out", "--config-file", str(config), template=f"git+file://{template_repo}"
    )

    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "my-service" / "app" / "main.py").exists()


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        (["project_slug=Bad Slug"], "project_slug 'Bad Slug' must be lowercase"),
        (["project_slug=9lives"], "starting with a letter"),
        (["project_slug=under_score"], "project_slug 'under_score'"),
        (["project_slug=double--hyphen"], "project_slug 'double--hyphen'"),
        (["project_slug=" + "a" * 41], "longer than 40"),
        (['description=say "hi"'], "description must not contain double quotes"),
        (["project_name= "], "project_name must not be empty"),
        (["author_email=nobody"], "author_email 'nobody' is not an email address"),
        (["deploy_target=kubernetes", "use_redis=no"], "use_socketio needs use_redis on kubernetes"),
        (["deploy_target=cloud-run", "use_redis=no"], "use_socketio needs use_redis on cloud-run"),
        (["use_postgres=no"], "use_auth needs use_postgres"),
        (["use_worker=yes", "use_redis=no", "use_socketio=no"], "use_worker needs use_redis"),
    ],
)
def test_bad_answers_stop_with_one_line_and_leave_nothing(
    tmp_path: Path, answers: list[str], reason: str
) -> None:
    result = cookiecutter_cli(tmp_path, *answers)

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1, result.stderr
    assert reason in errors[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("answer", ["python_version=3.9", "deploy_target=heroku", "use_redis=maybe"])
def test_values_outside_the_choices_are_refused(tmp_path: Path, answer: str) -> None:
    result = cookiecutter_cli(tmp_path, answer)

    assert result.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_socketio_without_redis_is_fine_on_one_host(tmp_path: Path) -> None:
    assert cookiecutter_cli(tmp_path, "deploy_target=docker-compose", "use_redis=no").returncode == 0


def test_every_manifest_path_exists_in_the_template() -> None:
    post = load_hook("post_gen_project")
    groups = (*post.FEATURE_PATHS.values(), *post.REPLACED_PATHS.values(), *post.TARGET_PATHS.values())
    paths = [path for group in groups for path in group]

    assert set(post.FEATURE_PATHS) == set(FEATURES)
    assert set(post.REPLACED_PATHS) <= set(FEATURES)
    assert set(post.TARGET_PATHS) == set(TARGETS)
    assert [path for path in paths if not (TEMPLATE_DIR / path).exists()] == []


def test_a_drifted_manifest_fails_generation_and_leaves_nothing(tmp_path: Path) -> None:
    template = tmp_path / "template"
    shutil.copytree(ROOT, template, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__"))
    hook = template / "hooks" / "post_gen_project.py"
    hook.write_text(hook.read_text().replace('"app/cache.py",', '"app/cache.py",\n        "app/gone.py",', 1))

    result = cookiecutter_cli(tmp_path / "out", template=template)

    assert result.returncode != 0
    assert "app/gone.py" in result.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_literal_template_braces_survive(tmp_path: Path) -> None:
    project = bake(tmp_path)

    assert "${{ github.ref }}" in (project / ".github" / "workflows" / "ci.yml").read_text()


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree of the template committed into a scratch git repository."""
    repo = tmp_path_factory.mktemp("template-repo")
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc")
    shutil.copytree(ROOT, repo, dirs_exist_ok=True, ignore=ignore)
    git = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    run([*git, "init", "-q", "-b", "main"], repo)
    run([*git, "add", "-A"], repo)
    run([*git, "commit", "-q", "-m", "template"], repo)
    return repo
