"""The generated GitHub Actions workflows: every action pinned to a commit, least
privilege on every job, nothing for zizmor to report (offline), Dependabot keeping the
pins current, and a deploy job per target that runs the README's own deploy command.

Run for real: the VM's audit job and the SSH deploy job (against a local OpenSSH server
and git checkout) here, the image job in tests/test_image.py. Not run: GitHub's runners,
and the deploy calls that need a provider (flyctl, gcloud, helm against a cluster).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from toolkit import workflows
from toolkit.deploy import docker_config, prod_env, render_chart
from toolkit.features import ALL_OFF, TARGETS
from toolkit.processes import clean_env, free_port, git, run

ZIZMOR = Path(sys.executable).parent / "zizmor"
# Each target with every feature on, then off: the two ends of what the workflow renders.
VARIANTS = [
    pytest.param({"deploy_target": target, **features}, id=f"{target}-{label}")
    for label, features in (("all-on", {}), ("all-off", ALL_OFF))
    for target in TARGETS
]
# A `uses:` line pinned to a full commit, with the version it is in a comment.
PINNED = re.compile(r"^\s*(- )?uses: (?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40}) # v?\d+(\.\d+)*$")
# Targets whose platform deploys by itself once the checks pass on main.
SELF_DEPLOYING = {"railway", "render"}
# Deploy settings with a default when unset.
OPTIONAL_SETTINGS = {"DEPLOY_PATH", "DEPLOY_PORT", "GCP_REGION"}
# The permissions each deploy job asks for.
DEPLOY_PERMISSIONS = {
    "docker-compose": {},
    "vm": {},
    "fly": {"contents": "read"},
    "cloud-run": {"contents": "read", "id-token": "write"},
    "kubernetes": {"contents": "read", "packages": "write"},
}


def workflow_files(project: Path) -> list[Path]:
    return sorted((project / ".github" / "workflows").glob("*.yml"))


def ci(project: Path) -> dict[str, Any]:
    workflow: dict[str, Any] = yaml.safe_load((project / ".github" / "workflows" / "ci.yml").read_text())
    return workflow


def zizmor(path: Path) -> subprocess.CompletedProcess[str]:
    argv = [ZIZMOR, "--offline", "--no-progress", "--color", "never", path]
    return run(argv, path, clean_env(), check=False)


def deploy_run(project: Path) -> str:
    """The `run:` script of the deploy job's last step: the deploy itself."""
    script: str = ci(project)["jobs"]["deploy"]["steps"][-1]["run"]
    return script


def readme_section(project: Path, heading: str) -> str:
    """The README's `### heading` section, its whitespace collapsed."""
    readme = (project / "README.md").read_text()
    start = readme.index(f"\n### {heading}\n")
    end = readme.find("\n### ", start + 1)
    return " ".join(readme[start : end if end != -1 else None].split())


@pytest.mark.parametrize("answers", VARIANTS)
def test_every_action_is_pinned_to_a_commit_with_its_version_beside_it(
    bakery: Any, answers: dict[str, Any]
) -> None:
    lines = [
        line
        for path in workflow_files(bakery(**answers))
        for line in path.read_text().splitlines()
        if re.match(r"\s*(- )?uses:", line)
    ]

    assert len(lines) >= 4
    assert [line for line in lines if not PINNED.match(line)] == []


def test_each_action_is_pinned_to_one_commit_across_every_workflow(bakery: Any) -> None:
    pins: dict[str, set[str]] = {}
    for target in TARGETS:
        for path in workflow_files(bakery(deploy_target=target)):
            for line in path.read_text().splitlines():
                if match := PINNED.match(line):
                    pins.setdefault(match["action"], set()).add(line.split("@", 1)[1])
    assert {action: lines for action, lines in pins.items() if len(lines) > 1} == {}
    assert {"actions/checkout", "astral-sh/setup-uv", "actions/upload-artifact"} <= pins.keys()


@pytest.mark.parametrize("answers", VARIANTS)
def test_zizmor_reports_nothing(bakery: Any, answers: dict[str, Any]) -> None:
    result = zizmor(bakery(**answers) / ".github")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout


