"""Chains of layers and their lifetime, shared by :mod:`~pytest_overlay.stack` and
:mod:`~pytest_overlay.snapshot`: frozen layers, the workspace keeper, fresh and frozen uppers.

A chain is a tuple of layers, top-most first. The frozen ones are former upper layers that
live in the workspace of the stack that took them and are deleted with their last reference.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, final

from pytest_overlay._errors import OverlayError
from pytest_overlay._layers.squash import squash_layers
from pytest_overlay._linux.workspace import Workspace, copy_owner, remove_workspace

# Overlayfs's own xattrs (origin, impure, uuid, opaque...) describe a layer, not the tree.
_OVERLAY_XATTR: Final = ("trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.")


@final
class WorkspaceKeeper:
    """Owns a stack's workspace directory and deletes it when the last reference goes.

    The stack holds it while mounted; every frozen layer in the workspace holds it too.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._finalizer = weakref.finalize(self, _remove_root, root)

    def remove_unmounted(self) -> None:
        """Delete the workspace now, its union known to be unmounted (or detached).

        Skips the mount check the finalizer needs at interpreter exit: one ``ismount``
        (two stats) per test, for an answer the caller already has.
        """
        if self._finalizer.detach() is not None:
            remove_workspace(self.root)


def _remove_root(root: Path) -> None:
    # At interpreter exit a stack may still be mounted here: deleting through the
    # mount would only fill its upper layer with whiteouts.
    if not os.path.ismount(root / "merged"):
        remove_workspace(root)


@final
class FrozenLayer:
    """A former upper layer, now read-only, deleted when its last reference goes."""

    def __init__(self, path: Path, keeper: WorkspaceKeeper, level: int = 0) -> None:
        self.path = path
        self._keeper = keeper
        #: 0 for a former upper layer; n + 1 for a squash of layers of level n.
        self.level = level
        weakref.finalize(self, remove_workspace, path)

    def __repr__(self) -> str:
        return f"<FrozenLayer {self.path}>"


#: One layer of a chain: a directory the user gave, or a frozen layer we made.
Layer = Path | FrozenLayer


def layer_path(layer: Layer) -> Path:
    return layer.path if isinstance(layer, FrozenLayer) else layer


def chain_paths(chain: Sequence[Layer]) -> tuple[Path, ...]:
    return tuple(layer_path(layer) for layer in chain)


def common_suffix(a: Sequence[Path], b: Sequence[Path]) -> int:
    """How many bottom layers the chains *a* and *b* (top-most first) share."""
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return n


# --- the on-disk side of freezing an upper layer ------------------------------------------


