"""Helpers shared by the template's tests and CI scripts.

Each module holds one concern. The container modules run real tools (dockerd,
the docker CLI, debootstrap, podman) and keep what they make under the test
cache directory, keyed by their inputs, so a second run reuses it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The test cache (the same directory as CACHE_DIR in tests/bakery.py)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fastapi-template-tests"
