"""The ``overlay_at`` marker: throwaway unions over real paths for the duration of a test.

Each listed directory is mounted over itself (``OverlayStack(merged=<the base>)``) in the
session's private mount namespace (root) or user namespace (an ordinary user), so the
test and every process it starts see a copy-on-write view at the original absolute path,
and the real directory is untouched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from pytest_overlay._backends.protocol import Backend
from pytest_overlay._errors import BackendUnavailable, OverlayError

if TYPE_CHECKING:
    from pytest_overlay._plugin.factory import OverlayStackFactory
    from pytest_overlay.stack import OverlayStack

MARKER = "overlay_at"
FIXTURE = "overlay_at"
MARKER_HELP = (
    "overlay_at(*paths): for this test, each directory shows a throwaway copy-on-write "
    "union over itself, also to subprocesses; ~ is expanded, relative paths resolve "
    "against the directory of the test file"
)


def marked_paths(item: pytest.Item) -> list[Path] | None:
    """The directories of every ``overlay_at`` marker on *item* (test, class, module), or
    None without one. Raises ``pytest.UsageError`` with the fix for a malformed marker."""
    markers = list(item.iter_markers(MARKER))
    if not markers:
        return None
    paths: list[Path] = []
    for marker in markers:
        if marker.kwargs or not marker.args:
            raise pytest.UsageError(
                f"{item.nodeid}: @pytest.mark.overlay_at takes one or more directory paths, "
                "e.g. @pytest.mark.overlay_at('~/.config/mytool', '/etc/myapp')"
            )
        for arg in marker.args:
            if not isinstance(arg, (str, os.PathLike)):
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.overlay_at got {arg!r} "
                    f"({type(arg).__name__}); each must be a path (str or pathlib.Path)"
                )
            path = item.path.parent / Path(os.fspath(arg)).expanduser()
            paths.append(Path(os.path.abspath(path)))
    return paths


def _check_exists(path: Path) -> None:
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise OverlayError(
            f"overlay_at: {path} {what}: a union covers an existing directory; create it "
            "(in the test session's setup, outside the test) or fix the path"
        )


#: What a user namespace shows for an owner it does not map (/proc/sys/kernel/overflowuid).
_OVERFLOW_UID = 65534
_UNMAPPED = " (an owner not mapped into the user namespace, such as root)"


def check_owner(path: Path, backend: Backend) -> None:
    """Refuse, before mounting, a directory of another owner for an ordinary user.

    Kernel overlayfs in a user namespace cannot copy up what an unmapped owner owns: the
    union could be mounted, but the test's first write there would fail with EOVERFLOW.
    fuse-overlayfs is no way out: in the user namespace it fails the same way on a delete
    (tried with fuse-overlayfs 1.10 over /etc/skel), and in the host namespace fusermount3
    refuses a mount point the user cannot write to.
    """
    owner = path.stat().st_uid
    if backend.name not in ("userns", "fuse") or owner == os.geteuid() or os.geteuid() == 0:
        return
    raise OverlayError(
        f"overlay_at: {path} belongs to uid {owner}{_UNMAPPED if owner == _OVERFLOW_UID else ''}"
        ", not to you: kernel overlayfs in a "
        "user namespace cannot copy up files whose owner is not mapped (writing to them or "
        "deleting in their directories fails with EOVERFLOW, 'Value too large for defined "
        "data type'), and fuse-overlayfs cannot either (EOVERFLOW inside the user "
        "namespace; outside it fusermount3 refuses a mount point you cannot write to). "
        "Run pytest as root (the kernel backend), or point the code under test at a copy "
        "you own"
    )


def _check_nesting(path: Path, paths: Sequence[Path], backend: Backend) -> None:
    outer = next((p for p in paths if p != path and path.is_relative_to(p)), None)
    if outer is None or backend.name != "fuse":
        return
    # fusermount3 runs as root, and root may not enter another user's FUSE mount.
    raise OverlayError(
        f"overlay_at: {path} lies inside {outer}, and a union inside a fuse-overlayfs "
        "union cannot be mounted (fusermount3 is denied the mount point); list only the "
        "outer directory, or use the kernel backend (root) or userns"
    )


def mount_all(
    factory: OverlayStackFactory,
    paths: Sequence[Path],
    name: str,
    session: Backend,
) -> list[OverlayStack]:
    """Mount a union over each of *paths*, outer ones first so that a nested path stands
    on the union over its parent. On failure, what was mounted is closed again."""
    stacks: list[OverlayStack] = []
    try:
        ordered = sorted(dict.fromkeys(paths), key=lambda p: len(p.parts))
        for path in ordered:
            _check_exists(path)
            _check_nesting(path, ordered, session)
            check_owner(path, session)
            stacks.append(factory.mount([path], name=f"at-{name}", merged=path))
    except BaseException:
        close_all(stacks)
        raise
    return stacks


def close_all(stacks: Sequence[OverlayStack]) -> None:
    """Close *stacks*, inner (last mounted) first."""
    for stack in reversed(stacks):
        stack.close()


def skip_or_fail(exc: OverlayError) -> NoReturn:
    if isinstance(exc, BackendUnavailable):
        pytest.skip(f"pytest-overlay cannot mount here: {exc}")
    from pytest_overlay._plugin import outcomes

    outcomes.fail(f"overlay_at: {exc}" if not str(exc).startswith("overlay_at") else str(exc))
