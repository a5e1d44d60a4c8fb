"""syrupy extensions: what a test changed, or a whole directory tree, as a readable snapshot.

Install with ``pip install 'pytest-overlay[syrupy]'``. Each snapshot is a text file of its
own under ``__snapshots__/<test module>/``, written by ``pytest --snapshot-update`` and
reviewed like code. One line per entry: its path, type and permission bits, a symlink's
target, a file's size; below a small UTF-8 text file, its content, one ``|`` line per line,
so a mismatch shows as a line diff of the file. Larger or binary files show a sha256.

- :class:`OverlayChangesExtension`: what changed in a union, given the ``OverlayStack``
  (since its base), a ``Snapshot`` (since that snapshot), or a list of ``Change`` (kinds
  and paths only, e.g. ``overlay_stack.changes()``).
- :class:`OverlayTreeExtension`: every entry of a directory, e.g. ``overlay_stack.merged``.

Updating, unused-snapshot detection and their pytest-xdist support are syrupy's own.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

try:
    from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode
except ImportError as error:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "pytest_overlay.syrupy needs syrupy (5.0 or newer): pip install 'pytest-overlay[syrupy]'"
    ) from error

from pytest_overlay._layers import render as _render
from pytest_overlay._layers.changes import Change
from pytest_overlay._layers.statediff import Delta, Entry
from pytest_overlay.snapshot import Snapshot
from pytest_overlay.stack import OverlayStack

if TYPE_CHECKING:
    from syrupy.types import PropertyFilter, PropertyMatcher, SerializableData, SerializedData

__all__ = ["OverlayChangesExtension", "OverlayTreeExtension"]

_CHANGES_HEADER = (
    "# pytest-overlay changes: <A added | M modified | D deleted> <path>  <type> <mode> [size]"
)
_TREE_HEADER = "# pytest-overlay tree: <path>  <type> <mode> [size]"
#: Before each line of a text file's content. ``|`` keeps blank and indented lines visible.
_CONTENT = "    | "
_NO_EOL = "    \\ no newline at end of file"


def _entry_lines(path: str, entry: Entry, limit: int) -> list[str]:
    """The line of one entry, and below a small text file its content."""
    if entry.kind != stat.S_IFREG:
        return [f"{_render.quote(path)}  {_render.describe(entry)}"]
    text = _render.text_of(entry, limit)
    if text is None:
        try:
            shown = _render.describe(entry)
        except OSError as error:  # e.g. mode 000 for an ordinary user
            shown = f"{_render.describe(entry, digest=False)} (unreadable: {error.strerror})"
        return [f"{_render.quote(path)}  {shown}"]
    lines = [f"{_render.quote(path)}  {_render.describe(entry, digest=False)}"]
    lines.extend(_content_line(line) for line in text.split("\n")[:-1])
    if text and not text.endswith("\n"):
        lines.append(_content_line(text.rsplit("\n", 1)[-1]))
        lines.append(_NO_EOL)
    return lines


def _content_line(line: str) -> str:
    # Trailing whitespace of the content stays (it may be the change); none is added.
    return f"{_CONTENT}{line}" if line else _CONTENT.rstrip()


def _document(header: str, lines: Iterable[str]) -> str:
    return "\n".join([header, *lines]) + "\n"


def _refuse_filters(exclude: PropertyFilter | None, include: PropertyFilter | None) -> None:
    # syrupy always passes a matcher of its own (it maps nested assertions), so matchers
    # cannot be refused the same way; they are documented as not applying.
    if exclude is not None or include is not None:
        raise TypeError(
            "pytest-overlay's syrupy extensions do not take exclude or include: "
            "compare a subdirectory instead, or drop paths from the list of changes"
        )


class _TextExtension(SingleFileSnapshotExtension):
    # A text file per snapshot, so that syrupy shows a mismatch as a diff of lines.
    _write_mode = WriteMode.TEXT
    #: Regular files up to this many bytes of UTF-8 text are stored line by line.
    text_limit: ClassVar[int] = _render.TEXT_LIMIT

    def diff_lines(
        self, serialized_data: SerializedData, snapshot_data: SerializedData
    ) -> Iterator[str]:
        # syrupy shows one line of context around a change, so a changed line deep in a
        # file would not show which file it is in: name the differing entries first.
        received, stored = _blocks(str(serialized_data)), _blocks(str(snapshot_data))
        differing = [k for k in {**stored, **received} if stored.get(k) != received.get(k)]
        if differing:
            yield f"entries that differ: {', '.join(differing)}"
        yield from super().diff_lines(serialized_data, snapshot_data)


def _blocks(document: str) -> dict[str, list[str]]:
    """The lines of each entry of a serialised snapshot (its line, then its content)."""
    blocks: dict[str, list[str]] = {}
    current: list[str] = []
    for line in document.splitlines():
        if line.startswith("#"):
            continue
        if line.startswith(" "):  # content or a note below the current entry
            current.append(line)
            continue
        # Paths with spaces are quoted, so two spaces end the path part of an entry line.
        current = blocks.setdefault(line.split("  ", 1)[0], [])
        current.append(line)
    return blocks


class OverlayChangesExtension(_TextExtension):
    """Snapshot of what changed in a union, one line per change, text files inline.

    ``assert overlay_stack == snapshot(extension_class=OverlayChangesExtension)`` stores
    what changed since the stack's base; a :class:`~pytest_overlay.Snapshot` instead of
    the stack, what changed since that snapshot (both content-level, as
    :meth:`OverlayStack.diff <pytest_overlay.OverlayStack.diff>`: a file copied up but
    left as it was is no change). A list of :class:`~pytest_overlay.Change`, such as
    ``overlay_stack.changes()``, stores kinds and paths only.
    """

    file_extension = "changes.txt"

    def serialize(
        self,
        data: SerializableData,
        *,
        exclude: PropertyFilter | None = None,
        include: PropertyFilter | None = None,
        matcher: PropertyMatcher | None = None,
    ) -> SerializedData:
        _refuse_filters(exclude, include)
        if isinstance(data, OverlayStack):
            return _document(_CHANGES_HEADER, self._delta_lines(data._deltas_since()))
        if isinstance(data, Snapshot):
            return _document(_CHANGES_HEADER, self._delta_lines(data._deltas()))
        if isinstance(data, Iterable) and not isinstance(data, (str, bytes)):
            items = list(data)
            if all(isinstance(item, Change) for item in items):
                return _document(_CHANGES_HEADER, (_change_line(c) for c in items))
        raise TypeError(
            f"OverlayChangesExtension compares an OverlayStack, a Snapshot or a list of "
            f"Change, not {type(data).__name__}: for a directory use OverlayTreeExtension"
        )

    def _delta_lines(self, deltas: list[Delta]) -> Iterator[str]:
        for delta in deltas:
            if delta.after is None:
                yield _change_line(delta.change)
                continue
            first, *rest = _entry_lines(delta.change.path, delta.after, self.text_limit)
            yield f"{delta.change.kind.value} {first}"
            yield from rest


def _change_line(change: Change) -> str:
    return f"{change.kind.value} {_render.quote(change.path)}"


class OverlayTreeExtension(_TextExtension):
    """Snapshot of a directory tree: every entry, its type and mode, text files inline.

    ``assert snapshot(extension_class=OverlayTreeExtension) == overlay_stack.merged``
    stores each entry under the directory (symlinks are not followed) in path order,
    parents first, with paths relative to it; ``.`` is the directory itself.
    """

    file_extension = "tree.txt"

    def serialize(
        self,
        data: SerializableData,
        *,
        exclude: PropertyFilter | None = None,
        include: PropertyFilter | None = None,
        matcher: PropertyMatcher | None = None,
    ) -> SerializedData:
        _refuse_filters(exclude, include)
        if not isinstance(data, (str, os.PathLike)):
            raise TypeError(
                f"OverlayTreeExtension compares a directory path, not {type(data).__name__}: "
                "pass e.g. overlay_stack.merged; for changes use OverlayChangesExtension"
            )
        root = Path(data)
        if not root.is_dir():
            raise ValueError(f"OverlayTreeExtension needs a directory, and {root} is not one")
        entry = Entry.from_path(root, root.stat())
        return _document(_TREE_HEADER, [f".  {_render.describe(entry)}", *self._walk(root, "")])

    def _walk(self, directory: Path, prefix: str) -> Iterator[str]:
        try:
            with os.scandir(directory) as it:
                names = sorted(item.name for item in it)
        except OSError as error:
            yield f"    (not listed: {error.strerror})"
            return
        for name in names:
            path = directory / name
            entry = Entry.from_path(path, path.lstat())
            yield from _entry_lines(prefix + name, entry, self.text_limit)
            if entry.is_dir:
                yield from self._walk(path, f"{prefix}{name}/")
