"""Snapshot files of what a test did on disk, through syrupy.

Needs the extra: ``pip install 'pytest-overlay[syrupy]'`` (without it this module is
skipped). The files live in ``__snapshots__/test_syrupy_snapshots/`` next to this module;
review them like code, and rewrite them with ``pytest examples --snapshot-update``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("syrupy", reason="pip install 'pytest-overlay[syrupy]'")

from syrupy.assertion import SnapshotAssertion

from pytest_overlay import OverlayStack
from pytest_overlay.syrupy import OverlayChangesExtension, OverlayTreeExtension

pytestmark = pytest.mark.overlay("configs")


@pytest.fixture
def snapshot_changes(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    """syrupy's ``snapshot``, storing what changed in the union (syrupy's recommended way
    to give a suite its own extension: a fixture made with ``with_defaults``)."""
    return snapshot.with_defaults(extension_class=OverlayChangesExtension)


def upgrade(root: Path) -> None:
    """The code under test: moves the app to a new port, drops the old docs."""
    (root / "app.ini").write_text("name=demo\nport=9090\n")
    (root / "docs" / "readme.txt").unlink()
    (root / "VERSION").write_text("2\n")
    # Modes are part of a snapshot and new files take the umask: set them explicitly.
    for name in ("app.ini", "VERSION"):
        os.chmod(root / name, 0o644)


def test_what_the_upgrade_changes_is_reviewed(
    overlay_stack: OverlayStack, snapshot_changes: SnapshotAssertion
) -> None:
    upgrade(overlay_stack.merged)
    # One line per change; app.ini's new content below it, so a regression in upgrade()
    # fails with a line diff of app.ini.
    assert overlay_stack == snapshot_changes


def test_a_generated_tree(overlay_stack: OverlayStack, snapshot: SnapshotAssertion) -> None:
    release = overlay_stack.merged / "release"
    release.mkdir()
    (release / "bin").mkdir()
    (release / "bin" / "start").write_text("#!/bin/sh\nexec demo --port 9090\n")
    (release / "current").symlink_to("bin/start")
    for path, mode in ((release, 0o755), (release / "bin", 0o755), (release / "bin/start", 0o755)):
        os.chmod(path, mode)
    assert snapshot(extension_class=OverlayTreeExtension) == release
