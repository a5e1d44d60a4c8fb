"""Snapshots: frozen states of an :class:`~pytest_overlay.OverlayStack`.

Taking a snapshot unmounts the union, keeps its upper layer as a new read-only layer on
top of the lowers, and mounts again at the same ``merged`` path with a fresh upper. No
file is copied: the cost is one unmount and one mount, whatever the size of the base.

Lifetime: the frozen layers live in the workspace of the stack that took them. They are
deleted when nothing refers to them any more: not the stack (while it is mounted on
them), not a :class:`Snapshot` object, not another stack mounted on a snapshot. So a
snapshot may outlive the stack that took it, and a stack over a snapshot keeps it alive.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, final

from pytest_overlay._errors import OverlayError
from pytest_overlay._layers import statediff as _statediff
from pytest_overlay._linux.workspace import Workspace, remove_workspace
from pytest_overlay.changes import Change, diff_upper

if TYPE_CHECKING:
    from pytest_overlay.stack import OverlayStack

__all__ = ["Snapshot"]

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

    def remove_now(self) -> None:
        self._finalizer()


def _remove_root(root: Path) -> None:
    # At interpreter exit a stack may still be mounted here: deleting through the
    # mount would only fill its upper layer with whiteouts.
    if not os.path.ismount(root / "merged"):
        remove_workspace(root)


@final
class FrozenLayer:
    """A former upper layer, now read-only, deleted when its last reference goes."""

    def __init__(self, path: Path, keeper: WorkspaceKeeper) -> None:
        self.path = path
        self._keeper = keeper
        weakref.finalize(self, remove_workspace, path)

    def __repr__(self) -> str:
        return f"<FrozenLayer {self.path}>"


#: One layer of a chain: a directory the user gave, or a frozen layer we made.
Layer = Path | FrozenLayer


def layer_path(layer: Layer) -> Path:
    return layer.path if isinstance(layer, FrozenLayer) else layer


def chain_paths(chain: Sequence[Layer]) -> tuple[Path, ...]:
    return tuple(layer_path(layer) for layer in chain)


_TOKEN: Final = object()


@final
class Snapshot:
    """A frozen state of an :class:`~pytest_overlay.OverlayStack`: read-only layers.

    Made by :meth:`OverlayStack.snapshot() <pytest_overlay.OverlayStack.snapshot>`. Use it
    to roll the stack back (:meth:`OverlayStack.restore
    <pytest_overlay.OverlayStack.restore>`), to compare states (:meth:`diff`), or as the
    base of other stacks anywhere a base directory goes: ``OverlayStack([snapshot])``,
    ``@pytest.mark.overlay(snapshot)``, ``overlay_stack_factory.mount([snapshot])``. Its
    layers stay on disk as long as the object, or a stack mounted on it, is alive.
    """

    def __init__(
        self,
        token: object,
        chain: tuple[Layer, ...],
        own: FrozenLayer | None,
        name: str,
        stack: OverlayStack,
    ) -> None:
        if token is not _TOKEN:
            raise TypeError(
                "Snapshot objects are made by OverlayStack.snapshot(): call it on a "
                "mounted stack (or use the overlay_snapshot fixture)"
            )
        self._chain = chain
        self._own = own
        self._name = name
        self._stack = weakref.ref(stack)

    @property
    def name(self) -> str:
        """The name given to :meth:`OverlayStack.snapshot`, or ``snapshot-N``."""
        return self._name

    @property
    def layers(self) -> tuple[Path, ...]:
        """Every layer this snapshot stands for, top-most first, down to the base."""
        return chain_paths(self._chain)

    @property
    def layer(self) -> Path | None:
        """This snapshot's own layer: what changed since the previous state, if anything.

        None when nothing had changed (the snapshot then shares its layers with the state
        it was taken on), and for the base of a stack.
        """
        return self._own.path if self._own is not None else None

    def __repr__(self) -> str:
        return f"<Snapshot {self._name!r}: {len(self._chain)} layers, top {self.layers[0]}>"

    def changes(self) -> list[Change]:
        """What this snapshot's own layer changes on the layers below it (layer level).

        Like :meth:`OverlayStack.changes`: a copied-up but unchanged file is a MODIFY
        here; use :meth:`diff` for the content-level difference.
        """
        if self._own is None:
            return []
        return diff_upper(self._own.path, chain_paths(self._chain[1:]))

    def diff(self, other: Snapshot | None = None) -> list[Change]:
        """The content-level changes that turn this snapshot into *other*.

        Without *other*, into the live merged view of the stack that took this snapshot.
        A file copied up but left identical is not a change, and a directory is modified
        only when its own mode or owner changed, not because something inside it did.
        Only the layers above the two states' common part are read, so the cost follows
        the number of entries changed since then, not the size of the tree.
        """
        return [d.change for d in self._deltas(other)]

    def _deltas(self, other: Snapshot | None = None) -> list[_statediff.Delta]:
        """:meth:`diff` with the entries before and after each change."""
        if other is None:
            return self._owner()._deltas_since(self)
        mine, theirs = self.layers, other.layers
        common = common_suffix(mine, theirs)
        if common == 0:
            raise OverlayError(
                f"{self!r} and {other!r} share no layer: only states of the same base can "
                "be compared"
            )
        tree = _statediff.touched(mine[: len(mine) - common])
        _statediff.touched(theirs[: len(theirs) - common], tree)
        return _statediff.diff_states(
            _statediff.ChainState(mine), _statediff.ChainState(theirs), tree
        )

    def _owner(self) -> OverlayStack:
        stack = self._stack()
        if stack is None or not stack.mounted:
            raise OverlayError(
                f"{self!r}: the stack that took it is closed, so there is no live view to "
                "compare with; pass another snapshot, or mount a stack on it and call "
                "stack.diff(snapshot)"
            )
        return stack


def make_snapshot(
    chain: tuple[Layer, ...], own: FrozenLayer | None, name: str, stack: OverlayStack
) -> Snapshot:
    """A new :class:`Snapshot` of *stack* standing for *chain* (for OverlayStack only)."""
    return Snapshot(_TOKEN, chain, own, name, stack)


def chain_of(snapshot: Snapshot) -> tuple[Layer, ...]:
    """The layers *snapshot* stands for, keeping its frozen layers alive while held."""
    return snapshot._chain


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
    if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
        with contextlib.suppress(PermissionError):
            os.chown(space.upper, st.st_uid, st.st_gid)
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
