"""pytest-overlay: a throwaway copy-on-write view of a directory for every test."""

from pytest_overlay._errors import BackendUnavailable, OverlayError
from pytest_overlay._overlay_fixture import overlay_fixture
from pytest_overlay._snapshot_fixtures import Snapshotter
from pytest_overlay.changes import Change, ChangeKind
from pytest_overlay.snapshot import Snapshot
from pytest_overlay.stack import OverlayStack

__all__ = [
    "BackendUnavailable",
    "Change",
    "ChangeKind",
    "OverlayError",
    "OverlayStack",
    "Snapshot",
    "Snapshotter",
    "overlay_fixture",
]
