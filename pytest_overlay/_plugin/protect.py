"""``--overlay-protect PATH``: real directories that are copy-on-write for the whole session.

Each path is mounted over itself (``OverlayStack(merged=<the path>)``) once, at session
start, before collection, in the session's private mount namespace (root) or user
namespace (an ordinary user); a pytest-xdist worker makes its own mount namespace and its
own unions. Nothing the suite does reaches the real directory. After each test the upper
layer is compared with what it held before (:mod:`.protect_log`), and what is new is
sent with the test's teardown report, which pytest-xdist carries to the controller.

pytest's own outputs inside a protected path are written for real: what the suite wrote
to the cache directory, the ``--junitxml`` file and coverage.py's data files is copied to
the real directory when the session ends. Byte-code caches (``__pycache__``) stay in the
union and are not listed.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_overlay._errors import OverlayError, OverlayWarning
from pytest_overlay._layers.changes import ChangeKind
from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux import tmpfs as _tmpfs
from pytest_overlay._linux.covered import Covered
from pytest_overlay._plugin import config as _config
from pytest_overlay._plugin import protect_log as _log
from pytest_overlay._plugin import session as _session
from pytest_overlay._plugin.protect_options import PATHS, shared_namespace, strict

if TYPE_CHECKING:
    from pytest_overlay.stack import OverlayStack

#: Where writes made outside any test (collection, session fixtures' set-up and
#: finish) are listed.
OUTSIDE = "(outside tests: collection, session start and finish)"
#: The attribute of a teardown report, and the key of an xdist worker's output.
ATTRIBUTE = "overlay_protect"


@dataclass
class _Protected:
    path: Path
    stack: OverlayStack
    real: Covered
    scanner: _log.Scanner
    #: Relative paths pytest writes for real (the cache directory, --junitxml).
    for_real: tuple[str, ...]

    def written_for_real(self, rel: str) -> bool:
        return _log.under(rel, self.for_real) or _log.is_coverage_data(rel)

    def ignored(self, rel: str) -> bool:
        return self.written_for_real(rel) or _log.is_bytecode(rel)


@dataclass
class _Active:
    protected: list[_Protected] = field(default_factory=list)
    workspace: Path | None = None
    on_tmpfs: bool = False


_ACTIVE = pytest.StashKey[_Active]()
#: (protected path, test node id, change line), in the order reported.
_LOG = pytest.StashKey[list[tuple[str, str, str]]]()


def _for_real(config: pytest.Config, path: Path) -> tuple[str, ...]:
    outputs: list[Path] = []
    cache = getattr(config, "cache", None)
    if cache is not None:
        outputs.append(Path(cache._cachedir))
    xmlpath = getattr(config.option, "xmlpath", None)
    if xmlpath:
        outputs.append(config.invocation_params.dir / os.path.expanduser(xmlpath))
    rels = []
    for output in outputs:
        resolved = Path(os.path.abspath(output))
        if resolved.is_relative_to(path):
            rels.append(resolved.relative_to(path).as_posix())
    return tuple(rels)


def start(config: pytest.Config) -> None:
    """Mount the unions (not in pytest-xdist's controller, which runs no test)."""
    found = config.stash.get(PATHS, [])
    if not found or _session.is_xdist_controller(config):
        return
    chosen = _session.resolve(config)
    if chosen.backend is not None and not chosen.activated:
        _session.activate(config)
    backend = chosen.backend
    if backend is None:
        raise pytest.UsageError(f"--overlay-protect: nothing can mount here: {chosen.reason}")
    if backend.name == "fuse":
        for outer in found:
            inner = next((p for p in found if p != outer and p.is_relative_to(outer)), None)
            if inner is not None:
                raise pytest.UsageError(
                    f"--overlay-protect {inner} lies inside {outer}, and a union inside a "
                    "fuse-overlayfs union cannot be mounted (fusermount3 is denied the mount "
                    "point); protect only the outer directory"
                )
    if hasattr(config, "workerinput"):
        # Workers inherit their controller's namespace: each needs its own, or their
        # unions over the same path would stack on one another.
        _namespace.separate_mount_namespace()
        if _namespace.state().mode is _namespace.Mode.NONE:  # checked by the controller
            raise pytest.UsageError(shared_namespace(backend.name))
    active = config.stash[_ACTIVE] = _Active()
    # tmp_path_factory's own object: the fixture is not reachable before collection.
    factory: pytest.TempPathFactory = config._tmp_path_factory  # type: ignore[attr-defined]
    root = factory.mktemp("overlay-protect")
    active.workspace = root
    if _config.workspace_setting(config) != "disk":
        limits = _config.tmpfs_limits(config)
        active.on_tmpfs = not _tmpfs.mount_tmpfs(root, backend.name, limits.size, limits.inodes)
    from pytest_overlay.stack import OverlayStack

    for path in found:
        real = Covered(path)
        stack = OverlayStack([path], workspace=root, backend=backend, name="protect", merged=path)
        try:
            stack.mount()
        except OverlayError as exc:
            real.close()
            close(config)
            raise pytest.UsageError(f"--overlay-protect {path}: {exc}") from None
        active.protected.append(
            _Protected(path, stack, real, _log.Scanner(lambda _: False), _for_real(config, path))
        )
        item = active.protected[-1]
        item.scanner = _log.Scanner(item.ignored)


def scan(config: pytest.Config) -> list[list[str]]:
    """What was written into the protected paths since the last scan: [path, line] pairs."""
    active = config.stash.get(_ACTIVE, None)
    if active is None:
        return []
    found: list[list[str]] = []
    for item in active.protected:
        if item.stack.mounted:
            lines = item.scanner.delta(item.stack.changes(), item.stack.upper)
            found.extend([str(item.path), line] for line in lines)
    return found


def attach(item: pytest.Item, report: pytest.TestReport) -> None:
    """Give the test's teardown report what the test wrote (carried by xdist as is)."""
    found = scan(item.config)
    if found:
        setattr(report, ATTRIBUTE, found)


def record(config: pytest.Config, report: pytest.TestReport) -> None:
    found = getattr(report, ATTRIBUTE, None)
    if found:
        log = config.stash.setdefault(_LOG, [])
        log.extend((str(path), report.nodeid, str(line)) for path, line in found)


def record_worker(config: pytest.Config, node: object) -> None:
    """In pytest-xdist's controller: a finished worker's writes outside its tests."""
    output = getattr(node, "workeroutput", None) or {}
    found = output.get(ATTRIBUTE, [])
    worker = output.get("workerid", "")
    label = f"{OUTSIDE} [{worker}]" if worker else OUTSIDE
    config.stash.setdefault(_LOG, []).extend((str(p), label, str(line)) for p, line in found)


def finish(session: pytest.Session) -> None:
    """The last scan (writes outside tests); then, with ``overlay_protect_strict``, a
    session that wrote anything fails."""
    config = session.config
    found = scan(config)
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput[ATTRIBUTE] = found
    elif found:
        config.stash.setdefault(_LOG, []).extend((p, OUTSIDE, line) for p, line in found)
    wrote = workeroutput is None and bool(config.stash.get(_LOG, []))
    passing = session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
    if wrote and passing and strict(config):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def terminal_summary(reporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    found = config.stash.get(PATHS, [])
    if not found:
        return
    log = config.stash.get(_LOG, [])
    reporter.write_sep("=", "overlay: written into protected paths")
    for line in _log.summary(log, [str(p) for p in found]):
        reporter.write_line(line)
    if log and strict(config):
        reporter.write_line(
            "overlay_protect_strict: the suite wrote into protected paths (listed above), so "
            "the session fails; make those tests write under tmp_path or an overlay_stack, "
            "or turn overlay_protect_strict off",
            red=True,
            bold=True,
        )


def close(config: pytest.Config) -> None:
    """Copy pytest's own outputs to the real directories, then unmount, inner first."""
    active = config.stash.get(_ACTIVE, None)
    if active is None:
        return
    del config.stash[_ACTIVE]
    for item in reversed(active.protected):
        try:
            _copy_out(item)
        finally:
            item.stack.close()
            item.real.close()
    if active.on_tmpfs and active.workspace is not None:
        _tmpfs.unmount_tmpfs(active.workspace)


def _copy_out(item: _Protected) -> None:
    if not item.stack.mounted:
        return
    for change in item.stack.changes():
        if change.kind is ChangeKind.DELETE or not item.written_for_real(change.path):
            continue
        source, target = item.path / change.path, item.real.underneath / change.path
        try:
            if source.is_dir() and not source.is_symlink():
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target, follow_symlinks=False)
        except OSError as exc:
            warnings.warn(
                OverlayWarning(
                    f"--overlay-protect: could not write {change.path} to the real "
                    f"{item.path} ({exc.strerror}); it was lost with the session's union"
                ),
                stacklevel=1,
            )


class ProtectPlugin:
    """The hooks of ``--overlay-protect``, registered only when a path is protected."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    # First: the unions must stand before the report header names the backend, and
    # before collection imports (and writes byte-code) from the paths.
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        start(self.config)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report: pytest.TestReport = yield
        if report.when == "teardown":
            attach(item, report)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record(self.config, report)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: object, error: object) -> None:
        record_worker(self.config, node)

    # Before pytest-xdist's worker sends its output to the controller.
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        finish(session)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminal_summary(terminalreporter, self.config)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        close(config)
