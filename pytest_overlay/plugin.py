"""The pytest plugin: options, hooks, markers, the report header and the fixtures.

It only wires pytest to the rest of the package; disable it with ``-p no:overlay``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_overlay._backends import ladder as _backends
from pytest_overlay._backends.protocol import AUTO, Backend
from pytest_overlay._errors import BackendUnavailable, OverlayError
from pytest_overlay._linux.inherit import INHERIT_ENV
from pytest_overlay._plugin import at_path as _at_path
from pytest_overlay._plugin import cache_settings as _cache_settings
from pytest_overlay._plugin import config as _config
from pytest_overlay._plugin import fixture_hints as _fixture_hints
from pytest_overlay._plugin import info as _info
from pytest_overlay._plugin import markers as _markers
from pytest_overlay._plugin import needs as _needs
from pytest_overlay._plugin import outcomes as _outcomes
from pytest_overlay._plugin import per_example as _per_example
from pytest_overlay._plugin import protect_options as _protect_options
from pytest_overlay._plugin import retention as _retention
from pytest_overlay._plugin import session as _session
from pytest_overlay._plugin import snapshot_fixtures as _snapshot_fixtures
from pytest_overlay._plugin.snapshot_fixtures import overlay_snapshot  # noqa: F401 - a fixture

if TYPE_CHECKING:
    # Loaded by the fixtures on first use: a session that mounts nothing never needs them.
    from pytest_overlay._plugin.factory import OverlayStackFactory
    from pytest_overlay.stack import OverlayStack

_FIXTURES = ("overlay_stack", "overlay_stack_factory")
# The fixtures whose use makes the session mount: the above, and overlay_at's own.
_MOUNTING = (*_FIXTURES, _at_path.FIXTURE)
# Per test: its stack, whether a phase failed, and where its upper layer will be kept.
_STACK = pytest.StashKey["OverlayStack"]()
_AT_STACKS = pytest.StashKey["list[OverlayStack]"]()
# Where the report said each overlay_at stack's upper layer is kept, by position.
_AT_KEEP_AT = pytest.StashKey["dict[int, Path]"]()
_FAILED = pytest.StashKey[bool]()
_KEEP_AT = pytest.StashKey[Path]()
_KEEPER = pytest.StashKey[_retention.Keeper]()
# Set when overlay_datadir serves the datadir fixtures: the plugin it replaced, if any.
_DATADIR_REPLACED = pytest.StashKey["str | None"]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_overlay import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("overlay", "copy-on-write overlay directories (pytest-overlay)")
    group.addoption(
        "--overlay-backend",
        dest="overlay_backend",
        default=None,
        metavar="NAME",
        help="how to mount unions: auto (default: the best that works here), kernel, "
        "userns, fuse or copy. Ini: overlay_backend.",
    )
    group.addoption(
        "--overlay-info",
        dest="overlay_info",
        action="store_true",
        default=False,
        help="show which overlay backends work on this machine, why not, and how to "
        "enable them; then exit.",
    )
    group.addoption(
        "--overlay-keep",
        dest="overlay_retention_policy",
        default=None,
        metavar="POLICY",
        help="keep the upper layers of: failed tests (default), all tests, or none, for "
        "inspection under the basetemp. Ini: overlay_retention_policy.",
    )
    group.addoption(
        "--overlay-workspace",
        dest="overlay_workspace",
        default=None,
        metavar="WHERE",
        help="where upper layers live: auto (default: a tmpfs private to pytest when the "
        "backend mounts, else disk), tmpfs, or disk (under the basetemp). Ini: "
        "overlay_workspace.",
    )
    group.addoption(
        "--overlay-userns",
        dest="overlay_userns",
        default=None,
        metavar="WHEN",
        help="when an ordinary user enters the user namespace that lets it mount (files "
        "of unmapped owners then show as nobody): auto (default: when a test needs a "
        "mount; under pytest-xdist, at start-up if the suite uses pytest-overlay), start "
        "(always, at start-up), never (mount with fuse-overlayfs or copy instead). Ini: "
        "overlay_userns.",
    )
    parser.addini("overlay_backend", help="default for --overlay-backend (auto)", default="auto")
    parser.addini("overlay_userns", help="default for --overlay-userns (auto)", default="auto")
    parser.addini(
        "overlay_workspace", help="default for --overlay-workspace (auto)", default="auto"
    )
    parser.addini(
        "overlay_tmpfs_size",
        help="largest size of each process's tmpfs workspace: 512M, 2G, 25% of the RAM "
        "(default: half the available memory shared among the xdist workers, at least "
        "256M); inodes are one per 4 KiB",
        default="",
    )
    parser.addini(
        "overlay_retention_policy",
        help="whose upper layers to keep: failed (default), all, none",
        default="failed",
    )
    parser.addini(
        "overlay_retention_count",
        help="keep at most this many upper layers per session, oldest dropped first (3)",
        default="3",
    )
    parser.addini(
        "overlay_base",
        # One path per line, spaces and all: "paths" would split a line on whitespace.
        type="linelist",
        help="base directories (lower layers, top-most first, one per line) of "
        "overlay_stack for tests without an overlay marker; relative to the configuration "
        "file's directory",
    )
    group.addoption(
        "--overlay-datadir",
        dest="overlay_datadir",
        action="store_true",
        default=None,
        help="serve pytest-datadir's fixtures (datadir, shared_datadir, original_datadir, "
        "lazy_datadir, lazy_shared_datadir) as unions instead of copies, in place of "
        "pytest-datadir if installed. Ini: overlay_datadir.",
    )
    parser.addini(
        "overlay_datadir",
        type="bool",
        default=False,
        help="default for --overlay-datadir (false)",
    )
    _protect_options.addoption(parser)
    _cache_settings.addoption(parser)


def pytest_overlay_add_backends(config: pytest.Config) -> Sequence[Backend]:
    return _backends.builtin_backends()


def _linux() -> bool:
    return hasattr(os, "geteuid") and os.uname().sysname == "Linux"


# tryfirst: before other plugins' pytest_configure, which may start threads (as
# pytest-rerunfailures does), after which no user namespace can be entered.
@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _config.MARKER_HELP)
    config.addinivalue_line("markers", _at_path.MARKER_HELP)
    _session.validate(config)
    _retention.settings(config)
    _config.workspace_setting(config)
    if _linux():
        _config.tmpfs_limits(config)
    userns = _config.userns_setting(config)
    _snapshot_fixtures.configure(config)
    protect = _protect_options.paths(config)
    if protect and _linux():
        from pytest_overlay._plugin import protect as _protect

        config.pluginmanager.register(_protect.ProtectPlugin(config), "overlay-protect")
    if _config.datadir_setting(config):
        from pytest_overlay._plugin import datadir

        config.stash[_DATADIR_REPLACED] = datadir.configure(config)
    if not _linux():
        return
    # The namespace code (and ctypes under it) is loaded only where it has work to do:
    # a session that never mounts does without it.
    if os.environ.get(INHERIT_ENV):
        from pytest_overlay._linux import namespace as _namespace

        # A pytest-xdist worker takes over the user namespace its controller entered.
        _namespace.adopt_inherited()
    if userns == "never":
        from pytest_overlay._linux import namespace as _namespace

        _namespace.forbid_user_namespace(
            "overlay_userns = never: no user namespace is entered (remove the setting to "
            "let pytest-overlay mount with kernel overlayfs)"
        )
    config.pluginmanager.register(_cache_settings.Reporter(config), _cache_settings.REPORTER)
    if _session.is_xdist_controller(config):
        # The workers' reports carry their build outcomes here, whatever they run.
        _cache_settings.register_collector(config)
    basetemp = config.option.basetemp
    if basetemp and not hasattr(config, "workerinput"):
        # A killed earlier run may have left workspaces there, which pytest could not
        # collect past or delete; open them up before it tries.
        from pytest_overlay._linux import sweep as _sweep

        _sweep.sweep(Path(basetemp).resolve())
    # Nothing else happens here unless the session needs it: a suite that never mounts
    # must run as with -p no:overlay. Root enters its private mount namespace when the
    # backend is first activated; an ordinary user its user namespace.
    if not _session.running_as_root() and not hasattr(config, "workerinput"):
        requested = _session.selection(config).requested
        if userns == "start":
            _session.start_userns(config, "overlay_userns = start")
        elif requested != AUTO:
            # Asked for by name: prepare it now, before other plugins start threads.
            _session.start_userns(config, f"--overlay-backend={requested}")
        elif userns == "auto" and _session.is_xdist_controller(config):
            # Workers start as new programs before any test is collected: decide now,
            # while this process still has a single thread, and hand the namespace down.
            why = _needs.why_it_mounts(config)
            if why:
                _session.start_userns(config, why)
            else:
                _session.selection(config).start_reason = ""
        elif userns == "auto" and protect:
            # The unions are mounted at session start, when other plugins may have
            # started threads: enter now, while this process has one.
            _session.start_userns(config, "--overlay-protect is given")
    _protect_options.check_xdist(config)
    if _session.selection(config).requested != AUTO:
        # A named backend that cannot work here is an error that says why, at start-up.
        chosen = _session.resolve(config)
        if chosen.backend is None:
            raise pytest.UsageError(f"--overlay-backend={chosen.requested}: {chosen.reason}")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    action = _cache_settings.command(config)
    if action is not None:
        return action
    if config.option.overlay_info:
        config._do_configure()
        try:
            print(_info.report(config))
        finally:
            config._ensure_unconfigure()
        return 0
    return None


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(
    collector: pytest.Module | pytest.Class, name: str, obj: object
) -> Generator[None, object, object]:
    result = yield
    _markers.check_collected(result)
    return result


# Before -k and -m deselect tests: a marker is read if any test under it uses the fixture.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    _markers.warn_unread(items, _FIXTURES)
    for item in items:
        names = getattr(item, "fixturenames", None)
        if names is None or _at_path.FIXTURE in names:
            continue
        try:
            marked = _at_path.marked_paths(item)
        except pytest.UsageError as exc:
            raise pytest.UsageError(str(exc)) from None
        if marked is not None:
            # First, so that every other fixture of the test already sees the unions.
            names.insert(0, _at_path.FIXTURE)


def pytest_collection_finish(session: pytest.Session) -> None:
    # Entering a user namespace changes how file owners look (unmapped uids show as
    # nobody), so a process only does it when a collected test needs a mount, while it
    # is still single-threaded, before any test runs.
    used = (getattr(item, "fixturenames", ()) for item in session.items)
    if any(name in names for names in used for name in _MOUNTING):
        _need_per_test_hooks(session.config)
        _session.activate(session.config)
    elif _fixture_hints.awaited():
        _need_per_test_hooks(session.config)


def pytest_report_header(config: pytest.Config) -> list[str]:
    line = _info.header_line(config)
    note = _snapshot_fixtures.header_note(config)
    if note is not None:
        line += f"; {note}"
    if _DATADIR_REPLACED in config.stash:
        replaced = config.stash[_DATADIR_REPLACED]
        line += "; datadir fixtures: pytest-overlay" + (f" (not {replaced})" if replaced else "")
    protect = _protect_options.header(config)
    return [line] if protect is None else [line, protect]


@pytest.fixture(scope="session")
def overlay_stack_factory(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[OverlayStackFactory]:
    """Session-scoped factory of overlay stacks, for fixtures of any scope.

    ``overlay_stack_factory.mount([base, ...])`` mounts an :class:`OverlayStack` with its
    workspace under pytest's basetemp; close it with ``stack.close()``. Stacks still
    mounted at the end of the session are closed then. Skips the requesting test when no
    backend works here.
    """
    # A test that asked for a stack by request.getfixturevalue: nothing saw it coming.
    _need_per_test_hooks(pytestconfig)
    # The code that mounts, loaded by the first test that asks for a union.
    from pytest_overlay._linux import colon as _colon
    from pytest_overlay._linux import fakefs as _fakefs
    from pytest_overlay._linux import owners as _owners
    from pytest_overlay._linux import tmpfs as _tmpfs

    try:
        # Set up inside pyfakefs's fake, the session's workspace would be a fake path.
        _fakefs.check_real_filesystem()
    except OverlayError as exc:
        _outcomes.fail(f"overlay_stack_factory: {exc}")
    backend = _session.backend_or_skip(pytestconfig)
    root = tmp_path_factory.mktemp("overlay", numbered=False)
    basetemp = root.parent
    # Before the first workspace: a run killed later is then known to be dead.
    owner = _owners.claim(basetemp)
    if pytestconfig.option.basetemp is None:
        # pytest's numbered basetemps: a killed run's stay for days (see _linux.owners).
        runs = basetemp.parent.parent if hasattr(pytestconfig, "workerinput") else basetemp.parent
        _owners.sweep_dead(runs, own=basetemp)
    policy, count = _retention.settings(pytestconfig)
    pytestconfig.stash[_KEEPER] = _retention.Keeper(policy, count, root.parent / "overlay-kept")
    home = None
    if backend.name == "fuse" and _colon.has_colon(root):
        # fuse-overlayfs cannot take an upper directory whose path holds a ':'.
        home = root = _colon.move_out(root)
    where = _config.workspace_setting(pytestconfig)
    if where == "disk":
        why_not = "disk chosen"
    else:
        limits = _config.tmpfs_limits(pytestconfig)
        why_not = _tmpfs.mount_tmpfs(root, backend.name, limits.size, limits.inodes)
    if where == "tmpfs" and why_not:
        pytest.fail(
            f"--overlay-workspace=tmpfs: cannot put the workspaces on tmpfs: {why_not}; "
            "use --overlay-workspace=auto or disk",
            pytrace=False,
        )
    from pytest_overlay._plugin.factory import OverlayStackFactory

    factory = OverlayStackFactory(root, backend, _ispytest=True)
    from pytest_overlay._backends.fuse import FuseBackend

    # fuse: ready mounts for the next test, started while one runs (see _backends.fuse).
    pool = backend if isinstance(backend, FuseBackend) else None
    if pool is not None:
        pool.enable_pool()
    try:
        yield factory
    finally:
        factory.close_all()
        if pool is not None:
            pool.drain_pool()
        if not why_not:
            _tmpfs.unmount_tmpfs(root)
        if home is not None:
            _colon.remove_home(home)
        _owners.release(basetemp, owner)


@pytest.fixture
def overlay_stack(
    request: pytest.FixtureRequest, overlay_stack_factory: OverlayStackFactory
) -> Iterator[OverlayStack]:
    """A union over this test's base directory with a fresh, throwaway upper layer.

    Read and write under ``overlay_stack.merged``; every change lands in
    ``overlay_stack.upper`` and the base stays untouched. The base is set by
    ``@pytest.mark.overlay("path", ...)`` on the test, class or module, or by the
    ``overlay_base`` ini option. Unmounted and deleted at teardown.
    """
    try:
        layers = _config.base_layers(request.node)
    except pytest.UsageError as exc:
        _outcomes.fail(str(exc))
    try:
        stack = overlay_stack_factory.mount(layers, name=request.node.name)
    except BackendUnavailable as exc:
        pytest.skip(f"pytest-overlay cannot mount here: {exc}")
    except OverlayError as exc:
        _outcomes.fail(f"overlay_stack: {exc}")
    request.node.stash[_STACK] = stack
    # A rerun (pytest-rerunfailures) runs the same item again: forget the last attempt's
    # failure and kept-layer path, so this attempt gets its own, or none if it passes.
    request.node.stash[_FAILED] = False
    with contextlib.suppress(KeyError):
        del request.node.stash[_KEEP_AT]
    try:
        yield stack
    finally:
        keeper = request.config.stash.get(_KEEPER, None)
        failed = request.node.stash.get(_FAILED, False)
        if keeper is not None and keeper.wants(failed):
            destination = request.node.stash.get(_KEEP_AT, None)
            destination = destination or keeper.destination(request.node.name)
            stack.close(keep_upper=destination)
            keeper.kept(destination)
        else:
            stack.close()


@pytest.fixture
def overlay_at(
    request: pytest.FixtureRequest, overlay_stack_factory: OverlayStackFactory
) -> Iterator[dict[Path, OverlayStack]]:
    """Unions over real paths: the directories named by ``@pytest.mark.overlay_at``.

    Used automatically by a test with the marker. For the test's duration each directory
    shows a throwaway copy-on-write union over itself, to the test and to every process
    it starts; at teardown the real directory, never modified, shows again. The value
    maps each directory to its :class:`OverlayStack` (for ``changes()``).
    """
    paths = _at_path.marked_paths(request.node) or []
    session = _session.backend_or_skip(request.config)
    try:
        stacks = _at_path.mount_all(overlay_stack_factory, paths, request.node.name, session)
    except OverlayError as exc:
        _at_path.skip_or_fail(exc)
    request.node.stash[_AT_STACKS] = stacks
    request.node.stash[_FAILED] = False
    request.node.stash[_AT_KEEP_AT] = {}
    try:
        yield {stack.merged: stack for stack in stacks}
    finally:
        keeper = request.config.stash.get(_KEEPER, None)
        failed = request.node.stash.get(_FAILED, False)
        # Inner (last mounted) first; each keeps its upper layer like overlay_stack's.
        chosen = request.node.stash.get(_AT_KEEP_AT, {})
        for index, stack in reversed(list(enumerate(stacks))):
            if keeper is not None and keeper.wants(failed):
                destination = chosen.get(index) or keeper.destination(f"at-{request.node.name}")
                stack.close(keep_upper=destination)
                keeper.kept(destination)
            else:
                stack.close()


class _PerTestHooks:
    """The hooks that run for every test, registered only once some test needs them.

    Registered when a collected test uses the plugin's fixtures (or an
    ``overlay_fixture`` name awaits its hint), or when a test first asks for one by
    ``request.getfixturevalue``: a test that never touches the plugin pays none of them.
    """

    # Outside Hypothesis's own wrapper, whose health check runs before the test does.
    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        with _per_example.each_example_from_the_base(item):
            return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report: pytest.TestReport = yield
        if report.when == "setup":
            _cache_settings.attach(report, item.config)
        if report.failed and report.when == "setup":
            _fixture_hints.add_hint(report, call)
        if report.failed and report.when in ("setup", "call"):
            item.stash[_FAILED] = True
            stack = item.stash.get(_STACK, None)
            from pytest_overlay._linux import fakefs as _fakefs

            faker = _fakefs.fake_filesystem()
            if stack is not None and stack.mounted and faker is not None:
                # pyfakefs's fs fixture, set up after the stack, is torn down after this
                # report: the upper layer can be read (and is kept) only at teardown.
                report.sections.append(
                    (
                        "overlay changes",
                        f"not listed: {faker}'s fake filesystem hides the upper layer",
                    )
                )
            elif stack is not None and stack.mounted:
                # The stack is still mounted here: teardown comes after this report.
                keeper = item.config.stash.get(_KEEPER, None)
                kept_at = None
                if keeper is not None and keeper.wants(True):
                    kept_at = item.stash[_KEEP_AT] = keeper.destination(item.name)
                error = call.excinfo.value if call.excinfo is not None else None
                note = (
                    _retention.eoverflow_note(
                        stack.backend,
                        error,
                        "\n".join((report.longreprtext, report.capstdout, report.capstderr)),
                    )
                    if stack.backend == "userns"  # only then is the report's text worth reading
                    else ""
                )
                text = _retention.section_of(stack, kept_at, note)
                report.sections.append(("overlay changes", text))
            at_stacks: list[OverlayStack] = item.stash.get(_AT_STACKS, [])
            for index, at in enumerate(at_stacks):
                if at.mounted:
                    keeper = item.config.stash.get(_KEEPER, None)
                    at_kept = None
                    if keeper is not None and keeper.wants(True):
                        at_kept = keeper.destination(f"at-{item.name}-{index}")
                        item.stash.setdefault(_AT_KEEP_AT, {})[index] = at_kept
                    text = _retention.section_of(at, at_kept)
                    report.sections.append((f"overlay changes at {at.merged}", text))
        return report


_PER_TEST_HOOKS = "overlay-per-test-hooks"


def _need_per_test_hooks(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(_PER_TEST_HOOKS):
        config.pluginmanager.register(_PerTestHooks(), _PER_TEST_HOOKS)
        _cache_settings.register_collector(config)
