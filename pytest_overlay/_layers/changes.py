"""Layer changes in the vocabulary of container image diffs.

A layer on top of others is described by a list of :class:`Change`, the way
containerd's ``fs/diff.go`` and moby's ``pkg/archive/changes.go`` describe the writable
layer of a container:

- ``ADD``: the path exists in the layer and in no lower layer (as seen through them).
- ``MODIFY``: the path exists in the layer and below it: a copied-up file or directory
  (a directory is copied up when anything inside it changes, so its parents appear too),
  or an entry whose type changed (a directory replaced by a file or the reverse).
- ``DELETE``: the layer hides a path that exists below it, with a whiteout or because an
  opaque directory hides the lower directory's entries. A deleted tree is reported once,
  at its root.

Changes are sorted by path components, so a parent always comes before its children and
the list can be applied in order.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_overlay._layers import format as _format

__all__ = ["Change", "ChangeKind", "diff_upper", "sort_changes"]


class ChangeKind(enum.Enum):
    """What happened to a path in a layer."""

    ADD = "A"
    MODIFY = "M"
    DELETE = "D"


@dataclass(frozen=True)
class Change:
    """One path that a layer adds, modifies or deletes, relative to the merged root."""

    kind: ChangeKind
    #: POSIX path relative to the merged root, without a leading ``/``.
    path: str

    def __str__(self) -> str:
        return f"{self.kind.value} {self.path}"


def sort_changes(changes: Iterable[Change]) -> list[Change]:
    """Sort *changes* so that parents precede children (component-wise path order)."""
    return sorted(changes, key=lambda c: (c.path.split("/"), c.kind.value))


class LowerView:
    """Read-only lookups in a stack of lower directories, top-most first.

    Lower layers may themselves hold whiteouts and opaque directories (the layers of a
    multi-layer image, or frozen snapshots), so a lookup walks the layers the way
    overlayfs does: the top-most entry decides the type, a non-directory or a whiteout
    ends the search, and an opaque directory stops the merge below it.
    """

    def __init__(self, lowers: Sequence[Path]) -> None:
        self._lowers = tuple(lowers)

    def _resolve(self, rel: str) -> tuple[int | None, list[Path]]:
        """Return (file type bits, contributing layer paths) for *rel*, or (None, [])."""
        layers = list(self._lowers)
        kind: int | None = stat.S_IFDIR
        parts = [p for p in rel.split("/") if p]
        for index, name in enumerate(parts):
            kind = None
            contributing: list[Path] = []
            for layer in layers:
                path = layer / name
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                except NotADirectoryError:
                    break
                if _format.is_whiteout(path, st):
                    break
                file_type = stat.S_IFMT(st.st_mode)
                if kind is None:
                    kind = file_type
                elif file_type != stat.S_IFDIR:
                    # A non-directory below a directory ends the merge.
                    break
                contributing.append(path)
                if file_type != stat.S_IFDIR or _format.is_opaque(path):
                    break
            if kind is None:
                return None, []
            if kind != stat.S_IFDIR and index < len(parts) - 1:
                return None, []
            layers = contributing
        return kind, layers

    def kind(self, rel: str) -> int | None:
        """The ``S_IFMT`` bits of *rel* as the lowers show it, or None if it is absent."""
        return self._resolve(rel)[0]

    def listdir(self, rel: str) -> set[str]:
        """Names visible in directory *rel* through the lowers (empty if not a directory)."""
        kind, layers = self._resolve(rel)
        if kind != stat.S_IFDIR:
            return set()
        return merged_listing(layers)


def merged_listing(directories: Iterable[str | os.PathLike[str]]) -> set[str]:
    """Names a reader sees in the union of *directories* (one directory's layers, top
    first, already cut at an opaque one): a whiteout hides the name in the layers below."""
    names: set[str] = set()
    hidden: set[str] = set()
    for directory in directories:
        markers = _format.marker_names(directory)
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name in names or entry.name in hidden or entry.name in markers:
                    continue
                if _format.is_whiteout(entry.path, entry.stat(follow_symlinks=False)):
                    hidden.add(entry.name)
                else:
                    names.add(entry.name)
    return names


def diff_upper(upper: Path, lowers: Sequence[Path]) -> list[Change]:
    """Describe what the layer directory *upper* changes on top of *lowers*.

    Only the upper layer is walked; the lowers are looked up per entry, so the cost
    follows the size of the upper layer, not of the base.
    """
    view = LowerView(lowers)
    return sort_changes(_walk(upper, "", view, lower_visible=True))


def _walk(
    directory: Path, prefix: str, view: LowerView, *, lower_visible: bool
) -> Iterator[Change]:
    markers = _format.marker_names(directory)
    with os.scandir(directory) as it:
        entries = [e for e in it if e.name not in markers]
    for entry in entries:
        rel = f"{prefix}{entry.name}"
        st = entry.stat(follow_symlinks=False)
        lower_kind = view.kind(rel) if lower_visible else None
        if _format.is_whiteout(entry.path, st):
            if lower_kind is not None:
                yield Change(ChangeKind.DELETE, rel)
            continue
        if lower_kind is None:
            yield Change(ChangeKind.ADD, rel)
        else:
            yield Change(ChangeKind.MODIFY, rel)
        if not stat.S_ISDIR(st.st_mode):
            continue
        below = lower_kind == stat.S_IFDIR
        if below and _format.is_opaque(entry.path):
            # A whiteout inside an opaque directory hides nothing more, so it does not
            # count as present: its name is reported deleted like any other hidden one.
            present = {
                e.name
                for e in _entries(entry.path)
                if not _format.is_whiteout(e.path, e.stat(follow_symlinks=False))
            }
            for name in sorted(view.listdir(rel) - present):
                yield Change(ChangeKind.DELETE, f"{rel}/{name}")
            below = False
        yield from _walk(Path(entry.path), f"{rel}/", view, lower_visible=below)


def _entries(path: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return list(it)
