"""Reading the plugin's settings: the backend choice and the base layers of a test."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_overlay.snapshot import Snapshot

MARKER = "overlay"
MARKER_HELP = (
    "overlay(*layers): the base of this test's overlay_stack, top-most layer first; "
    "relative paths resolve against the directory of the test file"
)


def option(config: pytest.Config, name: str, default: str) -> str:
    """Option *name* from the command line, else the ini key of the same name."""
    return str(config.getoption(name, None) or config.getini(name) or default).strip()


def choice(
    config: pytest.Config, name: str, choices: Sequence[str], *, flag: str, what: str
) -> str:
    """Option *name* (see :func:`option`; default ``choices[0]``), one of *choices*.

    Anything else is a usage error naming the bad value and the choices.
    """
    value = option(config, name, choices[0])
    if value not in choices:
        raise pytest.UsageError(
            f"{flag} / {name}: unknown {what} {value!r}; choose one of: {', '.join(choices)}"
        )
    return value


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
        from pytest_overlay.snapshot import Snapshot  # only once a test mounts

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


#: Values of ``--overlay-workspace``: where upper layers live (see ``_linux.tmpfs``).
WORKSPACE_SETTINGS = ("auto", "tmpfs", "disk")


def workspace_setting(config: pytest.Config) -> str:
    return choice(
        config, "overlay_workspace", WORKSPACE_SETTINGS, flag="--overlay-workspace", what="value"
    )


#: Values of ``--overlay-userns``: when an ordinary user's process enters its user
#: namespace (see ``_plugin.needs``).
USERNS_SETTINGS = ("auto", "start", "never")


def userns_setting(config: pytest.Config) -> str:
    return choice(config, "overlay_userns", USERNS_SETTINGS, flag="--overlay-userns", what="value")
