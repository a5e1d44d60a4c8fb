"""Reading the plugin's settings: the backend choice and the base layers of a test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_overlay.snapshot import Snapshot

MARKER = "overlay"
MARKER_HELP = (
    "overlay(*layers): the base of this test's overlay_stack, top-most layer first; "
    "relative paths resolve against the directory of the test file"
)


def base_layers(item: pytest.Item) -> tuple[Path | Snapshot, ...]:
    """The lower layers for *item*: the closest ``overlay`` marker, else ini ``overlay_base``.

    Raises ``pytest.UsageError`` with the fix when neither is set or a marker is malformed.
    """
    marker = item.get_closest_marker(MARKER)
    if marker is not None:
        if marker.kwargs:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.overlay takes layer paths only, not "
                f"{', '.join(sorted(marker.kwargs))}=...; write "
                "@pytest.mark.overlay('path/to/base', 'another/layer')"
            )
        if not marker.args:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.overlay needs at least one layer path, e.g. "
                "@pytest.mark.overlay('data/base')"
            )
        here = item.path.parent
        layers: list[Path | Snapshot] = []
        for arg in marker.args:
            if isinstance(arg, Snapshot):
                layers.append(arg)
                continue
            if not isinstance(arg, (str, os.PathLike)):
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.overlay got {arg!r} ({type(arg).__name__}); "
                    "each layer must be a path (str or pathlib.Path) or a Snapshot"
                )
            layers.append(here / Path(arg))
        return tuple(layers)
    configured = item.config.getini("overlay_base")
    if configured:
        return tuple(Path(p) for p in configured)
    raise pytest.UsageError(
        f"{item.nodeid} uses overlay_stack but no base directory is configured: mark the "
        "test with @pytest.mark.overlay('path/to/base'), or set 'overlay_base = path/to/base' "
        "in the [pytest] section of your configuration file"
    )