def _visible_xattrs(path: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    found: dict[str, bytes] = {}
    for name in names:
        if name.startswith(_OVERLAY_XATTR):
            continue
        with contextlib.suppress(OSError):
            found[name] = os.getxattr(path, name, follow_symlinks=False)
    return found


def root_attributes(path: Path) -> tuple[object, ...]:
    """What the merged root shows of an upper root: mode, owner, mtime and user xattrs."""
    st = os.lstat(path)
    xattrs = tuple(sorted(_visible_xattrs(path).items()))
    return (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, xattrs)


def is_empty_upper(upper: Path, attributes: tuple[object, ...]) -> bool:
    """Whether *upper* holds nothing and its root still has *attributes*."""
    with os.scandir(upper) as entries:
        if any(True for _ in entries):
            return False
    return root_attributes(upper) == attributes


def fresh_upper(space: Workspace, template: Path) -> tuple[object, ...]:
    """Make a new, empty upper and work in *space*, the upper root looking like *template*.

    Overlayfs shows the upper root's attributes as the merged root's, so the new upper
    root copies them from the top-most layer below it. Returns its root attributes.
    """
    remove_workspace(space.work)
    space.work.mkdir()
    space.upper.mkdir()
    st = os.lstat(template)
    copy_owner(space.upper, st)
    for name, value in _visible_xattrs(template).items():
        with contextlib.suppress(OSError):
            os.setxattr(space.upper, name, value, follow_symlinks=False)
    os.chmod(space.upper, stat.S_IMODE(st.st_mode))
    os.utime(space.upper, ns=(st.st_atime_ns, st.st_mtime_ns))
    return root_attributes(space.upper)


def freeze_upper(space: Workspace, keeper: WorkspaceKeeper, number: int) -> FrozenLayer:
    """Turn the (unmounted) upper layer of *space* into frozen layer *number*.

    A rename within the workspace: nothing is copied.
    """
    target = space.root / f"layer-{number}"
    try:
        os.rename(space.upper, target)
    except OSError as exc:  # pragma: no cover - the workspace is ours
        if exc.errno != errno.EEXIST:
            raise
        raise OverlayError(f"cannot freeze {space.upper}: {target} already exists") from None
    return FrozenLayer(target, keeper)


#: How many frozen layers of one level are squashed into one layer of the next level.
SQUASH_FAN: Final = 4
#: Levels 0 (former upper layers) to SQUASH_LEVELS - 1 squash SQUASH_FAN at a time into
#: the next level; a squash that would make a layer of level SQUASH_LEVELS also takes in
#: the layer of that level right below it, so a chain keeps one such bottom layer. The
#: layers of a stack's own then number at most SQUASH_BOUND (SQUASH_FAN - 1 per level,
#: and the bottom one) whatever the depth, so a mount costs the same at snapshot 15 and
#: at snapshot 300. Each snapshot's files are copied once per level, and the bottom
#: layer, which holds all that is older, once per SQUASH_FAN ** SQUASH_LEVELS snapshots:
#: the cost of squashing follows what the squashed layers hold, never the base.
SQUASH_LEVELS: Final = 3
SQUASH_BOUND: Final = (SQUASH_FAN - 1) * SQUASH_LEVELS + 1
#: Restoring older snapshots and going on from there can interleave levels so that no
#: SQUASH_FAN neighbours share one; past this many frozen layers the top-most
#: SQUASH_FAN are squashed whatever their levels.
SQUASH_CAP: Final = 4 * SQUASH_FAN


def _level(layer: Layer) -> int:
    return layer.level if isinstance(layer, FrozenLayer) else -1


def _equal_run(frozen: Sequence[Layer]) -> int | None:
    """Where the top-most SQUASH_FAN neighbours of one level below the bottom one start."""
    for start in range(len(frozen) - SQUASH_FAN + 1):
        levels = {_level(layer) for layer in frozen[start : start + SQUASH_FAN]}
        if len(levels) == 1 and levels.pop() < SQUASH_LEVELS:
            return start
    return None


def squash_top(
    chain: tuple[Layer, ...],
    own: int,
    keeper: WorkspaceKeeper,
    numbers: Callable[[], int],
    opaque_xattr: str,
) -> tuple[Layer, ...]:
    """*chain* with runs of SQUASH_FAN frozen layers of one level squashed into one.

    *own* is how many layers at the top of *chain* this stack froze (the rest is its
    base, never touched); *numbers* gives the number of the next frozen layer in the
    workspace. A layer that cannot be read whole (a test may leave a directory mode
    000) leaves the chain as it is: it stays right, only deeper.
    """
    while own >= SQUASH_FAN:
        start = _equal_run(chain[:own])
        if start is None:
            if own <= SQUASH_CAP:
                break
            start = 0
        end = start + SQUASH_FAN
        level = min(max(_level(layer) for layer in chain[start:end]) + 1, SQUASH_LEVELS)
        if level == SQUASH_LEVELS:
            # Into the bottom layer(s) right below: one bottom layer, not a growing pile.
            while end < own and _level(chain[end]) == SQUASH_LEVELS:
                end += 1
        group = chain[start:end]
        target = keeper.root / f"layer-{numbers()}"
        try:
            squash_layers(
                [os.fspath(layer_path(x)) for x in group],
                os.fspath(target),
                opaque_xattr,
                below=[os.fspath(layer_path(x)) for x in chain[end:]],
            )
        except OSError:
            remove_workspace(target)
            break
        chain = (*chain[:start], FrozenLayer(target, keeper, level), *chain[end:])
        own -= len(group) - 1
    return chain
