"""Reading the plugin's settings: the backend choice and the base layers of a test."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from pytest_overlay._linux import tmpfs as _tmpfs

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


def marker_layers(item: pytest.Item) -> tuple[object, ...] | None:
    """The layers of the ``overlay`` marker closest to *item*, or None if it has none.

    Raises ``pytest.UsageError`` with the fix for a malformed marker. Cheap, and imports
    nothing: it runs for every collected test.
    """
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None
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
    # A Snapshot exists only once its module is loaded: no need to load it to check.
    snapshot = sys.modules.get("pytest_overlay.snapshot")
    for arg in marker.args:
        if isinstance(arg, (str, os.PathLike)):
            continue
        if snapshot is not None and isinstance(arg, snapshot.Snapshot):
            continue
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.overlay got {arg!r} ({type(arg).__name__}); "
            "each layer must be a path (str or pathlib.Path) or a Snapshot"
        )
    return tuple(marker.args)


def base_layers(item: pytest.Item) -> tuple[Path | Snapshot, ...]:
    """The lower layers for *item*: the closest ``overlay`` marker, else ini ``overlay_base``.

    Raises ``pytest.UsageError`` with the fix when neither is set or a marker is malformed.
    """
    marked = marker_layers(item)
    if marked is not None:
        from pytest_overlay.snapshot import Snapshot  # only once a test mounts

        here = item.path.parent
        # marker_layers checked that each is a Snapshot or a path.
        return tuple(
            arg if isinstance(arg, Snapshot) else here / cast("str | os.PathLike[str]", arg)
            for arg in marked
        )
    configured = ini_base(item.config)
    if configured:
        return configured
    raise pytest.UsageError(
        f"{item.nodeid} uses overlay_stack but no base directory is configured: mark the "
        "test with @pytest.mark.overlay('path/to/base'), or set 'overlay_base = path/to/base' "
        "in the [pytest] section of your configuration file"
    )


#: ``overlay_base`` as read by :func:`ini_base`: the ini file does not change in a session.
_INI_BASE = pytest.StashKey[tuple[Path, ...]]()


def ini_base(config: pytest.Config) -> tuple[Path, ...]:
    """The ``overlay_base`` ini key: one path per line, relative to the configuration file.

    A whole line is one path, spaces included. Quotes around a line are dropped: they were
    the way to write a space when lines were split on whitespace. Read once per session:
    every test without a marker asks.
    """
    cached = config.stash.get(_INI_BASE, None)
    if cached is None:
        cached = config.stash[_INI_BASE] = _read_ini_base(config)
    return cached


def _read_ini_base(config: pytest.Config) -> tuple[Path, ...]:
    lines: list[str] = config.getini("overlay_base")
    here = config.inipath.parent if config.inipath is not None else config.invocation_params.dir
    paths = []
    for line in lines:
        path = here / _unquote(line)
        if not path.exists() and len(line.split()) > 1:
            words = [here / word for word in shlex.split(line)]
            if all(word.exists() for word in words):
                raise pytest.UsageError(
                    f"overlay_base: {line!r} does not exist, but each word of it does; "
                    "overlay_base takes one path per line, so write:\n    overlay_base =\n"
                    + "".join(f"        {word}\n" for word in shlex.split(line))
                )
        paths.append(path)
    return tuple(paths)


def _unquote(line: str) -> str:
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "'\"":
        return line[1:-1]
    return line


#: Values of ``--overlay-workspace``: where upper layers live (see ``_linux.tmpfs``).
WORKSPACE_SETTINGS = ("auto", "tmpfs", "disk")


def workspace_setting(config: pytest.Config) -> str:
    return choice(
        config, "overlay_workspace", WORKSPACE_SETTINGS, flag="--overlay-workspace", what="value"
    )


def datadir_setting(config: pytest.Config) -> bool:
    """Whether ``--overlay-datadir`` / ``overlay_datadir`` asks for the datadir fixtures."""
    flag = config.getoption("overlay_datadir", None)
    return bool(flag if flag is not None else config.getini("overlay_datadir"))


#: Values of ``--overlay-userns``: when an ordinary user's process enters its user
#: namespace (see ``_plugin.needs``).
USERNS_SETTINGS = ("auto", "start", "never")


def userns_setting(config: pytest.Config) -> str:
    return choice(config, "overlay_userns", USERNS_SETTINGS, flag="--overlay-userns", what="value")


@dataclass(frozen=True)
class TmpfsLimits:
    """The size and inode limits of each process's tmpfs workspace."""

    size: int
    inodes: int
    workers: int
    #: The ini value, or "" for the default.
    setting: str

    def describe(self) -> str:
        per = "per pytest process" if self.workers == 1 else f"per worker ({self.workers})"
        how = f"overlay_tmpfs_size = {self.setting}" if self.setting else "default"
        return (
            f"tmpfs workspaces up to {_tmpfs.describe(self.size)} and {self.inodes} inodes "
            f"{per}, {how}"
        )


def _workers(config: pytest.Config) -> int:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return int(workerinput.get("workercount", 1))
    # pytest-xdist's controller (-n auto is a number by now); none without xdist.
    count = getattr(config.option, "numprocesses", None)
    return count if isinstance(count, int) and count > 0 else 1


def tmpfs_limits(config: pytest.Config) -> TmpfsLimits:
    """The limits from ``overlay_tmpfs_size``, or shared out of the available memory.

    A bad value is a usage error naming the forms that work.
    """
    setting = str(config.getini("overlay_tmpfs_size") or "").strip()
    workers = _workers(config)
    if setting:
        try:
            size = _tmpfs.parse_size(setting, _tmpfs.total_memory())
        except ValueError:
            raise pytest.UsageError(
                f"overlay_tmpfs_size: {setting!r} is not a size: write bytes with an optional "
                "K, M or G suffix (512M, 2G), or a share of the RAM from 1% to 100% (25%)"
            ) from None
    else:
        size = _tmpfs.default_size(_tmpfs.available_memory(), workers)
    return TmpfsLimits(size, _tmpfs.inodes_for(size), workers, setting)
