"""Debian root filesystems made with debootstrap, cached as tarballs.

No image registry is reachable, so every base image starts from a root made
here from the Debian mirror the machine's apt already uses. Making one takes
minutes; the tarball is kept under the test cache, keyed by everything that
goes into it (suite, packages, mirror), and shared by every image built on it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

from toolkit import cache_dir
from toolkit.locks import locked

SOURCES = Path("/etc/apt/sources.list")
SOURCES_DIR = Path("/etc/apt/sources.list.d")
VARIANT = "minbase"
# Bumped when make_root changes what it puts in a root.
RECIPE = "1"


def apt_mirror() -> str:
    """The Debian archive the machine's apt sources name (not the security archive).

    Read at run time: the mirror differs between machines, and none is written
    into the repository.
    """
    for uri, suites in _apt_entries():
        if uri.startswith(("http://", "https://")) and not all(s.endswith("-security") for s in suites):
            return uri.rstrip("/")
    raise RuntimeError(f"no Debian mirror found in {SOURCES} or {SOURCES_DIR}/*.(list|sources)")


def _apt_entries() -> Iterable[tuple[str, list[str]]]:
    """(URI, suites) of each `deb` source, one-line and deb822 formats alike."""
    files = [SOURCES] if SOURCES.exists() else []
    files += sorted(SOURCES_DIR.glob("*.list")) + sorted(SOURCES_DIR.glob("*.sources"))
    for path in files:
        text = path.read_text()
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                fields = {}
                for line in stanza.splitlines():
                    key, _, value = line.partition(":")
                    if value and not line.startswith(("#", " ")):
                        fields[key.strip().lower()] = value.split()
                if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"]) != ["no"]:
                    for uri in fields.get("uris", []):
                        yield uri, fields.get("suites", [])
        else:
            for line in text.splitlines():
                words = [word for word in line.split("#")[0].split() if not word.startswith("[")]
                if len(words) >= 3 and words[0] == "deb":
                    yield words[1], [words[2]]


def root_key(suite: str, packages: Iterable[str], mirror: str) -> str:
    """A short digest of everything a root is made from."""
    inputs = [RECIPE, VARIANT, suite, sorted(set(packages)), mirror]
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:16]


def root_tarball(suite: str, packages: Iterable[str] = (), mirror: str | None = None) -> tuple[Path, str]:
    """A tarball of a `suite` root with `packages`, made once; (path, key).

    Safe to call from several processes: one makes it, the others wait and reuse it.
    """
    mirror = mirror or apt_mirror()
    packages = sorted(set(packages))
    key = root_key(suite, packages, mirror)
    roots = cache_dir() / "roots"
    tarball = roots / f"{suite}-{key}.tar"
    with locked(roots / f"{suite}-{key}.lock"):
        if not tarball.exists():
            _make_tarball(tarball, suite, packages, mirror)
    return tarball, key


def _make_tarball(tarball: Path, suite: str, packages: list[str], mirror: str) -> None:
    work = Path(tempfile.mkdtemp(prefix=f"root-{suite}-", dir=tarball.parent))
    try:
        root = work / "root"
        command = ["debootstrap", f"--variant={VARIANT}"]
        if packages:
            command.append("--include=" + ",".join(packages))
        _run([*command, suite, str(root), mirror], timeout=1200)
        # What debootstrap downloaded is not part of the system.
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (root / leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = work / "root.tar"
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(partial), "."], timeout=600)
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def unpack(tarball: Path, destination: Path) -> Path:
    """Extract a root tarball (owners and modes as recorded: run as root)."""
    destination.mkdir(parents=True, exist_ok=True)
    _run(["tar", "--numeric-owner", "-C", str(destination), "-xpf", str(tarball)], timeout=600)
    return destination


def slim(root: Path) -> None:
    """Drop documentation, manuals and translations, keeping licences, as the
    debian:*-slim images (the base of the official slim images) do."""
    share = root / "usr" / "share"
    for name in ("man", "info", "locale", "groff", "lintian", "linda"):
        shutil.rmtree(share / name, ignore_errors=True)
    for path in sorted((share / "doc").rglob("*"), reverse=True):
        if path.is_file() or path.is_symlink():
            if path.name != "copyright":
                path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def chroot(root: Path, *command: str) -> None:
    """Run a command inside the root (for ldconfig, or `apt-get install` in extra images)."""
    _run(["chroot", str(root), *command], timeout=1200)


def _run(command: list[str], timeout: float) -> None:
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    if result.returncode != 0:
        output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}\n{output}")
