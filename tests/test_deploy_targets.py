"""The checks that run across every deploy target.

What each target generates (only its own files, clean, with no trace of a removed
feature), the image every container target builds (the Dockerfile lints with
hadolint and builds in layers, its build context, its scripts), the deploy docs
(they render for each variant and name every variable the files set, with no
placeholder secret), the probes (they follow the health model), and the release
and start commands, run the way each platform runs them: the release command
migrates a scratch database on the real PostgreSQL to head, then the start command
serves on the PORT the platform sets and answers the platform's health checks.

Each target's own files are checked in its module, test_deploy_<target>.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shlex
import shutil
import tomllib
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from toolkit.bakery import leftover_jinja
from toolkit.deploy import (
    ALWAYS,
    BIN,
    CONTAINER_TARGETS,
    DEPLOY_FILES,
    TEMPLATE_MARKERS,
    assert_at_head,
    assert_serves_both_families,
    build_context,
    by_address,
    by_kind,
    chart_values,
    compose,
    deploy_paths,
    dockerfile_instructions,
    fresh_database,
    hadolint,
    image_cmd,
    image_healthcheck,
    image_tree,
    param,
    params,
    prod_env,
    railway_graph,
    render_chart,
    render_doc,
    secret_values,
    serving_on,
    shellcheck,
    target_params,
    venv_env,
)
from toolkit.features import ALL_OFF, PLATFORM_WORDS, ROOT, TARGETS, removed_features, traces
from toolkit.platforms import healthcheck_path, launch
from toolkit.processes import free_port, run

# Targets that one file describes (compose.prod.yaml, .railway/railway.py, fly.toml,
# render.yaml): the release-then-serve check below reads their commands from it.
# Cloud Run, Kubernetes and a VM run theirs in their own modules.
ONE_FILE_TARGETS = ("docker-compose", "railway", "fly", "render")
# The targets with a deploy directory of their own, each with every switch on, every
# switch off, and without each service (Socket.IO without Redis is refused on the
# multi-instance targets).
DIRECTORY_TARGETS = ("cloud-run", "kubernetes", "vm")
DIRECTORY_VARIANTS = [
    *(param(f"{target}-all-on", deploy_target=target) for target in DIRECTORY_TARGETS),
    *(param(f"{target}-all-off", deploy_target=target, **ALL_OFF) for target in DIRECTORY_TARGETS),
    *(
        param(f"{target}-no-postgres", deploy_target=target, use_postgres=False, use_auth=False)
        for target in DIRECTORY_TARGETS
    ),
    param("cloud-run-no-redis", deploy_target="cloud-run", use_redis=False, use_socketio=False),
    param("kubernetes-no-redis", deploy_target="kubernetes", use_redis=False, use_socketio=False),
    param("vm-no-redis", deploy_target="vm", use_redis=False),
]


# --- What each target generates ------------------------------------------------------


def hook_manifest() -> dict[str, list[str]]:
    """TARGET_PATHS of the post-generation hook, as the baked project names them."""
    spec = importlib.util.spec_from_file_location("post_gen_manifest", ROOT / "hooks" / "post_gen_project.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifest: dict[str, list[str]] = module.TARGET_PATHS
    assert set(manifest) == set(TARGETS)
    return {
        target: [path.replace("{{cookiecutter.project_slug}}", "my-service") for path in paths]
        for target, paths in manifest.items()
    }


@pytest.mark.parametrize("target", target_params())
def test_only_the_chosen_targets_files_remain(bakery: Any, target: str) -> None:
    project = bakery(deploy_target=target)
    manifest = hook_manifest()

    for path in manifest[target]:
        assert (project / path).exists(), path
    for other, paths in manifest.items():
        for path in paths:
            if other != target and path not in manifest[target]:
                assert not (project / path).exists(), f"{path} of {other} left in a {target} project"
    assert (project / "Dockerfile").exists() == (target in CONTAINER_TARGETS)
    for path in [*ALWAYS, "scripts/migrate", *DEPLOY_FILES[target]]:
        assert (project / path).exists(), path
    # Config as Code is deprecated (Railway stops reading it on 2026-12-01); no Procfile either.
    for stale in ("railway.json", "railway.toml", "Procfile", "docker-compose.yml"):
        assert not (project / stale).exists(), stale
    mine = deploy_paths(project, [*ALWAYS, "scripts/migrate", "Dockerfile", *DEPLOY_FILES[target]])
    leftovers = [
        path
        for path in mine
        if path.exists() and any(marker in path.read_text() for marker in TEMPLATE_MARKERS)
    ]
    assert leftovers == []


@pytest.mark.parametrize("target", target_params())
def test_only_the_chosen_targets_deploy_files_and_server_packages_remain(bakery: Any, target: str) -> None:
    project = bakery(deploy_target=target)

    present = {name for names in DEPLOY_FILES.values() for name in names if (project / name).exists()}
    assert present == set(DEPLOY_FILES[target])
    # gunicorn serves only on a VM: its packages and its config's type check come with it.
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    servers = {
        name
        for name in pyproject["project"]["dependencies"]
        if name.startswith(("gunicorn", "uvicorn-worker"))
    }
    assert bool(servers) == (target == "vm") and len(servers) in {0, 2}
    assert ("gunicorn.conf.py" in pyproject["tool"]["mypy"]["files"]) == (target == "vm")


@pytest.mark.parametrize("answers", params(("docker-compose",), ("bare",)))
def test_without_postgres_nothing_migrates(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)

    assert not (project / "scripts/migrate").exists()
    assert not [path for path in ALWAYS if "migrat" in (project / path).read_text()]
    assert "migrat" not in (project / "Dockerfile").read_text()


def assert_clean_text(project: Path, paths: list[str]) -> None:
    """No template syntax left; every line ends without spaces; one final newline."""
    for path in deploy_paths(project, paths):
        text = path.read_text()
        assert not [line for line in text.splitlines() if line != line.rstrip()], f"trailing spaces in {path}"
        assert text.endswith("\n") and not text.endswith("\n\n"), f"{path} must end with one newline"
    assert [name for name in leftover_jinja(project) if any(name.startswith(p) for p in paths)] == []


@pytest.mark.parametrize("answers", DIRECTORY_VARIANTS)
def test_files_are_clean_and_features_leave_no_trace(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    paths = DEPLOY_FILES[answers["deploy_target"]]

    assert_clean_text(project, paths)
    removed = removed_features(answers)
    found = [
        f"{path.name}: {word}"
        for path in deploy_paths(project, paths)
        for word in traces(path.read_text(), removed, PLATFORM_WORDS)
    ]
    assert found == []
    # The project's own pre-commit check-yaml, with its own exclusions, passes on them.
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    hook = next(hook for repo in config["repos"] for hook in repo["hooks"] if hook["id"] == "check-yaml")
    excluded = re.compile(hook.get("exclude", "(?!)"))
    files = [
        path.relative_to(project).as_posix()
        for name in paths
        for path in ([project / name] if (project / name).is_file() else (project / name).rglob("*"))
        if path.suffix in {".yaml", ".yml"}
    ]
    checked = [name for name in files if not excluded.search(name)]
    if answers["deploy_target"] == "kubernetes":
        assert len(checked) == 2  # Chart.yaml and values.yaml; the templates are Helm's
    if checked:
        run([BIN / "check-yaml", *hook.get("args", []), *checked], project)


@pytest.mark.parametrize("answers", params(ONE_FILE_TARGETS, ("no-redis", "bare")))
def test_a_removed_feature_leaves_no_trace_in_the_deploy_files(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    target = answers["deploy_target"]
    for path in deploy_paths(project, [*ALWAYS, "Dockerfile", *DEPLOY_FILES[target]]):
        assert traces(path.read_text(), removed_features(answers)) == [], path


# --- The image every container target builds ---------------------------------------


@pytest.mark.parametrize(
    "answers",
    [
        pytest.param({"deploy_target": "docker-compose", "python_version": "3.13"}, id="python-3.13"),
        pytest.param({"deploy_target": "vm", "python_version": "3.11"}, id="vm-python-3.11"),
    ],
)
def test_images_use_the_chosen_python(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    base = f"FROM python:{answers['python_version']}-slim"

    if (project / "Dockerfile").exists():
        froms = [
            f"FROM {arguments}"
            for keyword, arguments in dockerfile_instructions(project)
            if keyword == "FROM"
        ]
        assert len(froms) == 2 and all(line.startswith(base) for line in froms)
    else:
        # Without a Dockerfile, the development image is the one inlined in compose.yaml.
        assert base in (project / "compose.yaml").read_text()


@pytest.mark.parametrize("answers", params(ONE_FILE_TARGETS))
def test_dockerfile_lints_and_builds_in_layers(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    hadolint(project / "Dockerfile")
    steps = dockerfile_instructions(project)
    keywords = [keyword for keyword, _ in steps]

    froms = [arguments for keyword, arguments in steps if keyword == "FROM"]
    assert len(froms) == 2, "multi-stage"
    assert all(re.fullmatch(r"python:3\.1\d-slim AS \w+", line) for line in froms)
    # Dependencies in their own cached layer: only pyproject.toml (and uv.lock) come before them.
    first_copy = keywords.index("COPY")
    assert steps[first_copy][1] == "pyproject.toml uv.lock* ./"
    install = steps[first_copy + 1]
    assert install[0] == "RUN" and "--no-install-project" in install[1]
    assert steps[first_copy + 2] == ("COPY", ". .")
    assert steps[first_copy + 3][1].startswith("python -m compileall")
    runtime = steps[keywords.index("FROM", 1) :]
    user = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert user and user[0].split(":")[0].isdigit() and int(user[0].split(":")[0]) > 0, (
        "numeric non-root user"
    )
    assert ("ENV" in keywords) and any(
        "PORT=8000" in arguments for keyword, arguments in runtime if keyword == "ENV"
    )
    assert ("EXPOSE", "8000") in runtime
    healthcheck = image_healthcheck(project).command
    assert healthcheck[0] == "python" and "/health" in healthcheck[-1]
    assert not [step for step in steps if re.search(r"\b(curl|wget)\b", step[1])], "no curl in the image"
    assert image_cmd(project) == ["scripts/serve"]


@pytest.mark.parametrize("answers", params(("docker-compose",), ("full", "bare")))
def test_build_context_holds_what_the_image_runs_and_no_secrets(
    bakery: Any, venv: Path, tmp_path: Path, answers: dict[str, Any]
) -> None:
    project = shutil.copytree(bakery(**answers), tmp_path / "project")
    (project / ".env").write_text("SECRET_KEY=do-not-ship\n")
    (project / "local.db").write_text("")
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / ".venv" / "bin" / "python").write_text("")
    (project / "app" / "__pycache__").mkdir(exist_ok=True)
    (project / "app" / "__pycache__" / "main.cpython-312.pyc").write_text("")

    sent = build_context(project)

    needed = ["pyproject.toml", "app/main.py", "app/settings.py", "scripts/serve"]
    if answers.get("use_postgres", True):
        needed += ["alembic.ini", "migrations/env.py", "scripts/migrate"]
        assert [path for path in sent if path.startswith("migrations/versions/")]
    assert set(needed) <= set(sent)
    assert not [
        path for path in sent if path.startswith(("tests/", ".venv/", ".git")) or "__pycache__" in path
    ]
    assert ".env" not in sent and "local.db" not in sent and "compose.yaml" not in sent
    # The build stage's bytecode step works on that tree.
    tree = image_tree(project, tmp_path / "image")
    compile_step = next(
        arguments for keyword, arguments in dockerfile_instructions(project) if "compileall" in arguments
    )
    run([venv / "bin" / "python", *shlex.split(compile_step)[1:]], tree)
    assert list((tree / "app" / "__pycache__").glob("main.cpython-*.pyc"))


@pytest.mark.parametrize("answers", params(("docker-compose",), ("full", "bare")))
def test_scripts_are_executable_and_shellcheck_clean(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    folders = (project / "scripts", project / "deploy" / "compose", project / "deploy")
    scripts = sorted(path for folder in folders for path in folder.iterdir() if path.is_file())
    names = {str(script.relative_to(project)) for script in scripts}
    ci = {"deploy/check-image", "deploy/image-requirements"}
    assert names == {"scripts/serve", "deploy/compose/release", *ci} | (
        {"scripts/migrate", "deploy/compose/backup", "deploy/compose/restore"}
        if answers.get("use_postgres", True)
        else set()
    )

    shellcheck(*scripts)
    for script in scripts:
        assert os.access(script, os.X_OK), script
        # What runs inside images (python:slim's, the postgres image's for backups) is POSIX sh.
        inside = script.parent.name == "scripts" or script.name == "backup"
        assert script.read_text().startswith("#!/bin/sh\n" if inside else "#!/usr/bin/env bash\n"), script


@pytest.mark.parametrize("answers", params(("docker-compose",), ("bare",)))
def test_serve_listens_on_ipv4_and_ipv6_with_several_workers(
    bakery: Any, venv: Path, tmp_path: Path, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    for workers in ("1", "2"):
        port = free_port()
        env = venv_env(venv, PORT=str(port), WEB_CONCURRENCY=workers)
        with serving_on(
            ["scripts/serve"], project, env, port, "127.0.0.1", tmp_path / f"serve-{workers}.log"
        ):
            assert_serves_both_families(port, "localhost")
    assert "Started parent process" in (tmp_path / "serve-2.log").read_text()


def test_every_start_command_uses_the_one_asgi_entry(bakery: Any) -> None:
    stale = re.compile(r"(?<![\w.])main:(app|socket_app)\b|app\.main:(?!app\b)")
    for target in TARGETS:
        project = bakery(deploy_target=target)
        for path in deploy_paths(project, [*ALWAYS, "Dockerfile", "scripts/migrate", *DEPLOY_FILES[target]]):
            if path.exists():
                assert not stale.search(path.read_text()), f"{target}: {path.relative_to(project)}"
        assert "app.main:app" in (project / "scripts" / "serve").read_text()


# --- The deploy docs -------------------------------------------------------------------


def declared_variables(project: Path, target: str, home: Path) -> set[str]:
    """Every variable a target's files set or ask for."""
    if target == "docker-compose":
        text = (project / "compose.prod.yaml").read_text()
        names = set(re.findall(r"\$\{([A-Z_]+)", text))
        env = prod_env({"use_postgres": "POSTGRES_PASSWORD" in names, "use_redis": "REDIS_PASSWORD" in names})
        app = compose(project, "compose.prod.yaml", env, home)["services"]["app"]
        return names | set(app["environment"])
    if target == "railway":
        return set(by_address(railway_graph(project))["service.api"]["variables"])
    if target == "fly":
        return set(tomllib.loads((project / "fly.toml").read_text())["env"])
    if target == "render":
        blueprint = yaml.safe_load((project / "render.yaml").read_text())
        return {var["key"] for service in blueprint["services"] for var in service.get("envVars", [])}
    return set(re.findall(r"\$\{([A-Z_]+)", (project / "compose.yaml").read_text()))


