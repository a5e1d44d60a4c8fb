"""Hypothesis strategies for names, layers, stacks of layers and operations.

Names come from a small pool per run so that layers overlap and operations hit existing
paths; the pool mixes plain letters with names that need care (spaces, unicode, leading
dashes, ``.wh.`` look-alikes, characters that mount options escape).

Modes always give the owner full access (``rwx`` on directories, ``rw`` on files), so a
run means the same as root and as an unprivileged owner: permission checks are outside
the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TypeAlias

from hypothesis import strategies as st

from pytest_overlay._layers.layer import (
    WHITEOUT,
    Dir,
    Entry,
    File,
    Layer,
    Symlink,
    Whiteout,
    parent_of,
)
from pytest_overlay._layers.union import UnionView, join
from pytest_overlay.model import UnionModel, UnmodelledError
from pytest_overlay.testing.ops import (
    AppendBytes,
    Chmod,
    CreateSymlink,
    Link,
    Mkdir,
    Operation,
    Rename,
    Rmdir,
    Truncate,
    Unlink,
    WriteBytes,
)

__all__ = [
    "DIR_MODES",
    "FILE_MODES",
    "UMASKS",
    "layer_stacks",
    "layers",
    "name_pools",
    "names",
    "operation_sequences",
    "operations",
    "symlink_targets",
    "without_inert_whiteouts",
]

FILE_MODES = (0o644, 0o600, 0o640, 0o666, 0o755, 0o700)
DIR_MODES = (0o755, 0o700, 0o750, 0o775, 0o777, 0o711)
UMASKS = (0o022, 0o002, 0o027, 0o077, 0o000)

# Names that have broken path handling somewhere: shell-option look-alikes, whitespace,
# combining and wide characters, overlay/OCI marker look-alikes, mount option syntax.
TRICKY_NAMES = (
    " ",
    "a b",
    "-rf",
    "--",
    "é",
    "e\u0301",
    "日本",
    ".hidden",
    "...",
    "..a",
    ".wh.a",
    # ".wh..wh..opq" and ".wh..opq" are legal names on kernel overlayfs, but inside an
    # opaque directory changes.diff_upper takes them for fuse-overlayfs's marker files
    # (see tests/test_testing.py, the strict xfail).
    "a\nb",
    "*",
    "\\",
    ":",
    ",",
)


def _is_legal(name: str) -> bool:
    return name not in (".", "..") and len(name.encode("utf-8", "surrogateescape")) <= 255


def names() -> st.SearchStrategy[str]:
    """One legal file name: plain, tricky, or arbitrary text without ``/`` and NUL."""
    arbitrary = st.text(
        st.characters(exclude_categories=["Cs"], exclude_characters="/\0"),
        min_size=1,
        max_size=8,
    ).filter(_is_legal)
    return st.one_of(st.sampled_from("abcd"), st.sampled_from(TRICKY_NAMES), arbitrary)


def name_pools(min_size: int = 2, max_size: int = 5) -> st.SearchStrategy[tuple[str, ...]]:
    """A pool of distinct names for one run, always holding at least one plain letter."""
    return st.tuples(
        st.sampled_from("abc"),
        st.lists(names(), min_size=min_size - 1, max_size=max_size - 1),
    ).map(lambda t: tuple(dict.fromkeys((t[0], *t[1]))))


def symlink_targets(pool: Sequence[str]) -> st.SearchStrategy[str]:
    """Relative targets of one or two names from *pool*: never ``..``, never absolute,
    so no walk through them can leave the tree."""
    name = st.sampled_from(list(pool))
    return st.one_of(name, st.builds(join, name, name))


# A tree under construction: name -> entry, or name -> (directory, its children).
_Tree: TypeAlias = Mapping[str, "Entry | tuple[Dir, _Tree]"]


def layers(
    pool: Sequence[str] | None = None,
    *,
    max_depth: int = 2,
    max_children: int = 3,
    whiteouts: bool = True,
    opaque: bool = True,
) -> st.SearchStrategy[Layer]:
    """A layer of files, directories, symlinks and (optionally) whiteouts and opaque
    directories, names drawn from *pool* (or from :func:`names`)."""
    name = st.sampled_from(list(pool)) if pool else names()
    targets = symlink_targets(pool) if pool else names()
    leaves: list[st.SearchStrategy[Entry]] = [
        st.builds(File, st.binary(max_size=12), st.sampled_from(FILE_MODES)),
        st.builds(Symlink, targets),
    ]
    if whiteouts:
        leaves.append(st.just(WHITEOUT))
    directory = st.builds(
        Dir, st.sampled_from(DIR_MODES), st.booleans() if opaque else st.just(False)
    )

    def tree(depth: int) -> st.SearchStrategy[_Tree]:
        node: st.SearchStrategy[Entry | tuple[Dir, _Tree]] = st.one_of(*leaves, directory)
        if depth < max_depth:
            node = st.one_of(node, st.tuples(directory, tree(depth + 1)))
        return st.dictionaries(name, node, max_size=max_children)

    return tree(0).map(_flatten)


def _flatten(tree: _Tree) -> Layer:
    entries: dict[str, Entry] = {}

    def walk(node: _Tree, here: str) -> None:
        for key, value in node.items():
            path = join(here, key)
            if isinstance(value, tuple):
                entries[path] = value[0]
                walk(value[1], path)
            else:
                entries[path] = value

    walk(tree, "")
    return Layer(entries)


def layer_stacks(
    pool: Sequence[str], *, min_layers: int = 1, max_layers: int = 4
) -> st.SearchStrategy[list[Layer]]:
    """Lower layers, top-most first, sharing *pool* so that they overlap."""
    return st.lists(layers(pool), min_size=min_layers, max_size=max_layers)


def without_inert_whiteouts(lowers: Sequence[Layer]) -> list[Layer]:
    """*lowers* without the whiteouts that hide nothing: no layer below theirs shows the
    name in the directory they sit in (e.g. in the lowest layer, or in an opaque dir).

    The union is the same with or without them, but the kernel may list such a whiteout
    in readdir as a name that ``lstat`` then cannot find (measured on 6.18: character
    device whiteouts in a directory that is not merged with another layer, and xattr
    whiteouts in the lowest layer). Tests against the kernel use this.
    """
    pruned = []
    for index, layer in enumerate(lowers):
        # Layer 0 of this view is ``layer`` itself; the rest are the layers below it.
        view = UnionView(lowers[index:])
        inert: dict[str, None] = {}
        for path, entry in layer.items():
            if isinstance(entry, Whiteout):
                parent = view.stack(parent_of(path))
                assert parent is not None, path  # every parent is a Dir of ``layer``
                if view.child(parent[1:], path) is None:
                    inert[path] = None
        pruned.append(layer.with_entries(inert) if inert else layer)
    return pruned


# Built once: Hypothesis validates a strategy object on its first draw, and validating a
# fresh tree of one_of/builds on every step of a state machine costs more than the step.
_DATA = st.binary(max_size=8)
_LENGTHS = st.integers(0, 10)
_DIR_MODES = st.sampled_from(DIR_MODES)
_ANY_MODES = st.sampled_from(FILE_MODES + DIR_MODES)
_KINDS = st.sampled_from(
    (WriteBytes, AppendBytes, Truncate, Mkdir, Rmdir, Unlink, Rename, CreateSymlink, Chmod, Link)
)


def operations(model: UnionModel, pool: Sequence[str]) -> st.SearchStrategy[Operation]:
    """One operation aimed at *model*'s current state.

    Paths are existing ones (visible, or hidden in a lower layer) or a name from *pool*
    in an existing directory, so that most operations do something and every error path
    is still reachable.
    """
    merged = model.merged()
    known = set(merged) | set(model.upper())
    for lower in model.lowers:
        known.update(lower)
    return _operations(
        merged,
        tuple(sorted(known)),
        ("", *(p for p, e in merged.items() if isinstance(e, Dir))),
        tuple(pool),
    )


@st.composite
def operation_sequences(
    draw: st.DrawFn,
    lowers: Sequence[Layer],
    pool: Sequence[str],
    *,
    max_size: int = 20,
    umask: int = 0o022,
) -> list[Operation]:
    """A script of up to *max_size* operations on a union of *lowers*.

    Each operation is aimed at the state the previous ones leave (they are applied to a
    scratch :class:`~pytest_overlay.model.UnionModel` while drawing), for a plain
    ``@given`` test; the state machine does the same one step at a time.
    """
    model = UnionModel(lowers, umask=umask)
    script: list[Operation] = []
    for _ in range(draw(st.integers(0, max_size))):
        op = draw(operations(model, pool))
        # A failing operation is still part of the script.
        with contextlib.suppress(OSError, UnmodelledError):
            op.apply(model)
        script.append(op)
    return script


@st.composite
def _operations(
    draw: st.DrawFn,
    merged: Layer,
    known: tuple[str, ...],
    directories: tuple[str, ...],
    pool: tuple[str, ...],
) -> Operation:
    def path() -> str:
        if len(known) > 0 and draw(st.booleans()):
            return draw(st.sampled_from(known))
        return join(draw(st.sampled_from(directories)), draw(st.sampled_from(pool)))

    kind = draw(_KINDS)
    if kind in (WriteBytes, AppendBytes):
        return kind(path(), draw(_DATA))
    if kind is Truncate:
        return Truncate(path(), draw(_LENGTHS))
    if kind is Mkdir:
        return Mkdir(path(), draw(_DIR_MODES))
    if kind in (Rmdir, Unlink):
        return kind(path())
    if kind in (Rename, Link):
        return kind(path(), path())
    if kind is CreateSymlink:
        return CreateSymlink(draw(symlink_targets(pool)), path())
    target = path()
    # A directory (or a symlink that may lead to one) must keep its owner's rwx, or an
    # unprivileged run would meet EACCES, which the model does not cover.
    modes = _ANY_MODES if isinstance(merged.get(target), File) else _DIR_MODES
    return Chmod(target, draw(modes))
