"""``Snapshotter``: the value of the ``overlay_snapshot`` fixture, and its failure listings.

Imported only when a test requests the fixture, so sessions that never take a snapshot do
not pay for it at start-up.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Final, final

from pytest_overlay._layers import render as _render
from pytest_overlay._layers.changes import Change, ChangeKind
from pytest_overlay._layers.statediff import Delta, Entry
from pytest_overlay.snapshot import Snapshot
from pytest_overlay.stack import OverlayStack

__all__ = ["Snapshotter"]

#: Files up to this size that decode as UTF-8 get a unified diff in failure listings.
_DIFF_LIMIT: Final = 16 * 1024
_DIFF_LINES: Final = 40


def _parse_change(item: Change | str) -> Change:
    if isinstance(item, Change):
        return item
    kind, _, path = item.partition(" ")
    try:
        return Change(ChangeKind(kind), path.strip())
    except ValueError:
        raise ValueError(
            f"expected change {item!r} should read '<A|M|D> <path>', e.g. 'M config.toml'"
        ) from None


@final
class Snapshotter:
    """The value of the ``overlay_snapshot`` fixture: snapshots of this test's stack.

    Call it to take a snapshot; :meth:`restore` rolls back to one; :meth:`diff` and the
    ``assert_*`` methods compare the live view with a snapshot, by default with the state
    the test started from. Made by pytest-overlay; request the fixture to get one.
    """

    def __init__(self, stack: OverlayStack, *, _ispytest: bool = False) -> None:
        if not _ispytest:
            raise TypeError(
                "Snapshotter is created by pytest-overlay: request the 'overlay_snapshot' "
                "fixture instead"
            )
        self._stack = stack

    @property
    def stack(self) -> OverlayStack:
        """The test's ``overlay_stack``."""
        return self._stack

    def __call__(self, name: str | None = None) -> Snapshot:
        """Freeze the current state of the test's stack; see :meth:`OverlayStack.snapshot`."""
        return self._stack.snapshot(name)

    def restore(self, snapshot: Snapshot) -> None:
        """Roll the test's stack back to *snapshot*; see :meth:`OverlayStack.restore`."""
        self._stack.restore(snapshot)

    def diff(self, since: Snapshot | None = None) -> list[Change]:
        """Content-level changes from *since* (default: the start of the test) to now."""
        return self._stack.diff(since)

    def assert_changes(
        self, expected: Iterable[Change | str], *, since: Snapshot | None = None
    ) -> None:
        """Assert that exactly *expected* changed since *since* (default: the test start).

        Items are :class:`~pytest_overlay.Change` objects or strings such as
        ``"M config.toml"``; order does not matter.
        """
        __tracebackhide__ = True
        wanted = {_parse_change(item) for item in expected}
        deltas = self._stack._deltas_since(since)
        actual = {d.change for d in deltas}
        if actual != wanted:
            raise AssertionError(
                _listing(
                    self._since(since),
                    deltas,
                    {d for d in deltas if d.change not in wanted},
                    sorted(str(c) for c in wanted - actual),
                )
            )

    def assert_changed(
        self, *paths: str | os.PathLike[str], since: Snapshot | None = None
    ) -> None:
        """Assert that exactly *paths* changed (added, modified or deleted), nothing else.

        Paths are relative to ``merged`` (or absolute paths under it). Directories count
        only when they themselves changed, not because something inside them did.
        """
        __tracebackhide__ = True
        wanted = {self._relative(p) for p in paths}
        deltas = self._stack._deltas_since(since)
        actual = {d.change.path for d in deltas}
        if actual != wanted:
            raise AssertionError(
                _listing(
                    self._since(since),
                    deltas,
                    {d for d in deltas if d.change.path not in wanted},
                    sorted(wanted - actual),
                )
            )

    def assert_unchanged(self, *, since: Snapshot | None = None) -> None:
        """Assert that nothing changed since *since* (default: the start of the test)."""
        __tracebackhide__ = True
        self.assert_changed(since=since)

    def _since(self, since: Snapshot | None) -> str:
        return "the start of the test" if since is None else f"snapshot {since.name!r}"

    def _relative(self, path: str | os.PathLike[str]) -> str:
        candidate = Path(path)
        if candidate.is_absolute():
            try:
                candidate = candidate.relative_to(self._stack.merged)
            except ValueError:
                raise ValueError(
                    f"{path} is not under {self._stack.merged}: give paths relative to merged"
                ) from None
        return candidate.as_posix().strip("/")


def _listing(since: str, deltas: list[Delta], unexpected: set[Delta], missing: list[str]) -> str:
    lines = [f"the filesystem changes since {since} are not the expected ones"]
    if unexpected:
        lines.append("unexpected changes:")
        for delta in deltas:
            if delta in unexpected:
                lines.extend(_describe(delta))
    if missing:
        lines.append("expected but not found:")
        lines.extend(f"  {item}" for item in missing)
    lines.append(f"all changes ({len(deltas)}):" if deltas else "no changes at all")
    lines.extend(f"  {d.change}" for d in deltas)
    return "\n".join(lines)


def _describe(delta: Delta) -> list[str]:
    before, after = delta.before, delta.after
    head = f"  {delta.change}"
    if after is not None:
        shown = _render.describe(after, digest=False)
        if before is not None and _render.describe(before, digest=False) != shown:
            shown = f"{_render.describe(before, digest=False)} -> {shown}"
        head += f"  ({shown})"
    lines = [head]
    if after is not None and after.kind == stat.S_IFREG:
        lines.extend(f"      {line}" for line in _text_diff(delta.change.path, before, after))
    return lines


def _text(entry: Entry | None) -> list[str] | None:
    if entry is None or entry.kind != stat.S_IFREG:
        return []
    if entry.size > _DIFF_LIMIT:
        return None
    data = entry.source.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None


def _text_diff(path: str, before: Entry | None, after: Entry) -> list[str]:
    old, new = _text(before), _text(after)
    if old is None or new is None:
        return []
    diff = list(
        difflib.unified_diff(
            old, new, f"{path} (before)" if before else "(absent)", f"{path} (now)", lineterm=""
        )
    )
    if len(diff) > _DIFF_LINES:
        diff = [*diff[:_DIFF_LINES], f"... {len(diff) - _DIFF_LINES} more lines"]
    return diff