@pytest.mark.parametrize("answers", [*params(ONE_FILE_TARGETS), *params(("vm",), ("full", "bare"))])
def test_docs_render_and_name_every_variable_the_files_set(
    bakery: Any, tmp_path: Path, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    target = answers["deploy_target"]
    docs = {"deploy-local-compose.md": "local"}
    if target != "vm":
        docs[f"deploy-{target}.md"] = target

    for name, kind in docs.items():
        text = render_doc(name, **answers)
        assert not [marker for marker in TEMPLATE_MARKERS if marker in text], name
        assert "\n\n\n" not in text, f"{name}: a removed feature left blank lines"
        missing = {var for var in declared_variables(project, kind, tmp_path) if f"`{var}" not in text}
        assert missing == set(), f"{name} does not say how to set {sorted(missing)}"
        assert traces(text, removed_features(answers)) == [], name


@pytest.mark.parametrize("answers", DIRECTORY_VARIANTS)
def test_deploy_docs_render_for_each_variant(bakery: Any, answers: dict[str, Any]) -> None:
    text = render_doc(f"deploy-{answers['deploy_target']}.md", **answers)
    project = bakery(**answers)

    assert not any(marker in text for marker in TEMPLATE_MARKERS)
    assert [line for line in text.splitlines() if line != line.rstrip()] == []
    assert "\n\n\n" not in text and text.endswith("\n")
    assert traces(text, removed_features(answers), PLATFORM_WORDS) == []
    # Numbered steps count 1, 2, 3... in each section, whatever the switches remove.
    sections = re.split(r"^### ", text, flags=re.MULTILINE)
    counts = [[int(number) for number in re.findall(r"^(\d+)\. ", part, re.MULTILINE)] for part in sections]
    assert [steps for steps in counts if steps != list(range(1, len(steps) + 1))] == []
    assert max(len(steps) for steps in counts) >= 4
    # Every project file the doc names exists in the project baked with the same answers.
    named = set(re.findall(r"`((?:deploy/|scripts/|gunicorn\.conf)[^`\s]*)`", text))
    assert named
    assert sorted(name for name in named if not (project / name).exists()) == []


# Values a step could ask a user to store that can never work: sentry-sdk raises
# BadDsn on the Sentry one and the service crash-loops; the others are passwords,
# hosts and URLs left for the user to fill in.
PLACEHOLDER_SECRETS = [
    r"https://KEY@",
    r"ingest\.sentry\.io/PROJECT",
    r"\bKEY@ORG\b",
    r"\bUSER:PASSWORD\b",
    r":PASSWORD@",
    r"A-LONG-RANDOM",
    r"redis://HOST\b",
    r"(postgres(ql)?(\+asyncpg)?|redis)://\.\.\.",
    r"=<[^>\n]*>",
    r"\bchange-?me\b",
]


def placeholder_secrets(text: str) -> list[str]:
    return [match.group(0) for pattern in PLACEHOLDER_SECRETS for match in re.finditer(pattern, text)]


def code_blocks(markdown: str) -> str:
    """The commands of a README: its fenced blocks and inline code."""
    fenced = re.findall(r"```[a-z]*\n(.*?)```", markdown, re.DOTALL)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", markdown, flags=re.DOTALL))
    return "\n".join([*fenced, *inline])


@pytest.mark.parametrize("target", target_params())
def test_no_step_or_file_holds_a_placeholder_secret(bakery: Any, target: str) -> None:
    project = bakery(deploy_target=target)
    commands = code_blocks(render_doc(f"deploy-{target}.md", deploy_target=target))
    files = deploy_paths(project, [*DEPLOY_FILES[target], "scripts", "Dockerfile", "compose.yaml"])

    assert placeholder_secrets(commands) == [], f"deploy-{target}.md"
    for path in files:
        if path.is_file():
            assert placeholder_secrets(path.read_text()) == [], path.relative_to(project)


def test_the_placeholder_check_finds_the_ones_that_broke_deploys() -> None:
    steps = (
        "```bash\nprintf '%s' 'https://KEY@ORG.ingest.sentry.io/PROJECT' | gcloud secrets create x\n```\n"
        "`fly secrets set REDIS_URL=<the redis:// URL it printed>`\n"
    )
    assert len(placeholder_secrets(code_blocks(steps))) == 4
    assert placeholder_secrets("DATABASE_URL=postgresql://app:PASSWORD@127.0.0.1/app") == [":PASSWORD@"]
    assert placeholder_secrets("SECRET_KEY=$(openssl rand -hex 32)") == []


# --- Probes ------------------------------------------------------------------------------

LIVENESS, READINESS = "/health", "/health/ready"
# The readiness route's own checks give up after HEALTH_CHECK_TIMEOUT (1 s by default).
HEALTH_CHECK_TIMEOUT = 1


def container_probes(container: dict[str, Any]) -> dict[str, tuple[str, float | None]]:
    """The probes of a Kubernetes-style container spec (Cloud Run's too)."""
    return {
        kind: (container[f"{kind}Probe"]["httpGet"]["path"], container[f"{kind}Probe"]["timeoutSeconds"])
        for kind in ("startup", "readiness", "liveness")
        if f"{kind}Probe" in container
    }


def probes(project: Path, target: str) -> dict[str, tuple[str, float | None]]:
    """Each probe a target's files declare: kind -> (path, timeout in seconds, if set)."""
    if target == "kubernetes":
        deployment = by_kind(render_chart(project, chart_values(**secret_values({}))))["Deployment"]
        return container_probes(deployment["spec"]["template"]["spec"]["containers"][0])
    if target == "cloud-run":
        service = yaml.safe_load((project / "deploy" / "cloud-run" / "service.yaml").read_text())
        return container_probes(service["spec"]["template"]["spec"]["containers"][0])
    if target == "fly":
        checks = tomllib.loads((project / "fly.toml").read_text())["http_service"]["checks"]
        found = {}
        for check in checks:
            kind = "readiness" if check["path"] == READINESS else "liveness"
            found[kind] = (check["path"], float(check["timeout"].removesuffix("s")))
        return found
    if target == "render":
        web = yaml.safe_load((project / "render.yaml").read_text())["services"][0]
        # Render sets its health check's timeout itself.
        return {"liveness": (web["healthCheckPath"], None)}
    if target == "railway":
        deploy = by_address(railway_graph(project))["service.api"]["deploy"]
        # Railway's health check gates a deploy only: readiness, with its whole timeout.
        return {"readiness": (deploy["healthcheckPath"], float(deploy["healthcheckTimeout"]))}
    if target == "docker-compose":
        timeout = float(image_healthcheck(project).options["timeout"].removesuffix("s"))
        return {"liveness": (healthcheck_path(project), timeout)}
    # install.sh and restore wait for each server they start with deploy/vm/wait-healthy.
    wait = (project / "deploy" / "vm" / "wait-healthy").read_text()
    path = re.search(r'url = f"http://localhost:\{port\}(/health[^"]*)"', wait)
    deadline = re.search(r"deadline = time\.monotonic\(\) \+ (\d+)\n", wait)
    assert path and deadline
    return {"startup": (path.group(1), float(deadline.group(1)))}


@pytest.mark.parametrize("target", target_params())
def test_every_targets_probes_follow_the_health_model(bakery: Any, target: str) -> None:
    """Liveness and startup never depend on the database (only the process answers);
    readiness, where the platform has it, is /health/ready, which fails only without
    the database; every probe waits longer than the readiness checks do."""
    found = probes(bakery(deploy_target=target), target)

    assert found, target
    for kind, (path, timeout) in found.items():
        assert path == (READINESS if kind == "readiness" else LIVENESS), (target, kind)
        assert timeout is None or timeout > HEALTH_CHECK_TIMEOUT, (target, kind, timeout)
    if target in {"kubernetes", "cloud-run"}:
        assert "startup" in found and "liveness" in found


# --- Release, then serve, the way each platform does ------------------------------------


@pytest.mark.parametrize("answers", params(ONE_FILE_TARGETS, ("full", "bare")))
def test_release_then_serve_like_the_platform(
    bakery: Any,
    venv: Path,
    services: dict[str, str],
    tmp_path: Path,
    answers: dict[str, Any],
) -> None:
    project = bakery(**answers)
    target = answers["deploy_target"]
    postgres = answers.get("use_postgres", True)
    tree = image_tree(project, tmp_path / "app")
    database_context = fresh_database(venv, project, services) if postgres else contextlib.nullcontext("")
    with database_context as database:
        plan = launch(target, project, database, services["REDIS_URL"], tmp_path, answers)
        env, host = plan.serve.env, plan.health_host
        assert env["ENVIRONMENT"] == "production"
        assert bool(plan.release) == postgres
        port = free_port()
        # The platform sets PORT (fly.toml's [env] names 8080); here a free port stands in.
        platform_env = venv_env(venv, **(env | {"PORT": str(port)}))

        for process in plan.release:
            assert process.command, "a release runs a command of its own, not the server"
            run(process.command, tree, platform_env)
        if postgres:
            assert_at_head(venv, project, database)

        start = plan.serve.command or image_cmd(project)
        with serving_on(start, tree, platform_env, port, host, tmp_path / "server.log") as base:
            checked = httpx.get(f"{base}{plan.health}", headers={"Host": host}, timeout=5)
            assert checked.status_code == 200, checked.text
            assert_serves_both_families(port, host)
            assert (
                httpx.get(f"{base}/health", headers={"Host": host}, timeout=5).json()["environment"]
                == "production"
            )
            if target == "docker-compose":
                # The image's HEALTHCHECK, run inside the container as Docker runs it.
                run(image_healthcheck(project).command, tree, platform_env, timeout=10)
            if "TRUSTED_HOSTS" in env:
                # Probes pass whatever the Host; every other route checks it.
                stranger = httpx.get(f"{base}/", headers={"Host": "evil.example"}, timeout=5)
                assert stranger.status_code == 400
            if postgres:
                ready = httpx.get(f"{base}/health/ready", headers={"Host": host}, timeout=5)
                assert ready.status_code == 200 and "database" in ready.json()["checks"], ready.text
