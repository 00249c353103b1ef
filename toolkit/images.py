"""Base images made locally, and builds of images from Dockerfiles.

No registry is reachable, so an image a Dockerfile names in FROM is made here
from a Debian root (toolkit.debian) and tagged with that exact name. Each image
carries a label with a digest of its inputs and is rebuilt only when they
change. `stand_in` is the generic recipe; `python_image` makes the
`python:X.Y-slim` stand-ins from the machine's own CPython builds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from toolkit import cache_dir, debian
from toolkit.deploy import build_context
from toolkit.docker import Docker
from toolkit.locks import locked

LABEL = "org.fastapi-template-tests.inputs"
# Bumped when a recipe below changes what goes into an image.
RECIPE = "2"
# What python:X.Y-slim installs from Debian beside its own CPython build (the
# shared libraries of the standard library's extension modules), and netbase.
PYTHON_PACKAGES = (
    "ca-certificates", "netbase", "libssl3", "libsqlite3-0", "libffi8", "libbz2-1.0", "liblzma5",
    "zlib1g", "libreadline8", "libncursesw6", "libuuid1", "libgdbm6", "libexpat1",
)  # fmt: skip
# The machine's CA bundle: it is what lets a build inside the image reach the
# package index from here. Test images only.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Imports that need the Debian libraries above: a missing one fails the build, not a test later.
PYTHON_SMOKE = (
    "import bz2, ctypes, decimal, hashlib, lzma, pyexpat, readline, sqlite3, ssl, uuid, zlib; "
    "print(ssl.OPENSSL_VERSION)"
)


def digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def label_template() -> str:
    """A `--format` template that prints the inputs label."""
    return "{{ index .Config.Labels " + f'"{LABEL}"' + " }}"


def inputs_of(docker: Docker, tag: str) -> str | None:
    """The inputs label of a local image, or None when there is no such image."""
    result = docker("image", "inspect", "--format", label_template(), tag, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def stand_in(
    docker: Docker,
    tag: str,
    *,
    suite: str = "bookworm",
    packages: Iterable[str] = (),
    customise: Callable[[Path], None] | None = None,
    changes: Iterable[str] = (),
    inputs: Iterable[object] = (),
    check: Callable[[str], None] | None = None,
) -> bool:
    """Make `tag` from a Debian `suite` root with `packages`, unless it is up to date.

    `customise` edits the unpacked root (copy files in, `debian.chroot(root,
    "apt-get", ...)` after an `apt-get update`); `changes` are Dockerfile
    instructions for `docker import --change` (ENV, CMD, ...); `inputs` is
    whatever else decides the image's content (versions, file digests); `check`
    runs against the new image, which is removed if it fails. True when built.
    """
    changes = list(changes)
    tarball, root_key = debian.root_tarball(suite, packages)
    key = digest(RECIPE, root_key, changes, list(inputs))
    images = cache_dir() / "images"
    with locked(images / (re.sub(r"[^\w.-]", "_", tag) + ".lock")):
        if inputs_of(docker, tag) == key:
            return False
        previous = docker("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
        work = Path(tempfile.mkdtemp(prefix="image-", dir=images))
        try:
            root = debian.unpack(tarball, work / "root")
            if customise:
                customise(root)
            import_root(docker, root, tag, [*changes, f"LABEL {LABEL}={key}"])
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if previous:
            # The image it replaces, now untagged; kept if a container still uses it.
            docker("image", "rm", previous, check=False)
        if check:
            try:
                check(tag)
            except Exception:
                docker("image", "rm", "--force", tag, check=False)
                raise
    return True


def import_root(docker: Docker, root: Path, tag: str, changes: Iterable[str]) -> None:
    """`tar -C root -c . | docker import --change ... - tag`."""
    arguments = [part for change in changes for part in ("--change", change)]
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    result = subprocess.run(
        docker.argv("import", *arguments, "-", tag),
        stdin=tar.stdout,
        env=docker.env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert tar.stdout is not None
    tar.stdout.close()
    if tar.wait() != 0 or result.returncode != 0:
        raise RuntimeError(f"importing {tag} failed: {result.stderr[-4000:]}")


# --- python:X.Y-slim ---------------------------------------------------------------


def python_build(version: str) -> tuple[Path, str]:
    """The install prefix of the machine's CPython `version` and its exact build.

    Only a self-contained install tree (pyenv's) can be copied into an image;
    the system's /usr is not one.
    """
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    for executable in sorted(pyenv_root.glob(f"versions/{version}.*/bin/python{version}"), reverse=True):
        probe = "import sys; print(sys.base_prefix); print(sys.version)"
        result = subprocess.run([str(executable), "-c", probe], capture_output=True, text=True)
        if result.returncode == 0:
            prefix, build = result.stdout.split("\n", 1)
            return Path(prefix), build.strip()
    raise RuntimeError(f"no CPython {version} install tree under {pyenv_root}/versions")


def python_image(docker: Docker, version: str, test_ca: bool = True) -> str:
    """`python:{version}-slim`, made from the machine's CPython build; returns the tag.

    Like the official image: Debian with the standard library's shared
    libraries, CPython under /usr/local with pip, no test suites or static
    library. With `test_ca`, the machine's CA bundle and SSL_CERT_FILE/PIP_CERT
    so that builds in it reach the package index from here.
    """
    prefix, build = python_build(version)
    tag = f"python:{version}-slim"
    changes = [
        "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        f"ENV PYTHON_VERSION={build.split()[0]}",
        'CMD ["python3"]',
    ]
    inputs: list[object] = [version, build, str(prefix)]
    if test_ca:
        changes += [f"ENV SSL_CERT_FILE={CA_BUNDLE}", f"ENV PIP_CERT={CA_BUNDLE}"]
        inputs.append(hashlib.sha256(CA_BUNDLE.read_bytes()).hexdigest())

    def customise(root: Path) -> None:
        debian.slim(root)
        install_python(root, prefix, version)
        if test_ca:
            shutil.copyfile(CA_BUNDLE, root / str(CA_BUNDLE).lstrip("/"))

    def check(built: str) -> None:
        docker("run", "--rm", "--network", "none", built, "python", "-c", PYTHON_SMOKE, timeout=120)
        docker("run", "--rm", "--network", "none", built, "pip", "--version", timeout=120)

    stand_in(
        docker,
        tag,
        packages=PYTHON_PACKAGES,
        customise=customise,
        changes=changes,
        inputs=inputs,
        check=check,
    )
    return tag


def install_python(root: Path, prefix: Path, version: str) -> None:
    """Copy a CPython install tree to root/usr/local and make it run from there."""
    local = root / "usr" / "local"
    shutil.copytree(prefix, local, symlinks=True, dirs_exist_ok=True, ignore=not_shipped)
    interpreter = f"/usr/local/bin/python{version}"
    for script in (local / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            with script.open("rb") as handle:
                first = handle.readline()
            if first.startswith(b"#!") and str(prefix).encode() in first:
                script.write_bytes(f"#!{interpreter}\n".encode() + script.read_bytes()[len(first) :])
    for name, target in (("python", f"python{version}"), ("python3", f"python{version}"), ("pip", "pip3")):
        link = local / "bin" / name
        if not link.exists() and (local / "bin" / target).exists():
            link.symlink_to(target)
    # The build's RPATH names its old prefix: let the loader find libpython here.
    (root / "etc" / "ld.so.conf.d" / "usr-local.conf").write_text("/usr/local/lib\n")
    debian.chroot(root, "ldconfig")


def not_shipped(directory: str, names: list[str]) -> list[str]:
    """What python:X.Y-slim leaves out: test suites, bytecode, the static library,
    and every installed package but pip (this machine's interpreters have many)."""
    if directory.endswith("site-packages"):
        return [name for name in names if not name.startswith("pip")]
    return [
        name
        for name in names
        if name in {"test", "tests", "idle_test", "__pycache__"}
        or name.endswith((".pyc", ".pyo"))
        or (name.startswith("libpython") and name.endswith(".a"))
    ]


# --- Building from a Dockerfile ---------------------------------------------------------


def build(docker: Docker, context: Path, tag: str, *extra: str) -> tuple[float, str]:
    """`docker build` with the classic builder (as Cloud Build's `--tag` builds); (seconds, output).

    Host networking: the build's package downloads go the way this machine's do.
    """
    started = time.monotonic()
    result = docker(
        "build", "--network", "host", "--tag", tag, *extra, str(context),
        env={"DOCKER_BUILDKIT": "0"},
        timeout=1200,
    )  # fmt: skip
    return time.monotonic() - started, result.stdout + result.stderr


def remove_older_tags(docker: Docker, repository: str, prefix: str, keep: str) -> None:
    """Untag `repository:prefix*` images other than `keep`, so that builds of
    changing sources do not pile up: removing its last tag deletes an image and
    the cache layers only it used. An image a container still uses stays.
    (No `docker image prune`: it would delete the newest layer of a build
    running in another process.)"""
    listed = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository).stdout.split()
    for tag in listed:
        if tag != keep and tag.startswith(f"{repository}:{prefix}"):
            docker("image", "rm", tag, check=False)


# --- The generated project's image ---------------------------------------------------

# The project name every test image is baked with.
APP_REPOSITORY = "my-service"


@dataclass
class Built:
    tag: str
    project: Path
    seconds: float
    base_seconds: float
    root_seconds: float
    output: str


class AppImages:
    """The default project's image for each Python version, built once per test
    process (`app_images` fixture); a build of the same sources in another
    process waits on a lock and then finds every layer cached."""

    def __init__(self, docker: Docker, bakery: Callable[..., Path]) -> None:
        self.docker, self.bakery = docker, bakery
        self.built: dict[str, Built] = {}

    def __call__(self, version: str) -> Built:
        if version not in self.built:
            started = time.monotonic()
            # The Debian root first, on its own: its time is the first build's (or a wait for it).
            debian.root_tarball("bookworm", PYTHON_PACKAGES)
            root_seconds = time.monotonic() - started
            python_image(self.docker, version)
            base_seconds = time.monotonic() - started - root_seconds
            project = self.bakery(python_version=version)
            tag = content_tag(self.docker, project, f"python-{version}-")
            with locked(cache_dir() / "images" / f"{APP_REPOSITORY}-{version}.lock"):
                seconds, output = build(self.docker, project, tag)
                remove_older_tags(self.docker, APP_REPOSITORY, f"python-{version}-", keep=tag)
            self.built[version] = Built(tag, project, seconds, base_seconds, root_seconds, output)
        return self.built[version]


def variant_image(docker: Docker, project: Path, name: str) -> str:
    """The image of a project baked with other answers than AppImages' (a feature
    turned on, say), tagged `my-service:NAME-<digest>`; built once per content,
    older builds of the same NAME untagged."""
    version = re.search(r"^FROM python:([\d.]+)-slim", (project / "Dockerfile").read_text(), re.MULTILINE)
    assert version
    python_image(docker, version.group(1))
    tag = content_tag(docker, project, f"{name}-")
    with locked(cache_dir() / "images" / f"{APP_REPOSITORY}-{name}.lock"):
        build(docker, project, tag)
        remove_older_tags(docker, APP_REPOSITORY, f"{name}-", keep=tag)
    return tag


def content_tag(docker: Docker, project: Path, prefix: str) -> str:
    """A tag naming what the image is built from: another test run on this machine
    (another work tree, another template version) never runs this run's image."""
    sources = {path: (project / path).read_bytes().hex() for path in build_context(project)}
    dockerfile = (project / "Dockerfile").read_text()
    version = re.search(r"^FROM python:([\d.]+)-slim", dockerfile, re.MULTILINE)
    assert version
    base = inputs_of(docker, f"python:{version.group(1)}-slim")
    return f"{APP_REPOSITORY}:{prefix}{digest(sources, dockerfile, base)}"
