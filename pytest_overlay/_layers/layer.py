"""An abstract, immutable layer: POSIX relative path -> entry. Pure, no I/O.

A layer is what one directory of an overlay stack (or one OCI layer tarball) holds: regular
files, directories (possibly opaque), symlinks and whiteouts. Only what union semantics
depend on is represented; timestamps, ownership, xattrs other than the opaque marker, hard
link identity and special files are deliberately left out (see ``docs/model.rst``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final, final

__all__ = [
    "WHITEOUT",
    "Dir",
    "Entry",
    "File",
    "Layer",
    "LayerError",
    "Symlink",
    "Whiteout",
    "apply_layer",
    "check_path",
    "parent_of",
    "path_key",
    "squash",
]


class LayerError(ValueError):
    """A layer (in memory, on disk or in a tarball) that cannot be represented or written."""


def _check_mode(mode: int) -> None:
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode {mode:#o} has bits outside 0o7777 (permission bits only)")


@final
@dataclass(frozen=True, slots=True)
class File:
    """A regular file: its data and permission bits."""

    data: bytes = b""
    mode: int = 0o644

    def __post_init__(self) -> None:
        _check_mode(self.mode)

    def __repr__(self) -> str:
        return f"File({self.data!r}, mode={self.mode:#o})"


@final
@dataclass(frozen=True, slots=True)
class Dir:
    """A directory. An opaque one hides same-named directories in the layers below it."""

    mode: int = 0o755
    opaque: bool = False

    def __post_init__(self) -> None:
        _check_mode(self.mode)

    def __repr__(self) -> str:
        return f"Dir(mode={self.mode:#o}{', opaque=True' if self.opaque else ''})"


@final
@dataclass(frozen=True, slots=True)
class Symlink:
    """A symbolic link. Its own mode is always 0o777 on Linux, so only the target counts."""

    target: str

    def __post_init__(self) -> None:
        # symlink(2) refuses an empty target (ENOENT) and no path may hold a NUL byte.
        if not self.target or "\0" in self.target:
            raise ValueError(f"invalid symlink target {self.target!r}")

    def __repr__(self) -> str:
        return f"Symlink({self.target!r})"


@final
@dataclass(frozen=True, slots=True)
class Whiteout:
    """A deletion marker: hides the same name in every layer below."""

    def __repr__(self) -> str:
        return "WHITEOUT"


#: The one whiteout value; all whiteouts are equal anyway.
WHITEOUT: Final = Whiteout()

Entry = File | Dir | Symlink | Whiteout


def check_path(path: str) -> str:
    """Return *path* if it is a normalised POSIX relative path, else raise ValueError.

    The layer root itself has no path: "" is refused, like ``/x``, ``a//b``, ``a/``,
    ``./a`` and ``a/../b``. Normalising silently would hide bugs in callers that
    build paths by hand.
    """
    if not isinstance(path, str) or not path:
        raise ValueError(f"expected a non-empty relative path, got {path!r}")
    if "\0" in path:
        raise ValueError(f"path {path!r} contains a NUL byte")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(
                f"path {path!r} is not normalised: no leading or trailing '/', no empty, "
                "'.' or '..' components"
            )
    return path


def parent_of(path: str) -> str:
    """The parent of *path*; "" for a top-level name (the layer root)."""
    return path.rpartition("/")[0]


def path_key(path: str) -> list[str]:
    """Sort key that puts every directory before its contents (component-wise order)."""
    return path.split("/")


@final
class Layer(Mapping[str, Entry]):
    """One immutable layer: a mapping from relative path to :data:`Entry`.

    The mapping is a real tree: every entry's parent directory is in the layer too, as a
    :class:`Dir` (so an entry can never sit under a file, a symlink or a whiteout).
    Iteration is in component-wise path order, parents first.
    """

    __slots__ = ("_children", "_entries", "_hash")

    def __init__(self, entries: Mapping[str, Entry] | None = None) -> None:
        checked: dict[str, Entry] = {}
        for path, entry in (entries or {}).items():
            check_path(path)
            if not isinstance(entry, (File, Dir, Symlink, Whiteout)):
                raise TypeError(
                    f"{path!r}: expected File, Dir, Symlink or Whiteout, got {entry!r}"
                )
            checked[path] = entry
        children: dict[str, list[str]] = {"": []}
        for path in checked:
            parent = parent_of(path)
            if parent and not isinstance(checked.get(parent), Dir):
                found = checked.get(parent)
                what = "missing" if found is None else f"a {type(found).__name__}"
                raise LayerError(
                    f"{path!r} needs its parent {parent!r} to be a Dir in the layer, but it is "
                    f"{what} (use Layer.build() to add missing parents)"
                )
            children.setdefault(parent, []).append(path.rpartition("/")[2])
        self._entries = {p: checked[p] for p in sorted(checked, key=path_key)}
        self._children = {p: tuple(sorted(names)) for p, names in children.items()}
        self._hash: int | None = None

    @classmethod
    def build(
        cls,
        entries: Mapping[str, Entry],
        *,
        dir_mode: int = 0o755,
    ) -> Layer:
        """Make a layer from *entries*, adding missing parent directories as ``Dir(dir_mode)``.

        ``Layer.build({"a/b/c": File(b"x")})`` is the short way to write a test tree.
        """
        items = dict(entries)
        for path in list(items):
            parent = parent_of(check_path(path))
            while parent and parent not in items:
                items[parent] = Dir(dir_mode)
                parent = parent_of(parent)
        return cls(items)

    def __getitem__(self, path: str) -> Entry:
        return self._entries[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return path in self._entries

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._entries.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"Layer({self._entries!r})"

    def children(self, path: str = "") -> tuple[str, ...]:
        """Names (not paths) directly inside directory *path* ("" is the root), sorted."""
        return self._children.get(path, ())

    def with_entries(self, updates: Mapping[str, Entry | None]) -> Layer:
        """A copy with *updates* applied; a value of None removes that path and its subtree."""
        entries = dict(self._entries)
        for path, entry in updates.items():
            if entry is None:
                prefix = path + "/"
                for existing in [p for p in entries if p == path or p.startswith(prefix)]:
                    del entries[existing]
            else:
                entries[path] = entry
        return Layer(entries)


def apply_layer(base: Mapping[str, Entry], layer: Mapping[str, Entry]) -> Layer:
    """Apply *layer* on top of the flat tree *base*, the way an image builder does.

    This is the bottom-up way to read a stack of layers (OCI "applying changesets"),
    an independent check of the top-down lookup that overlayfs and
    :class:`~pytest_overlay.model.UnionModel` use: a whiteout deletes the subtree below
    it, an opaque directory drops what *base* has inside it, a non-directory replaces
    whatever was there, and a directory over a directory merges (taking the new mode).
    The result holds no whiteouts and no opaque flags.
    """
    if not isinstance(layer, Layer):
        layer = Layer(layer)  # validates that every entry hangs off a directory
    tree = dict(base)

    def drop(path: str, *, keep_root: bool) -> None:
        """Delete what is below *path*, and *path* itself unless *keep_root*."""
        prefix = path + "/"
        for existing in [p for p in tree if p.startswith(prefix)]:
            del tree[existing]
        if not keep_root:
            tree.pop(path, None)

    # Parents come first, so a directory is in place before anything is put inside it.
    for path, entry in layer.items():
        if isinstance(entry, Whiteout):
            drop(path, keep_root=False)
        elif isinstance(entry, Dir):
            if not isinstance(tree.get(path), Dir):
                drop(path, keep_root=False)
            elif entry.opaque:
                drop(path, keep_root=True)
            tree[path] = Dir(entry.mode)
        else:
            drop(path, keep_root=False)
            tree[path] = entry
    return Layer(tree)


def squash(layers: Iterable[Mapping[str, Entry]]) -> Layer:
    """Flatten a stack of layers, given top-most first (overlayfs ``lowerdir`` order)."""
    tree: Layer = Layer()
    for layer in reversed(list(layers)):
        tree = apply_layer(tree, layer)
    return tree