def test_zizmor_reports_a_movable_tag_and_a_persisted_token(tmp_path: Path) -> None:
    """Guards the test above: the two habits this workflow drops are findings."""
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "ci.yml").write_text(
        "on: push\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-latest\n"
        "    permissions:\n      contents: read\n    steps:\n      - uses: actions/checkout@v5\n"
    )
    result = zizmor(tmp_path / ".github")

    assert result.returncode >= 10, result.stdout
    assert "unpinned-uses" in result.stdout and "artipacked" in result.stdout


@pytest.mark.parametrize("answers", VARIANTS)
def test_every_job_asks_for_only_the_permissions_it_uses(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    target = answers["deploy_target"]

    for path in workflow_files(project):
        workflow = yaml.safe_load(path.read_text())
        assert workflow["permissions"] == {}, f"{path.name}: nothing by default"
        for name, job in workflow["jobs"].items():
            expected = DEPLOY_PERMISSIONS[target] if name == "deploy" else {"contents": "read"}
            assert job["permissions"] == expected, f"{path.name}: {name}"
            for step in job["steps"]:
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, name


@pytest.mark.parametrize("answers", VARIANTS)
def test_the_image_is_built_started_and_audited_on_every_push(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    workflow = ci(project)
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    checked = "audit" if answers["deploy_target"] == "vm" else "image"

    assert set(triggers) == {"push", "pull_request"} and triggers["pull_request"] is None
    commands = [step.get("run", "") for step in workflow["jobs"][checked]["steps"]]
    if checked == "image":
        assert (project / "Dockerfile").exists()
        assert "docker build --tag my-service:ci ." in commands
        assert "deploy/check-image my-service:ci" in commands
    else:
        assert not (project / "Dockerfile").exists() and not (project / "deploy" / "check-image").exists()
    assert any(command.startswith("uvx pip-audit@") and " --strict " in command for command in commands)
    assert any(command.startswith("uvx --from cyclonedx-bom@") for command in commands)
    steps = workflow["jobs"][checked]["steps"]
    (upload,) = [step for step in steps if step.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["with"]["path"].split() == ["sbom.cdx.json", "requirements.txt", "pip-audit.json"]
    assert upload["if"] == "${{ !cancelled() }}", "the report of a failed audit is kept"


@pytest.mark.parametrize("answers", VARIANTS)
def test_dependabot_proposes_new_pins_for_actions_python_and_the_base_image(
    bakery: Any, answers: dict[str, Any]
) -> None:
    project = bakery(**answers)
    config = yaml.safe_load((project / ".github" / "dependabot.yml").read_text())
    updates = {update["package-ecosystem"]: update for update in config["updates"]}

    expected = {"github-actions", "uv"} | ({"docker"} if (project / "Dockerfile").exists() else set())
    assert config["version"] == 2 and set(updates) == expected
    for update in updates.values():
        assert update["directory"] == "/" and update["cooldown"]["default-days"] >= 7, update


# --- Deploying ----------------------------------------------------------------------------------


@pytest.mark.parametrize("answers", VARIANTS)
def test_main_deploys_only_after_every_check_passed(bakery: Any, answers: dict[str, Any]) -> None:
    project = bakery(**answers)
    jobs = ci(project)["jobs"]
    target = answers["deploy_target"]
    guide = readme_section(project, "Deploying from GitHub Actions")

    if target in SELF_DEPLOYING:
        assert "deploy" not in jobs
        setting = "After CI Checks Pass" if target == "render" else "Wait for CI"
        assert setting in guide
        return
    deploy = jobs["deploy"]
    assert deploy["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert set(deploy["needs"]) == set(jobs) - {"deploy"}
    assert deploy["environment"] == "production" and "required reviewers" in guide
    assert deploy["concurrency"] == {"group": "deploy-production", "cancel-in-progress": False}
    # Every secret and variable the job reads is named in the README, with how to make it,
    # and the first step stops the job on a missing one, but for those with a default.
    text = yaml.safe_dump(deploy)
    named = set(re.findall(r"\$\{\{ (?:secrets|vars)\.(\w+) \}\}", text))
    assert named and [name for name in sorted(named) if f"`{name}`" not in guide] == []
    check = deploy["steps"][0]
    assert check["name"] == "Check the deploy settings" and set(check["env"]) <= named
    assert named - set(check["env"]) <= OPTIONAL_SETTINGS


def readme_commands(project: Path) -> list[str]:
    """Every line of the README's bash blocks, continuations joined."""
    readme = (project / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.DOTALL)
    return [line.strip() for block in blocks for line in re.sub(r"\\\n\s*", "", block).splitlines()]


@pytest.mark.parametrize(
    ("target", "documented", "remote"),
    [
        ("docker-compose", "deploy/compose/release", "deploy/compose/release"),
        # The absolute path the README's sudoers line allows.
        ("vm", "sudo deploy/vm/install.sh", 'sudo --non-interactive "$PWD/deploy/vm/install.sh"'),
    ],
)
def test_a_host_deploy_runs_the_readmes_release_command_over_ssh(
    bakery: Any, target: str, documented: str, remote: str
) -> None:
    project = bakery(deploy_target=target)
    script = deploy_run(project)

    assert documented in readme_commands(project)
    command = re.search(r"git merge --quiet --ff-only %q && (.*)' \\", script)
    assert command and command.group(1) == remote, script
    # The host key is pinned: no first-use trust, no prompt.
    assert "StrictHostKeyChecking=yes" in script and "BatchMode=yes" in script
    if target == "vm":
        assert "NOPASSWD: $HOME/my-service/deploy/vm/install.sh" in readme_section(
            project, "Deploying from GitHub Actions"
        )


def test_the_vm_audit_job_runs_here_as_the_workflow_writes_it(bakery: Any, tmp_path: Path) -> None:
    """Its `run:` steps in order (toolkit.workflows): uv resolves the runtime
    dependencies, the audit collects them, the SBOM lists them."""
    project = shutil.copytree(bakery(deploy_target="vm"), tmp_path / "project")

    steps = workflows.run_job(project, "audit", {})

    packages = (project / "requirements.txt").read_text().splitlines()
    assert "fastapi==" in "\n".join(packages) and not [p for p in packages if p.startswith("my-service")]
    audit = next(step for step in steps if step.command.startswith(workflows.AUDIT))
    assert f"Dry run: would have audited {len(packages)} packages" in audit.result.stderr
    sbom = json.loads((project / "sbom.cdx.json").read_text())
    assert len(sbom["components"]) == len(packages)
    assert sbom["metadata"]["component"]["name"] == "my-service"


def test_fly_deploys_as_the_readme_does_with_fly_building_the_image(bakery: Any) -> None:
    for answers in ({}, ALL_OFF, {"use_redis": False}):
        project = bakery(deploy_target="fly", **answers)
        deploy = deploy_run(project).splitlines()[-1]
        # The README's deploy step, the first `fly deploy` (a rollback names an image later).
        documented = next(line for line in readme_commands(project) if line.startswith("fly deploy"))
        assert documented == deploy.replace("flyctl deploy --remote-only", "fly deploy"), answers


def test_cloud_run_deploys_with_the_readmes_script_and_no_key_file(bakery: Any) -> None:
    for answers in ({}, ALL_OFF):
        project = bakery(deploy_target="cloud-run", **answers)
        deploy = ci(project)["jobs"]["deploy"]
        (auth,) = [step for step in deploy["steps"] if "auth" in step.get("uses", "")]
        script = deploy["steps"][-1]
        assert auth["uses"].startswith("google-github-actions/auth@")
        assert set(auth["with"]) == {"workload_identity_provider", "service_account"}
        assert script["run"] == "deploy/cloud-run/deploy.sh"
        # Only variables deploy.sh documents in its header.
        header = (project / "deploy" / "cloud-run" / "deploy.sh").read_text().split("set -euo")[0]
        documented = set(re.findall(r"^#   ([A-Z_]+)\s", header, re.MULTILINE))
        assert set(script["env"]) <= documented and set(script["env"]) >= {"PROJECT_ID", "REGION"}
        assert ("SQL_INSTANCE" in script["env"]) == answers.get("use_postgres", True)
        # The sign-in's credentials file, in the checkout, is not uploaded with the sources.
        assert "gha-creds-*.json" in (project / ".gitignore").read_text().splitlines()


def test_kubernetes_deploys_the_pushed_image_with_the_readmes_helm_command(bakery: Any) -> None:
    project = bakery(deploy_target="kubernetes")
    script = deploy_run(project)
    command = shlex.split(re.sub(r"\\\n\s*", "", script[script.index("helm upgrade") :]))
    (documented,) = [line for line in readme_commands(project) if line.startswith("helm upgrade")]

    # The README's command, with the image the job pushed.
    documented_argv = shlex.split(documented)
    assert command[: len(documented_argv)] == documented_argv
    extra = command[len(documented_argv) :]
    assert extra == [
        "--set-string",
        "image.repository=ghcr.io/${GITHUB_REPOSITORY,,}",
        "--set-string",
        "image.tag=$GITHUB_SHA",
    ]
    steps = ci(project)["jobs"]["deploy"]["steps"]
    (build,) = [step["run"] for step in steps if step.get("name") == "Build the image and push it to ghcr.io"]
    pushed = re.search(r'image="(.*)"', build)
    assert "docker push" in build
    assert pushed and pushed.group(1) == "ghcr.io/${GITHUB_REPOSITORY,,}:$GITHUB_SHA"
    # Those values name the image the Deployment and the migration Job run.
    values = yaml.safe_load((project / "deploy" / "helm" / "my-service" / "values.yaml").read_text())
    values["image"].update(repository="ghcr.io/acme/my-service", tag="0123abc")
    values["secret"]["existingSecret"] = "my-service-secrets"
    manifests = render_chart(project, values)
    images = {
        container["image"]
        for manifest in manifests
        if manifest["kind"] in {"Deployment", "Job"}
        for container in manifest["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"ghcr.io/acme/my-service:0123abc"}


# --- The SSH deploy, run for real -----------------------------------------------------------------


@dataclass
class SshServer:
    """A real OpenSSH server on 127.0.0.1 that lets this user in with one key, and the
    deploy job's secrets and variables for it."""

    port: int
    user: str
    private_key: str
    known_hosts: str
    logs: Path

    def contexts(self, checkout: Path, known_hosts: str | None = None) -> dict[str, dict[str, str]]:
        return {
            "secrets": {
                "DEPLOY_SSH_KEY": self.private_key,
                "DEPLOY_SSH_KNOWN_HOSTS": self.known_hosts if known_hosts is None else known_hosts,
            },
            "vars": {
                "DEPLOY_HOST": "127.0.0.1",
                "DEPLOY_USER": self.user,
                "DEPLOY_PATH": str(checkout),
                "DEPLOY_PORT": str(self.port),
            },
        }


def keypair(path: Path) -> tuple[str, str]:
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], path.parent, clean_env())
    return path.read_text(), path.with_suffix(".pub").read_text().strip()


@pytest.fixture
def ssh_server(tmp_path: Path) -> Iterator[SshServer]:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    reason = None if Path(sshd).exists() else "sshd not found: apt-get install openssh-server"
    if reason is None and os.geteuid() != 0:
        reason = "sshd must run as root to log a user in"
    if reason:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)
    keys = tmp_path / "ssh"
    keys.mkdir()
    _, host_public = keypair(keys / "host")
    client_private, client_public = keypair(keys / "client")
    (keys / "authorized_keys").write_text(client_public + "\n")
    port = free_port()
    config = keys / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\nPidFile none\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        # A host with Compose v2 but no Docker daemon: the release command runs until
        # its first call to the daemon.
        f"SetEnv DOCKER_CONFIG={docker_config(tmp_path)} DOCKER_HOST=unix:///nonexistent/docker.sock\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    logs = keys / "sshd.log"
    with logs.open("w") as log:
        server = subprocess.Popen([sshd, "-D", "-e", "-f", config], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, server)
        yield SshServer(port, getpass.getuser(), client_private, f"[127.0.0.1]:{port} {host_public}\n", logs)
    finally:
        server.terminate()
        server.wait(timeout=10)


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "sshd exited"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def head(repository: Path) -> str:
    return git(repository, "rev-parse", "HEAD").stdout.strip()


@dataclass
class Hosted:
    """The baked project pushed to an `origin`, a server's clone of it on `main`, and
    the commit CI passed: one more, pushed to `main`."""

    project: Path
    checkout: Path
    passed: str


@pytest.fixture
def hosted(bakery: Any, tmp_path: Path) -> Hosted:
    project = shutil.copytree(bakery(deploy_target="docker-compose"), tmp_path / "project")
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch=main", "origin.git")
    git(project, "init", "--quiet", "--initial-branch=main")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "--message", "first")
    git(project, "remote", "add", "origin", str(tmp_path / "origin.git"))
    git(project, "push", "--quiet", "origin", "main")
    git(tmp_path, "clone", "--quiet", str(tmp_path / "origin.git"), "server")
    # The settings the README's step 3 writes on the server, outside git.
    settings = "".join(f"{name}={value}\n" for name, value in prod_env({}).items())
    (tmp_path / "server" / ".env").write_text(settings)
    (project / "CHANGELOG.md").write_text("A change CI passed.\n")
    git(project, "add", "--all")
    git(project, "commit", "--quiet", "--message", "second")
    git(project, "push", "--quiet", "origin", "main")
    return Hosted(project, tmp_path / "server", head(project))


def deploy_over_ssh(
    hosted: Hosted, server: SshServer, tmp_path: Path, known_hosts: str | None = None
) -> workflows.Step:
    runner = tmp_path / "runner"
    runner.mkdir(exist_ok=True)
    check, step = workflows.run_job(
        hosted.project,
        "deploy",
        {},
        {"RUNNER_TEMP": str(runner), "GITHUB_SHA": hosted.passed},
        server.contexts(hosted.checkout, known_hosts),
        check=False,
    )
    assert check.result.returncode == 0, check.result.stdout
    return step


def test_the_ssh_deploy_moves_the_servers_checkout_to_the_commit_and_runs_the_release(
    ssh_server: SshServer, hosted: Hosted, tmp_path: Path
) -> None:
    step = deploy_over_ssh(hosted, ssh_server, tmp_path)

    assert head(hosted.checkout) == hosted.passed
    branch = git(hosted.checkout, "branch", "--show-current").stdout.strip()
    assert branch == "main", "still on main: `git pull` works"
    # deploy/compose/release ran in that checkout: its first docker call found no daemon.
    assert step.result.returncode != 0
    assert "Cannot connect to the Docker daemon at unix:///nonexistent/docker.sock" in step.result.stderr, (
        step.result.stderr + ssh_server.logs.read_text()
    )


def test_the_deploy_stops_at_once_naming_each_setting_that_is_missing(
    ssh_server: SshServer, hosted: Hosted, tmp_path: Path
) -> None:
    contexts = ssh_server.contexts(hosted.checkout)
    del contexts["secrets"]["DEPLOY_SSH_KEY"], contexts["vars"]["DEPLOY_HOST"]

    (check,) = workflows.run_job(hosted.project, "deploy", {}, {}, contexts, check=False)

    assert check.result.returncode == 1
    assert check.result.stdout == (
        "::error::Set DEPLOY_SSH_KEY DEPLOY_HOST in the production environment: "
        "see 'Deploying from GitHub Actions' in the README.\n"
    )
    assert head(hosted.checkout) != hosted.passed


def test_the_ssh_deploy_refuses_a_server_whose_host_key_is_not_the_pinned_one(
    ssh_server: SshServer, hosted: Hosted, tmp_path: Path
) -> None:
    _, other = keypair(tmp_path / "other")
    step = deploy_over_ssh(hosted, ssh_server, tmp_path, f"[127.0.0.1]:{ssh_server.port} {other}\n")

    assert step.result.returncode == 255
    assert "Host key verification failed." in step.result.stderr
    assert head(hosted.checkout) != hosted.passed


def test_the_ssh_deploy_stops_before_the_release_when_the_server_has_a_commit_of_its_own(
    ssh_server: SshServer, hosted: Hosted, tmp_path: Path
) -> None:
    (hosted.checkout / "hotfix.txt").write_text("made on the server\n")
    git(hosted.checkout, "add", "hotfix.txt")
    git(hosted.checkout, "commit", "--quiet", "--message", "hotfix")
    kept = head(hosted.checkout)

    step = deploy_over_ssh(hosted, ssh_server, tmp_path)

    assert step.result.returncode != 0
    assert "Not possible to fast-forward" in step.result.stderr, step.result.stderr
    assert "Docker daemon" not in step.result.stderr, "the release did not run"
    assert head(hosted.checkout) == kept
