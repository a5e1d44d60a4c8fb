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

import weakref
from pathlib import Path
from typing import Final, Protocol, final

from pytest_overlay._chain import FrozenLayer, Layer, chain_paths, common_suffix
from pytest_overlay._errors import OverlayError
from pytest_overlay._layers import statediff as _statediff
from pytest_overlay._layers.changes import Change, diff_upper

__all__ = ["Snapshot"]


class _Owner(Protocol):
    """What a snapshot needs of the stack that took it.

    :class:`~pytest_overlay.OverlayStack` fits; naming it here would make this module and
    ``stack`` import each other.
    """

    @property
    def mounted(self) -> bool: ...

    def _deltas_since(self, since: Snapshot | None = None) -> list[_statediff.Delta]: ...


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
        stack: _Owner,
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

    def _owner(self) -> _Owner:
        stack = self._stack()
        if stack is None or not stack.mounted:
            raise OverlayError(
                f"{self!r}: the stack that took it is closed, so there is no live view to "
                "compare with; pass another snapshot, or mount a stack on it and call "
                "stack.diff(snapshot)"
            )
        return stack


def make_snapshot(
    chain: tuple[Layer, ...], own: FrozenLayer | None, name: str, stack: _Owner
) -> Snapshot:
    """A new :class:`Snapshot` of *stack* standing for *chain* (for OverlayStack only)."""
    return Snapshot(_TOKEN, chain, own, name, stack)


def chain_of(snapshot: Snapshot) -> tuple[Layer, ...]:
    """The layers *snapshot* stands for, keeping its frozen layers alive while held."""
    return snapshot._chain
