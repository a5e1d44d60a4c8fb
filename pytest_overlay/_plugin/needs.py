"""Whether a session will mount, decided before collection, for pytest-xdist's controller.

An ordinary user's process must enter its user namespace while it has one thread, and
the xdist controller starts its workers (and execnet's threads) before any test is
collected: it has to decide from what it can see at start-up. Entering changes how file
owners look to every test (unmapped owners show as nobody), so a session that shows no
sign of pytest-overlay is left alone; ``overlay_userns = start`` covers what this misses.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Command-line options (dest, flag) whose use means the session is about overlays.
_OPTIONS = (
    ("overlay_backend", "--overlay-backend"),
    ("overlay_workspace", "--overlay-workspace"),
    ("overlay_retention_policy", "--overlay-keep"),
)
#: Ini keys and their defaults: a key set to anything else counts.
_INI_DEFAULTS = {
    "overlay_base": [],
    "overlay_backend": "auto",
    "overlay_workspace": "auto",
    "overlay_retention_policy": "failed",
    "overlay_retention_count": "3",
}
#: Loaded only when a conftest file imported them (``from pytest_overlay import ...``).
_MODULES = ("pytest_overlay._plugin.overlay_fixture", "pytest_overlay.stack")
#: Words in a test or conftest file that mean it uses the plugin.
_WORDS = (b"overlay_stack", b"overlay_snapshot", b"mark.overlay", b"pytest_overlay")


def why_it_mounts(config: pytest.Config) -> str:
    """Why this session looks like it will mount ("" if nothing says so), cheapest first."""
    for dest, flag in _OPTIONS:
        if config.getoption(dest, None):
            return f"{flag} is given"
    for key, default in _INI_DEFAULTS.items():
        if config.getini(key) != default:
            return f"{key} is set"
    for module in _MODULES:
        if module in sys.modules:
            return "a conftest file imports pytest_overlay"
    for path in _test_files(config):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if any(word in data for word in _WORDS):
            return f"{_shown(path, config)} uses pytest-overlay"
    return ""


def _shown(path: Path, config: pytest.Config) -> str:
    try:
        return str(path.relative_to(config.rootpath))
    except ValueError:
        return str(path)


def _test_files(config: pytest.Config) -> Iterator[Path]:
    """The Python files pytest would look at for the given arguments (a superset)."""
    patterns = [*config.getini("python_files"), "conftest.py"]
    prune = config.getini("norecursedirs")
    for arg in config.args:
        path = Path(arg.split("::", 1)[0])
        if path.is_file():
            yield path
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            # What pytest would not recurse into: norecursedirs and virtual environments.
            dirnames[:] = [
                d
                for d in dirnames
                if not any(fnmatch.fnmatch(d, p) for p in prune)
                and not os.path.exists(os.path.join(dirpath, d, "pyvenv.cfg"))
            ]
            for name in filenames:
                if name.endswith(".py") and any(fnmatch.fnmatch(name, p) for p in patterns):
                    yield Path(dirpath, name)
