"""The container toolkit's own logic that needs no daemon: reading apt sources, keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit import debian


@pytest.fixture
def sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty apt configuration for toolkit.debian to read instead of the machine's."""
    monkeypatch.setattr(debian, "SOURCES", tmp_path / "sources.list")
    monkeypatch.setattr(debian, "SOURCES_DIR", tmp_path / "sources.list.d")
    (tmp_path / "sources.list.d").mkdir()
    return tmp_path


def test_the_mirror_comes_from_deb822_sources_and_skips_the_security_archive(sources: Path) -> None:
    (sources / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n"
        "URIs: http://security.example/debian-security\n"
        "Suites: bookworm-security\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "# a comment line\n"
        "URIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
    )
    (sources / "sources.list.d" / "off.list.disabled").write_text(
        "deb http://other.example/debian bookworm main\n"
    )

    assert debian.apt_mirror() == "http://mirror.example/debian"


def test_the_mirror_comes_from_one_line_sources(sources: Path) -> None:
    (sources / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://source.example/debian bookworm main\n"
        "deb [signed-by=/usr/share/keyrings/debian.gpg] http://mirror.example/debian bookworm main\n"
    )

    assert debian.apt_mirror() == "http://mirror.example/debian"


def test_without_a_debian_source_the_error_says_where_it_looked(sources: Path) -> None:
    with pytest.raises(RuntimeError, match="no Debian mirror found"):
        debian.apt_mirror()


def test_a_root_is_keyed_by_suite_packages_and_mirror() -> None:
    key = debian.root_key("bookworm", ["b", "a"], "http://mirror.example/debian")

    assert key == debian.root_key("bookworm", ["a", "b", "a"], "http://mirror.example/debian")
    assert key != debian.root_key("trixie", ["a", "b"], "http://mirror.example/debian")
    assert key != debian.root_key("bookworm", ["a"], "http://mirror.example/debian")
    assert key != debian.root_key("bookworm", ["a", "b"], "http://other.example/debian")
