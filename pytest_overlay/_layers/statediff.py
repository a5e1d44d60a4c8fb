"""Content-level differences between two states of a union, in the Change vocabulary.

A *state* is either a chain of layer directories read the way overlayfs reads its lowers
(a snapshot), or a plain directory (the live merged view of a mounted stack). Two states
built on the same bottom layers can only differ where the layers above that common part
touch, so only those paths are compared: the cost follows the number of entries those
layers hold, not the size of the tree.

"Content-level" means that what a reader of the tree could tell apart counts: the type,
permission bits, owner, file data, symlink target and device number. Timestamps and
xattrs do not, and neither does a copy-up that left a file as it was.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_overlay._layers import format as _format
from pytest_overlay._layers.changes import Change, ChangeKind, merged_listing, sort_changes

__all__ = [
    "ChainState",
    "Delta",
    "DirState",
    "Entry",
    "diff_states",
    "touched",
    "touched_by_changes",
]

_CHUNK = 1 << 16


@dataclass(frozen=True)
class Entry:
    """One path as a state shows it: where to read it, and the attributes a diff compares."""

    #: Where the entry lives on disk: in a layer directory, or under the merged view.
    source: Path
    #: The ``S_IFMT`` bits.
    kind: int
    #: The permission bits (``S_IMODE``).
    mode: int
    uid: int
    gid: int
    size: int
    rdev: int
    #: The symlink target, for symlinks.
    target: str | None
    dev: int
    ino: int

    @classmethod
    def from_path(cls, source: Path, st: os.stat_result) -> Entry:
        target = os.readlink(source) if stat.S_ISLNK(st.st_mode) else None
        return cls(
            source,
            stat.S_IFMT(st.st_mode),
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            st.st_size,
            st.st_rdev,
            target,
            st.st_dev,
            st.st_ino,
        )

    @property
    def is_dir(self) -> bool:
        return self.kind == stat.S_IFDIR


def same_content(a: Entry, b: Entry) -> bool:
    """Whether a reader could tell *a* and *b* apart (timestamps and xattrs aside)."""
    if (a.kind, a.mode, a.uid, a.gid) != (b.kind, b.mode, b.uid, b.gid):
        return False
    if a.kind == stat.S_IFREG:
        if a.size != b.size:
            return False
        if (a.dev, a.ino) == (b.dev, b.ino):
            return True
        return _same_bytes(a.source, b.source)
    if a.kind == stat.S_IFLNK:
        return a.target == b.target
    if a.kind in (stat.S_IFCHR, stat.S_IFBLK):
        return a.rdev == b.rdev
    return True


def _same_bytes(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            chunk = fa.read(_CHUNK)
            if chunk != fb.read(_CHUNK):
                return False
            if not chunk:
                return True


@dataclass(frozen=True)
class ChainNode:
    entry: Entry
    #: Every layer's entry that contributes to this path, top-most first (several only
    #: for merged directories).
    sources: tuple[Path, ...]


class ChainState:
    """A stack of layer directories (top-most first), read the way overlayfs reads lowers.

    Whiteouts hide a name in the layers below; a non-directory ends the lookup; an opaque
    directory contributes but hides the same-named directories below it.
    """

    def __init__(self, layers: Sequence[Path]) -> None:
        self.layers = tuple(layers)

    def root(self) -> ChainNode:
        top = self.layers[0]
        return ChainNode(Entry.from_path(top, os.lstat(top)), self.layers)

    def child(self, parent: ChainNode, name: str) -> ChainNode | None:
        found: list[Path] = []
        first: Entry | None = None
        last = len(parent.sources) - 1
        for index, directory in enumerate(parent.sources):
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if _format.is_whiteout(path, st):
                break
            if first is None:
                first = Entry.from_path(Path(path), st)
            elif not stat.S_ISDIR(st.st_mode):
                # A non-directory below a directory is not merged, and ends the lookup.
                break
            found.append(Path(path))
            # An opaque marker only matters if there are layers below to hide.
            if not first.is_dir or (index < last and _format.is_opaque(path)):
                break
        if first is None:
            return None
        return ChainNode(first, tuple(found))

    def names(self, node: ChainNode) -> set[str]:
        if not node.entry.is_dir:
            return set()
        return merged_listing(node.sources)

    @staticmethod
    def entry(node: ChainNode) -> Entry:
        return node.entry


class DirState:
    """A plain directory tree, such as the merged view of a mounted stack."""

    def __init__(self, root: Path) -> None:
        self.path = root

    def root(self) -> Entry:
        return Entry.from_path(self.path, os.lstat(self.path))

    @staticmethod
    def child(parent: Entry, name: str) -> Entry | None:
        path = parent.source / name
        try:
            return Entry.from_path(path, os.lstat(path))
        except FileNotFoundError:
            return None

    @staticmethod
    def names(node: Entry) -> set[str]:
        return set(os.listdir(node.source)) if node.is_dir else set()

    @staticmethod
    def entry(node: Entry) -> Entry:
        return node


State = ChainState | DirState
Node = ChainNode | Entry


@dataclass
class Touched:
    """The paths some layers touch, as a tree of names.

    A node is *complete* when a layer holds a whiteout, a non-directory or an opaque
    directory there: whatever lay below at that path is hidden in one state, so
    everything under it must be compared, not only what the layers hold.
    """

    children: dict[str, Touched] = field(default_factory=dict)
    complete: bool = False


def touched(layers: Sequence[Path], into: Touched | None = None) -> Touched:
    """Record every path that the layer directories *layers* hold."""
    tree = into if into is not None else Touched()
    for layer in layers:
        _touch(layer, tree)
    return tree


def _touch(directory: Path | str, tree: Touched) -> None:
    markers = _format.marker_names(directory)
    with os.scandir(directory) as entries:
        for item in entries:
            if item.name in markers:
                continue
            node = tree.children.setdefault(item.name, Touched())
            if node.complete:
                continue
            if not item.is_dir(follow_symlinks=False) or _format.is_opaque(item.path):
                node.complete = True
            else:
                _touch(item.path, node)


@dataclass(frozen=True)
class Delta:
    """One change between two states, with the entries before and after it."""

    change: Change
    before: Entry | None
    after: Entry | None


def diff_states(old: State, new: State, candidates: Touched) -> list[Delta]:
    """The changes that turn *old* into *new*, looking only at *candidates*.

    Every path where the two states may differ must be in *candidates* (see
    :func:`touched`): the layers above their common part, on both sides.
    """
    deltas = {d.change: d for d in _compare(old, new, old.root(), new.root(), "", candidates)}
    return [deltas[c] for c in sort_changes(deltas)]


def _compare(
    old: State, new: State, old_dir: Node, new_dir: Node, prefix: str, tree: Touched
) -> Iterator[Delta]:
    names: set[str] = set(tree.children)
    if tree.complete:
        names |= _names(old, old_dir) | _names(new, new_dir)
    for name in sorted(names):
        sub = tree.children.get(name, Touched())
        if tree.complete:
            sub = Touched(sub.children, complete=True)
        rel = f"{prefix}{name}"
        a, b = _child(old, old_dir, name), _child(new, new_dir, name)
        if b is None:
            if a is not None:
                yield Delta(Change(ChangeKind.DELETE, rel), _entry(old, a), None)
            continue
        after = _entry(new, b)
        if a is None:
            yield Delta(Change(ChangeKind.ADD, rel), None, after)
            yield from _added(new, b, f"{rel}/")
            continue
        before = _entry(old, a)
        if before.kind != after.kind:
            yield Delta(Change(ChangeKind.MODIFY, rel), before, after)
            yield from _added(new, b, f"{rel}/")
            continue
        if not same_content(before, after):
            yield Delta(Change(ChangeKind.MODIFY, rel), before, after)
        if before.is_dir:
            yield from _compare(old, new, a, b, f"{rel}/", sub)


def _added(state: State, directory: Node, prefix: str) -> Iterator[Delta]:
    """Everything under a directory that is new in *state*: all of it is added."""
    for name in sorted(_names(state, directory)):
        node = _child(state, directory, name)
        if node is None:
            continue
        entry = _entry(state, node)
        yield Delta(Change(ChangeKind.ADD, f"{prefix}{name}"), None, entry)
        if entry.is_dir:
            yield from _added(state, node, f"{prefix}{name}/")


# Dispatch by state type, so that mypy can pair each state with its own node type.


def _child(state: State, node: Node, name: str) -> Node | None:
    if isinstance(state, ChainState):
        assert isinstance(node, ChainNode)
        return state.child(node, name)
    assert isinstance(node, Entry)
    return state.child(node, name)


def _names(state: State, node: Node) -> set[str]:
    if isinstance(state, ChainState):
        assert isinstance(node, ChainNode)
        return state.names(node)
    assert isinstance(node, Entry)
    return state.names(node)


def _entry(state: State, node: Node) -> Entry:
    if isinstance(node, ChainNode):
        return node.entry
    return node


def touched_by_changes(changes: Iterable[Change], into: Touched | None = None) -> Touched:
    """Record the paths of a layer-level change list (what a live upper layer changes).

    An ADD may stand for a directory made afresh where an old one was hidden (the child
    of an opaque directory), and a DELETE for a hidden tree: both are compared in full.
    A MODIFY is a merged directory or a changed entry, compared as such.
    """
    tree = into if into is not None else Touched()
    for change in changes:
        node = tree
        for name in change.path.split("/"):
            node = node.children.setdefault(name, Touched())
        if change.kind is not ChangeKind.MODIFY:
            node.complete = True
    return tree
