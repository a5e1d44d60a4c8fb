"""pytest-datadir's fixtures, served by unions instead of copies (``overlay_datadir``).

Same names, scopes, types and paths as pytest-datadir: ``datadir`` is the data directory
next to the test module, shown at ``tmp_path / <module stem>``, and ``shared_datadir`` is
``<test dir>/data`` at ``tmp_path / "data"``. Each is a real directory that a test may
change freely, but it is a union over the data, not a copy of it, so its cost does not
grow with the data. Registered as a plugin of its own only when switched on, so that
pytest-overlay defines none of these names otherwise; it then replaces pytest-datadir's
plugin, if installed, for the whole session.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pytest_overlay._plugin.listing import listed_with_the_plugin

if TYPE_CHECKING:
    from pytest_overlay._plugin.factory import OverlayStackFactory
    from pytest_overlay.stack import OverlayStack

#: The module pytest-datadir's entry point loads; it is unregistered while ours serve.
PYTEST_DATADIR_MODULE = "pytest_datadir.plugin"


def configure(config: pytest.Config) -> str | None:
    """Serve the fixtures if ``overlay_datadir`` is on; return the plugin we replaced."""
    replaced = None
    for name, plugin in config.pluginmanager.list_name_plugin():
        if getattr(plugin, "__name__", None) == PYTEST_DATADIR_MODULE:
            # Before the session parses fixtures: pytest-datadir's never exist, so which
            # of two same-named fixtures wins does not hang on registration order.
            config.pluginmanager.unregister(plugin)
            config.pluginmanager.set_blocked(name)
            replaced = name
    config.pluginmanager.register(sys.modules[__name__], "overlay-datadir")
    return replaced


def _mount_at(factory: OverlayStackFactory, data: Path, target: Path) -> OverlayStack:
    return factory.mount([data], name=f"datadir-{data.name}", merged=target)


@dataclass(frozen=True)
class LazyDataDir:
    """pytest-datadir's lazy data directory: ``tmp_path`` starts empty, and each name is
    brought in on first use through :meth:`joinpath` or ``/``.

    A file is copied (one file: cheap); a directory is shown as a union over the data
    directory's one, so nothing under it is copied. A name that does not exist in the
    data directory is simply joined to ``tmp_path``, for the test to create.
    """

    original_datadir: Path
    tmp_path: Path
    _show: Callable[[Path, Path], object] | None = field(default=None, repr=False, compare=False)

    def joinpath(self, other: Path | str) -> Path:
        """``tmp_path / other``, with *other* brought in from the data directory first."""
        original = self.original_datadir / other
        target = self.tmp_path / other
        if original.exists() and not target.exists():
            if original.is_dir() and self._show is not None:
                self._show(original, target)
            elif original.is_dir():
                shutil.copytree(original, target, symlinks=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(original, target)
        return target

    def __truediv__(self, other: Path | str) -> Path:
        return self.joinpath(other)


@pytest.fixture(scope="module")
@listed_with_the_plugin
def original_datadir(request: pytest.FixtureRequest) -> Path:
    """The data directory of this test module, itself: ``<module dir>/<module stem>``.

    Never a union: tools that write expected files back into it (pytest-regressions'
    ``--force-regen``) keep working.
    """
    return Path(request.path).with_suffix("")


def _shared(request: pytest.FixtureRequest) -> Path:
    return Path(request.path).parent / "data"


@pytest.fixture
@listed_with_the_plugin
def datadir(
    original_datadir: Path, tmp_path: Path, overlay_stack_factory: OverlayStackFactory
) -> Iterator[Path]:
    """This module's data directory as a throwaway union at ``tmp_path / <module stem>``.

    Everything in it is there from the start, writable, and the original is never
    touched. An empty directory when the module has no data directory.
    """
    target = tmp_path / original_datadir.stem
    if not original_datadir.is_dir():
        target.mkdir()
        yield target
        return
    stack = _mount_at(overlay_stack_factory, original_datadir, target)
    try:
        yield target
    finally:
        stack.close()


@pytest.fixture
@listed_with_the_plugin
def shared_datadir(
    request: pytest.FixtureRequest, tmp_path: Path, overlay_stack_factory: OverlayStackFactory
) -> Iterator[Path]:
    """The ``data`` directory next to the test module as a throwaway union at
    ``tmp_path / "data"``."""
    data = _shared(request)
    if not data.is_dir():
        pytest.fail(
            f"shared_datadir: there is no directory {data}; create it, or use datadir for "
            "data of this module only",
            pytrace=False,
        )
    stack = _mount_at(overlay_stack_factory, data, tmp_path / "data")
    try:
        yield tmp_path / "data"
    finally:
        stack.close()


def _lazy(original: Path, directory: Path, factory: OverlayStackFactory) -> Iterator[LazyDataDir]:
    stacks: list[OverlayStack] = []

    def show(data: Path, target: Path) -> None:
        stacks.append(_mount_at(factory, data, target))

    try:
        yield LazyDataDir(original, directory, show)
    finally:
        # Newest first: a union may sit inside a directory an older one shows.
        for stack in reversed(stacks):
            stack.close()


@pytest.fixture
@listed_with_the_plugin
def lazy_datadir(
    original_datadir: Path, tmp_path: Path, overlay_stack_factory: OverlayStackFactory
) -> Iterator[LazyDataDir]:
    """This module's data directory, brought into ``tmp_path`` name by name on use."""
    yield from _lazy(original_datadir, tmp_path, overlay_stack_factory)


@pytest.fixture
@listed_with_the_plugin
def lazy_shared_datadir(
    request: pytest.FixtureRequest, tmp_path: Path, overlay_stack_factory: OverlayStackFactory
) -> Iterator[LazyDataDir]:
    """The shared ``data`` directory, brought into ``tmp_path / "data"`` name by name."""
    directory = tmp_path / "data"
    directory.mkdir(parents=True, exist_ok=False)
    yield from _lazy(_shared(request), directory, overlay_stack_factory)
