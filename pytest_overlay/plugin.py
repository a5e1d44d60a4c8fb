"""The pytest plugin: options, markers, the report header and the fixtures.

It only wires pytest to :mod:`pytest_overlay.stack`; disable it with ``-p no:overlay``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pytest_overlay import _config, _namespace
from pytest_overlay._errors import BackendUnavailable, OverlayError
from pytest_overlay._factory import OverlayStackFactory
from pytest_overlay.stack import OverlayStack

_FIXTURES = ("overlay_stack", "overlay_stack_factory")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("overlay", "copy-on-write overlay directories (pytest-overlay)")
    group.addoption(
        "--overlay-backend",
        dest="overlay_backend",
        default=None,
        metavar="NAME",
        help="how to mount unions: auto (default), kernel (root) or userns (ordinary "
        "user in a user namespace). Ini: overlay_backend.",
    )
    parser.addini("overlay_backend", help="default for --overlay-backend (auto)", default="auto")
    parser.addini(
        "overlay_base",
        type="paths",
        help="base directories (lower layers, top-most first) of overlay_stack for tests "
        "without an overlay marker; relative to the configuration file's directory",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", _config.MARKER_HELP)
    _config.backend_setting(config)
    if os.geteuid() == 0 and _namespace_supported():
        # Cheap, and safe with threads: from here on no mount this process makes can
        # outlive it, even if it is killed.
        _namespace.enter_private_mount_namespace()


def _namespace_supported() -> bool:
    return hasattr(os, "geteuid") and os.uname().sysname == "Linux"


def pytest_collection_finish(session: pytest.Session) -> None:
    # Entering a user namespace changes how file owners look (unmapped uids show as
    # nobody), so an ordinary user's process only enters it when a test needs a mount,
    # while it is still single-threaded, before any test runs.
    if os.geteuid() == 0 or not _namespace_supported():
        return
    if _config.backend_setting(session.config) == "kernel":
        return
    used = (getattr(item, "fixturenames", ()) for item in session.items)
    if any(name in names for names in used for name in _FIXTURES):
        _namespace.enter_user_namespace()


def _describe_backend(config: pytest.Config) -> str:
    setting = _config.backend_setting(config)
    if os.geteuid() == 0:
        state = _namespace.state()
        where = (
            "in a private mount namespace"
            if state.mode is _namespace.Mode.PRIVATE
            else f"in the host mount namespace ({state.reason})"
        )
        if setting == "userns":
            return "overlay: no backend: 'userns' is for ordinary users; use kernel or auto"
        return f"overlay: backend kernel (root, {where})"
    if setting == "kernel":
        return "overlay: no backend: 'kernel' needs root; use auto or userns"
    failure = _namespace.cached_probe() if _namespace_supported() else "not Linux"
    if failure:
        return f"overlay: no backend: {failure}"
    return "overlay: backend userns (unprivileged user namespace, entered when a test mounts)"


def pytest_report_header(config: pytest.Config) -> str:
    return _describe_backend(config)


@pytest.fixture(scope="session")
def overlay_stack_factory(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[OverlayStackFactory]:
    """Session-scoped factory of overlay stacks, for fixtures of any scope.

    ``overlay_stack_factory.mount([base, ...])`` mounts an :class:`OverlayStack` with its
    workspace under pytest's basetemp; close it with ``stack.close()``. Stacks still
    mounted at the end of the session are closed then.
    """
    root = tmp_path_factory.mktemp("overlay", numbered=False)
    factory = OverlayStackFactory(root, _config.backend_setting(pytestconfig), _ispytest=True)
    yield factory
    factory.close_all()


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
        pytest.fail(str(exc), pytrace=False)
    try:
        stack = overlay_stack_factory.mount(layers, name=request.node.name)
    except BackendUnavailable as exc:
        pytest.skip(f"pytest-overlay cannot mount here: {exc}")
    except OverlayError as exc:
        pytest.fail(f"overlay_stack: {exc}", pytrace=False)
    try:
        yield stack
    finally:
        stack.close()
