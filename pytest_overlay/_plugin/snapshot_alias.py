"""The short ``snapshot`` fixture name, registered only when no other plugin owns it.

A plugin of its own, so that pytest-overlay can leave the name to syrupy or
pytest-snapshot (see :func:`pytest_overlay._plugin.snapshot_fixtures.configure`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from pytest_overlay._plugin.listing import listed_with_the_plugin

if TYPE_CHECKING:
    from pytest_overlay._plugin.snapshotter import Snapshotter


@pytest.fixture
@listed_with_the_plugin
def snapshot(overlay_snapshot: Snapshotter) -> Snapshotter:
    """pytest-overlay's ``overlay_snapshot`` under the short name.

    Only present when no other plugin (syrupy, pytest-snapshot) defines ``snapshot``;
    ``overlay_snapshot`` always works.
    """
    return overlay_snapshot
