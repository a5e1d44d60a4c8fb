"""pytest-overlay: a throwaway copy-on-write view of a directory for every test.

The public names load on first use (PEP 562): pytest imports this package for every
session, and most sessions never mount anything, so start-up should not pay for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pytest_overlay._errors import BackendUnavailable, OverlayError

if TYPE_CHECKING:
    from pytest_overlay._errors import OverlayWarning
    from pytest_overlay._layers.changes import Change, ChangeKind
    from pytest_overlay._plugin.datadir import LazyDataDir
    from pytest_overlay._plugin.factory import OverlayStackFactory
    from pytest_overlay._plugin.overlay_fixture import OverlayFixture, overlay_fixture
    from pytest_overlay._plugin.snapshotter import Snapshotter
    from pytest_overlay.snapshot import Snapshot
    from pytest_overlay.stack import OverlayStack

__all__ = [
    "BackendUnavailable",
    "Change",
    "ChangeKind",
    "LazyDataDir",
    "OverlayError",
    "OverlayFixture",
    "OverlayStack",
    "OverlayStackFactory",
    "OverlayWarning",
    "Snapshot",
    "Snapshotter",
    "overlay_fixture",
]

_HOMES = {
    "Change": "pytest_overlay.changes",
    "ChangeKind": "pytest_overlay.changes",
    "LazyDataDir": "pytest_overlay._plugin.datadir",
    "OverlayFixture": "pytest_overlay._plugin.overlay_fixture",
    "OverlayStack": "pytest_overlay.stack",
    "OverlayStackFactory": "pytest_overlay._plugin.factory",
    "OverlayWarning": "pytest_overlay._errors",
    "Snapshot": "pytest_overlay.snapshot",
    "Snapshotter": "pytest_overlay._plugin.snapshotter",
    "overlay_fixture": "pytest_overlay._plugin.overlay_fixture",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pytest_overlay' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
