"""The ``overlay_snapshot`` fixture (alias ``snapshot``), its assertions and golden files.

``snapshot`` is also the fixture name of syrupy and pytest-snapshot. pytest-overlay's
fixture is always available as ``overlay_snapshot``; the short alias is registered only
when no other installed plugin defines a ``snapshot`` fixture, so the snapshot-testing
plugin keeps its name and both work in one suite.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, final

import pytest

from pytest_overlay import _golden
from pytest_overlay._statediff import Delta, Entry
from pytest_overlay.changes import Change, ChangeKind
from pytest_overlay.snapshot import Snapshot
from pytest_overlay.stack import OverlayStack

__all__ = ["Snapshotter", "overlay_snapshot"]

#: Files up to this size that decode as UTF-8 get a unified diff in failure listings.
_DIFF_LIMIT: Final = 16 * 1024
_DIFF_LINES: Final = 40


@dataclass
class SessionState:
    """What the plugin learned at configure time, and the golden files it wrote."""

    update_golden: bool
    #: The distribution that owns the ``snapshot`` fixture name, if not pytest-overlay.
    snapshot_owner: str | None
    written: list[Path] = field(default_factory=list)


STATE_KEY: Final = pytest.StashKey[SessionState]()


def addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("overlay")
    group.addoption(
        _golden.UPDATE_FLAG,
        dest="overlay_update_golden",
        action="store_true",
        default=False,
        help="write the golden files of overlay_snapshot.assert_golden() from what the "
        "tests changed, instead of comparing with them.",
    )


def _snapshot_owner(config: pytest.Config) -> str | None:
    """The plugin (other than ours, not a conftest) that defines a ``snapshot`` fixture."""
    from _pytest.fixtures import getfixturemarker  # the one way to tell a fixture

    from pytest_overlay import _snapshot_alias

    for name, plugin in config.pluginmanager.list_name_plugin():
        if plugin is None or plugin is _snapshot_alias:
            continue
        if os.path.basename(str(getattr(plugin, "__file__", ""))) == "conftest.py":
            continue  # a conftest's fixture overrides any plugin's anyway
        try:
            candidate = getattr(plugin, "snapshot", None)
        except Exception:
            continue
        if candidate is not None and getfixturemarker(candidate) is not None:
            # Distribution names come from package metadata, which costs milliseconds
            # to read: only for the one plugin that owns the name.
            for owner, dist in config.pluginmanager.list_plugin_distinfo():
                if owner is plugin:
                    return str(dist.project_name)
            return getattr(plugin, "__name__", None) or name
    return None


@final
class _Hooks:
    def __init__(self, state: SessionState) -> None:
        self._state = state

    def pytest_report_header(self) -> str | None:
        if self._state.snapshot_owner is None:
            return None
        return (
            f"overlay: fixture 'snapshot' belongs to {self._state.snapshot_owner}; "
            "pytest-overlay's is 'overlay_snapshot'"
        )

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self._state.written:
            return
        terminalreporter.section("pytest-overlay golden files")
        root = terminalreporter.config.rootpath
        for path in self._state.written:
            shown = path.relative_to(root) if path.is_relative_to(root) else path
            terminalreporter.write_line(f"written: {shown}")


def configure(config: pytest.Config) -> None:
    """Register the ``snapshot`` alias unless another plugin owns the name, and our hooks."""
    from pytest_overlay import _snapshot_alias

    state = SessionState(
        update_golden=bool(config.getoption("overlay_update_golden", False)),
        snapshot_owner=_snapshot_owner(config),
    )
    config.stash[STATE_KEY] = state
    config.pluginmanager.register(_Hooks(state), "overlay-snapshot-hooks")
    if state.snapshot_owner is None:
        config.pluginmanager.register(_snapshot_alias, "overlay-snapshot-alias")


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

    def __init__(
        self,
        stack: OverlayStack,
        test_file: Path,
        nodeid: str,
        state: SessionState,
        *,
        _ispytest: bool = False,
    ) -> None:
        if not _ispytest:
            raise TypeError(
                "Snapshotter is created by pytest-overlay: request the 'overlay_snapshot' "
                "fixture instead"
            )
        self._stack = stack
        self._test_file = test_file
        self._nodeid = nodeid
        self._state = state
        self._golden_count = 0

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

    def assert_golden(self, name: str | None = None, *, since: Snapshot | None = None) -> None:
        """Assert that what changed since *since* matches this test's golden file.

        The file lives next to the test, in ``__overlay_golden__/<module>/<test>.txt``
        (``<test>.<name>.txt`` with *name*). Run pytest with ``--overlay-update-golden``
        to create or rewrite it from what the test did.
        """
        __tracebackhide__ = True
        self._golden_count += 1
        path = _golden.path_for(self._test_file, self._nodeid, name, self._golden_count)
        lines = _golden.render(self._stack._deltas_since(since))
        outcome = _golden.check(path, lines, self._nodeid, update=self._state.update_golden)
        if outcome is _golden.Outcome.WRITTEN:
            self._state.written.append(path)
        elif outcome is _golden.Outcome.MISSING:
            raise AssertionError(
                f"no golden file {path}: run pytest with {_golden.UPDATE_FLAG} to create it "
                "from what this test changed:\n" + "\n".join(f"  {line}" for line in lines)
            )
        elif outcome is _golden.Outcome.DIFFERS:
            stored = _golden.entries(path.read_text(encoding="utf-8"))
            diff = difflib.unified_diff(stored, lines, "golden", "this run", lineterm="", n=2)
            raise AssertionError(
                f"the filesystem changes differ from the golden file {path} (rerun with "
                f"{_golden.UPDATE_FLAG} to accept them):\n" + "\n".join(diff)
            )

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
        shown = _golden.describe(after, digest=False)
        if before is not None and _golden.describe(before, digest=False) != shown:
            shown = f"{_golden.describe(before, digest=False)} -> {shown}"
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


@pytest.fixture
def overlay_snapshot(overlay_stack: OverlayStack, request: pytest.FixtureRequest) -> Snapshotter:
    """Snapshots of this test's ``overlay_stack``: take, restore, diff, assert.

    ``overlay_snapshot()`` freezes the current state and returns a ``Snapshot``;
    ``overlay_snapshot.restore(s)`` rolls back to it; ``overlay_snapshot.diff(since)``
    lists what changed since then (default: since the test started), ignoring files
    copied up but left as they were. ``assert_changed(*paths)``, ``assert_changes([...])``
    and ``assert_unchanged()`` fail with a readable listing; ``assert_golden()`` compares
    with a golden file next to the test (``--overlay-update-golden`` rewrites it). Also
    available as ``snapshot`` unless syrupy or pytest-snapshot owns that name.
    """
    return Snapshotter(
        overlay_stack,
        request.path,
        request.node.nodeid,
        request.config.stash[STATE_KEY],
        _ispytest=True,
    )
