"""What the template's tests, its benchmark and its CI script share: the feature
list, baking, virtualenvs, processes, servers, and the container tools (dockerd,
debootstrap, podman). Importable from the template's root (`pytest`,
`python -m bench` and `python -m toolkit.docker` all run there).

What is slow to make (virtualenvs, Debian roots, images) is kept under
`cache_dir()`, keyed by its inputs, so a second run reuses it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where the tests keep what is slow to make."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fastapi-template-tests"
