"""Top-down lookups through a stack of layers, the way overlayfs resolves a path. Pure.

Shared by :class:`~pytest_overlay.model.UnionModel` (upper + lowers) and by
:func:`diff_layer` (lowers only), so both read a stack with exactly one set of rules:

- the top-most layer that has the name decides its type; a whiteout there hides it;
- a non-directory ends the lookup; below a directory, a non-directory or a whiteout also
  ends it (overlayfs ``ovl_lookup_single``: a lower non-directory is never merged);
- an opaque directory contributes, but nothing below it does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from pytest_overlay._layers.changes import Change, ChangeKind, sort_changes
from pytest_overlay._layers.layer import Dir, Entry, Layer, Whiteout

__all__ = ["Source", "Stack", "UnionView", "diff_layer"]

#: Indices (into the view's layers) of the layers that contribute to one path, top first.
Stack = tuple[int, ...]


class Source(Protocol):
    """What a lookup needs from one layer; :class:`~pytest_overlay.layers.Layer` has it."""

    def get(self, path: str, /) -> Entry | None: ...

    def children(self, path: str, /) -> Iterable[str]: ...


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class UnionView:
    """Lookups in *layers*, top-most first. Holds no state of its own besides the list."""

    def __init__(self, layers: Sequence[Source]) -> None:
        self.layers = tuple(layers)

    def root(self) -> Stack:
        """Every layer contributes to the root directory."""
        return tuple(range(len(self.layers)))

    def child(self, parent: Stack, path: str) -> Stack | None:
        """The stack of *path* given the stack of its parent directory; None if absent."""
        found: list[int] = []
        for index in parent:
            entry = self.layers[index].get(path)
            if entry is None:
                continue
            if isinstance(entry, Whiteout):
                break
            if found and not isinstance(entry, Dir):
                break
            found.append(index)
            if not isinstance(entry, Dir) or entry.opaque:
                break
        return tuple(found) or None

    def stack(self, path: str) -> Stack | None:
        """The stack of *path* walked from the root (no symlinks are followed)."""
        stack: Stack | None = self.root()
        if not path:
            return stack
        prefix = ""
        for name in path.split("/"):
            if stack is None or (prefix and not isinstance(self.entry(stack, prefix), Dir)):
                return None
            prefix = join(prefix, name)
            stack = self.child(stack, prefix)
        return stack

    def entry(self, stack: Stack, path: str) -> Entry:
        """The entry a reader sees at *path*: the one in the top-most contributing layer."""
        entry = self.layers[stack[0]].get(path)
        assert entry is not None, f"stack {stack} does not hold {path!r}"
        return entry

    def listdir(self, stack: Stack, path: str) -> list[str]:
        """Visible names in directory *path* (whose stack is *stack*), sorted."""
        decided: set[str] = set()
        visible: list[str] = []
        for index in stack:
            layer = self.layers[index]
            for name in layer.children(path):
                if name in decided:
                    continue
                decided.add(name)
                if not isinstance(layer.get(join(path, name)), Whiteout):
                    visible.append(name)
        return sorted(visible)

    def flatten(self) -> Layer:
        """The merged tree as a reader sees it: no whiteouts, no opaque flags."""
        out: dict[str, Entry] = {}

        def walk(path: str, stack: Stack) -> None:
            for name in self.listdir(stack, path):
                child_path = join(path, name)
                child = self.child(stack, child_path)
                assert child is not None, child_path
                entry = self.entry(child, child_path)
                if isinstance(entry, Dir):
                    out[child_path] = Dir(entry.mode)
                    walk(child_path, child)
                else:
                    out[child_path] = entry

        walk("", self.root())
        return Layer(out)


def diff_layer(upper: Layer, lowers: Sequence[Layer]) -> list[Change]:
    """What *upper* changes on top of *lowers* (top-most first), as sorted :class:`Change`.

    The pure twin of :func:`pytest_overlay.changes.diff_upper`, with the same vocabulary:
    ADD for a path no lower shows, MODIFY for a path that exists below too (copy-up, type
    change, parent of a change), DELETE for a whiteout over a visible lower path and for
    each lower name that an opaque directory hides, reported once at the hidden root.
    """
    view = UnionView(lowers)
    changes: list[Change] = []

    def walk(path: str, below: Stack | None) -> None:
        for name in upper.children(path):
            child_path = join(path, name)
            entry = upper[child_path]
            lower = view.child(below, child_path) if below is not None else None
            if isinstance(entry, Whiteout):
                if lower is not None:
                    changes.append(Change(ChangeKind.DELETE, child_path))
                continue
            kind = ChangeKind.ADD if lower is None else ChangeKind.MODIFY
            changes.append(Change(kind, child_path))
            if not isinstance(entry, Dir):
                continue
            merged_below = (
                lower
                if lower is not None and isinstance(view.entry(lower, child_path), Dir)
                else None
            )
            if merged_below is not None and entry.opaque:
                # A whiteout inside an opaque directory hides nothing more than the opacity
                # already does, so only real entries count as present.
                present = {
                    n
                    for n in upper.children(child_path)
                    if not isinstance(upper[join(child_path, n)], Whiteout)
                }
                for hidden in view.listdir(merged_below, child_path):
                    if hidden not in present:
                        changes.append(Change(ChangeKind.DELETE, join(child_path, hidden)))
                merged_below = None
            walk(child_path, merged_below)

    walk("", view.root())
    return sort_changes(changes)
