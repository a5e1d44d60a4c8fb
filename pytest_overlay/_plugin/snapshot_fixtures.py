"""The ``overlay_snapshot`` fixture (alias ``snapshot``): its report header, the alias.

The fixture's value, :class:`~pytest_overlay.Snapshotter`, lives in ``_snapshotter``.

``snapshot`` is also the fixture name of syrupy and pytest-snapshot. pytest-overlay's
fixture is always available as ``overlay_snapshot``; the short alias is registered only
when no other installed plugin defines a ``snapshot`` fixture, so the snapshot-testing
plugin keeps its name and both work in one suite.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from pytest_overlay._plugin.listing import listed_with_the_plugin

if TYPE_CHECKING:
    from pytest_overlay._plugin.snapshotter import Snapshotter
    from pytest_overlay.stack import OverlayStack

__all__ = ["overlay_snapshot"]


def _snapshot_owner(config: pytest.Config) -> str | None:
    """The plugin (other than ours, not a conftest) that defines a ``snapshot`` fixture."""
    from _pytest.fixtures import getfixturemarker  # the one way to tell a fixture

    from pytest_overlay._plugin import snapshot_alias as _snapshot_alias

    for name, plugin in config.pluginmanager.list_name_plugin():
        if plugin is None or plugin is _snapshot_alias:
            continue
        if os.path.basename(str(getattr(plugin, "__file__", ""))) == "conftest.py":
            continue  # a conftest's fixture overrides any plugin's anyway
        try:
            candidate = getattr(plugin, "snapshot", None)
        except Exception:
            continue
        if candidate is not None and getfixturemarker(candidate) is not None:
            # The plugin's top-level package ("syrupy"), not its distribution's name:
            # reading package metadata costs about 10 ms at every start-up.
            module = getattr(plugin, "__name__", None)
            return module.partition(".")[0] if isinstance(module, str) else name
    return None


# The plugin that owns the name ``snapshot``, when one other than ours does.
_OWNER = pytest.StashKey[str]()


def configure(config: pytest.Config) -> None:
    """Register the ``snapshot`` alias unless another plugin owns the name."""
    from pytest_overlay._plugin import snapshot_alias as _snapshot_alias

    owner = _snapshot_owner(config)
    if owner is None:
        config.pluginmanager.register(_snapshot_alias, "overlay-snapshot-alias")
    else:
        config.stash[_OWNER] = owner


def header_note(config: pytest.Config) -> str | None:
    """For the plugin's one report-header line: who owns ``snapshot``, if not us."""
    owner = config.stash.get(_OWNER, None)
    if owner is None:
        return None
    return f"fixture 'snapshot' belongs to {owner}; pytest-overlay's is 'overlay_snapshot'"


@pytest.fixture
@listed_with_the_plugin
def overlay_snapshot(overlay_stack: OverlayStack) -> Snapshotter:
    """Snapshots of this test's ``overlay_stack``: take, restore, diff, assert.

    ``overlay_snapshot()`` freezes the current state and returns a ``Snapshot``;
    ``overlay_snapshot.restore(s)`` rolls back to it; ``overlay_snapshot.diff(since)``
    lists what changed since then (default: since the test started), ignoring files
    copied up but left as they were. ``assert_changed(*paths)``, ``assert_changes([...])``
    and ``assert_unchanged()`` fail with a readable listing. Also available as
    ``snapshot`` unless syrupy or pytest-snapshot owns that name; for snapshot files of
    what a test changed, see ``pytest_overlay.syrupy``.
    """
    from pytest_overlay._plugin.snapshotter import Snapshotter

    return Snapshotter(overlay_stack, _ispytest=True)
