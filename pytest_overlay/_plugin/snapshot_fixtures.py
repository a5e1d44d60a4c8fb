"""The ``overlay_snapshot`` fixture (alias ``snapshot``): its option, its hooks, the alias.

The fixture's value, :class:`~pytest_overlay.Snapshotter`, lives in ``_snapshotter``.

``snapshot`` is also the fixture name of syrupy and pytest-snapshot. pytest-overlay's
fixture is always available as ``overlay_snapshot``; the short alias is registered only
when no other installed plugin defines a ``snapshot`` fixture, so the snapshot-testing
plugin keeps its name and both work in one suite.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, final

import pytest

from pytest_overlay._plugin import golden as _golden
from pytest_overlay._plugin import golden_unused as _golden_unused
from pytest_overlay._plugin.listing import listed_with_the_plugin
from pytest_overlay._plugin.snapshot_state import STATE_KEY, SessionState

if TYPE_CHECKING:
    from pytest_overlay._plugin.snapshotter import Snapshotter
    from pytest_overlay.stack import OverlayStack

__all__ = ["overlay_snapshot"]


def addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("overlay")
    group.addoption(
        _golden.UPDATE_FLAG,
        dest="overlay_update_golden",
        action="store_true",
        default=False,
        help="write the golden files of overlay_snapshot.assert_golden() from what the "
        "tests changed, instead of comparing with them, and delete the golden files no "
        "test checks any more.",
    )


def _snapshot_owner(config: pytest.Config) -> str | None:
    """The plugin (other than ours, not a conftest) that defines a ``snapshot`` fixture."""
    from _pytest.fixtures import getfixturemarker  # the one way to tell a fixture

    from pytest_overlay._plugin import snapshot_alias as _snapshot_alias

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

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report: pytest.TestReport = yield
        if report.when == "call":
            # A plain attribute survives pytest-xdist's report serialisation, so the
            # controller learns which golden files its workers' tests checked.
            checked = self._state.checked.pop(item.nodeid, [])
            report.overlay_golden = checked  # type: ignore[attr-defined]
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        state = self._state
        state.checked_all.extend(getattr(report, "overlay_golden", ()))
        # Passed in every phase; a skip or xfail counts as not passed.
        state.outcomes[report.nodeid] = state.outcomes.get(report.nodeid, True) and report.passed

    def pytest_terminal_summary(
        self, terminalreporter: pytest.TerminalReporter, exitstatus: int
    ) -> None:
        config = terminalreporter.config
        root = config.rootpath
        unused = self._unused(config, exitstatus)
        if not self._state.written and not unused:
            return
        terminalreporter.section("pytest-overlay golden files")
        for path in self._state.written:
            shown = path.relative_to(root) if path.is_relative_to(root) else path
            terminalreporter.write_line(f"written: {shown}")
        if self._state.update_golden:
            _golden_unused.delete(unused)
        for path in unused:
            shown = path.relative_to(root) if path.is_relative_to(root) else path
            verb = "deleted" if self._state.update_golden else "unused"
            terminalreporter.write_line(f"{verb}: {shown}")
        if unused and not self._state.update_golden:
            terminalreporter.write_line(
                f"{len(unused)} golden file(s) no test checks any more; "
                f"run pytest with {_golden.UPDATE_FLAG} to delete them"
            )

    def _unused(self, config: pytest.Config, exitstatus: int) -> list[Path]:
        if exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
            return []  # interrupted, or an internal or usage error
        if config.option.maxfail and exitstatus == pytest.ExitCode.TESTS_FAILED:
            return []  # -x / --maxfail may have stopped the run before some modules
        return _golden_unused.unused_files(
            self._state.outcomes,
            self._state.checked_all,
            config.rootpath,
            lambda module: _golden_unused.selection_is_partial(config, module),
        )


def configure(config: pytest.Config) -> None:
    """Register the ``snapshot`` alias unless another plugin owns the name, and our hooks."""
    from pytest_overlay._plugin import snapshot_alias as _snapshot_alias

    state = SessionState(
        update_golden=bool(config.getoption("overlay_update_golden", False)),
        snapshot_owner=_snapshot_owner(config),
    )
    config.stash[STATE_KEY] = state
    config.pluginmanager.register(_Hooks(state), "overlay-snapshot-hooks")
    if state.snapshot_owner is None:
        config.pluginmanager.register(_snapshot_alias, "overlay-snapshot-alias")


@pytest.fixture
@listed_with_the_plugin
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
    from pytest_overlay._plugin.snapshotter import Snapshotter

    return Snapshotter(
        overlay_stack,
        request.path,
        request.node.nodeid,
        request.config.stash[STATE_KEY],
        _ispytest=True,
    )
