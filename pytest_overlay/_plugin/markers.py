"""The ``overlay`` marker at collection: malformed ones fail there, unread ones warn.

Both would otherwise show late or never: a malformed marker only when the test's setup
reads it, and a marker on a test that uses no overlay fixture not at all.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import pytest
from _pytest.nodes import Node  # pytest exports no name for it

from pytest_overlay._errors import OverlayWarning
from pytest_overlay._plugin.config import MARKER, marker_layers


def check_collected(result: object) -> None:
    """Raise a collection error for a test in *result* (what ``pytest_pycollect_makeitem``
    returned) whose ``overlay`` marker is malformed."""
    collected = result if isinstance(result, list) else [result]
    for node in collected:
        if isinstance(node, pytest.Function):
            try:
                marker_layers(node)
            except pytest.UsageError as exc:
                # Shown as the module's collection error, without a traceback.
                raise pytest.Collector.CollectError(str(exc)) from None


def warn_unread(items: Iterable[pytest.Item], fixtures: Collection[str]) -> None:
    """Warn once for each ``overlay`` marker that no test under it can read.

    Only ``overlay_stack`` reads the marker; a fixture of one's own on
    ``overlay_stack_factory`` may too, so either fixture counts as reading it. A marker on
    a module or class warns only if none of its tests uses one.
    """
    owners: dict[str, Node] = {}
    read: dict[str, bool] = {}
    for item in items:
        owner = next(item.iter_markers_with_node(MARKER), None)
        if owner is None:
            continue
        node = owner[0]
        if node is item:
            # On the function itself: the parametrized copies of a test warn as one.
            parent = item.parent.nodeid if item.parent is not None else ""
            key = f"{parent}::{getattr(item, 'originalname', item.name)}"
        else:
            key = node.nodeid
        owners.setdefault(key, node)
        uses = any(name in getattr(item, "fixturenames", ()) for name in fixtures)
        read[key] = read.get(key, False) or uses
    for key, node in owners.items():
        if read[key]:
            continue
        warning = OverlayWarning(
            f"@pytest.mark.overlay on {key} has no effect: it uses neither overlay_stack "
            "nor overlay_stack_factory; request overlay_stack, or remove the marker"
        )
        try:
            node.warn(warning)
        except OverlayWarning:
            # Made an error by -W or filterwarnings: out of this hook it would be an
            # INTERNALERROR, so stop the session as pytest does for bad usage.
            raise pytest.UsageError(f"{warning} (a warning made an error)") from None
