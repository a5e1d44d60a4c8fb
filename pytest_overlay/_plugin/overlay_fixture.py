"""``overlay_fixture``: declare an overlay fixture in one line of a conftest file."""

from __future__ import annotations

import inspect
import os
import sys
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol, cast

import pytest

from pytest_overlay._errors import BackendUnavailable, OverlayError
from pytest_overlay._plugin import fixture_hints as _hints
from pytest_overlay._plugin.factory import OverlayStackFactory
from pytest_overlay._plugin.outcomes import fail
from pytest_overlay.snapshot import Snapshot
from pytest_overlay.stack import BaseLike, OverlayStack

__all__ = ["OverlayFixture", "overlay_fixture"]

Scope = Literal["session", "package", "module", "class", "function"]


class OverlayFixture(Protocol):
    """What :func:`overlay_fixture` returns: a pytest fixture whose value is an
    :class:`~pytest_overlay.OverlayStack`.

    Assign it to a name in a conftest file or test module, where pytest finds it; tests
    request it by that name and never call it (pytest >= 8.4 refuses a direct call).
    The type says what the fixture gives, as a fixture function's own annotation would.
    """

    __name__: str

    def __call__(self, **fixtures: Any) -> Iterator[OverlayStack]: ...


#: The state each overlay_fixture stack had right after its build step: what a fixture
#: that uses it as a base stands on, whatever tests later wrote into the stack itself.
_BUILT: weakref.WeakKeyDictionary[OverlayStack, Snapshot] = weakref.WeakKeyDictionary()

_FACTORY = "overlay_stack_factory"


def _caller() -> tuple[Path, str, str]:
    """The directory, module name and file name of the file that called overlay_fixture()."""
    frame = sys._getframe(2)
    file = frame.f_globals.get("__file__")
    directory = Path(file).resolve().parent if file else Path.cwd()
    return directory, str(frame.f_globals.get("__name__", __name__)), str(file or "<unknown>")


def _as_base(value: object, fixture: str, user: str) -> BaseLike:
    if isinstance(value, Snapshot):
        return value
    if isinstance(value, OverlayStack):
        built = _BUILT.get(value)
        # Any other stack stands for its current state, frozen now.
        return built if built is not None else value.snapshot(f"{user}-base")
    if isinstance(value, (str, os.PathLike)):
        return Path(value)
    pytest.fail(
        f"{user}: the base fixture {fixture!r} gave {value!r} ({type(value).__name__}); an "
        "overlay_fixture base must give a Snapshot, an OverlayStack or a path",
        pytrace=False,
    )


def overlay_fixture(
    *bases: str | os.PathLike[str] | Snapshot,
    scope: Scope = "function",
    name: str | None = None,
    build: Callable[[OverlayStack], object] | None = None,
) -> OverlayFixture:
    """Return a fixture that yields an :class:`~pytest_overlay.OverlayStack` over *bases*.

    Assign the result to a name in a conftest file or test module; that name (or *name*)
    becomes the fixture's name::

        from pytest_overlay import overlay_fixture

        migrated = overlay_fixture("data/empty-db", scope="session", build=run_migrations)
        db = overlay_fixture("migrated")  # a fresh upper per test, on the migrated state

    *bases* are the layers, top-most first. A string that is a Python identifier names
    another fixture, whose value may be a :class:`~pytest_overlay.Snapshot`, an
    :class:`~pytest_overlay.OverlayStack` or a path; anything else is a path, relative
    to the file that calls ``overlay_fixture`` (write ``"./data"`` or a ``Path`` for a
    directory whose name is an identifier). A stack made by ``overlay_fixture`` stands for
    its state right after *build*, even if tests later write into it; any other stack is
    frozen with :meth:`~pytest_overlay.OverlayStack.snapshot` when the fixture is set up.

    *build*, if given, is called with the mounted stack once per *scope*; the result is
    frozen into a layer (``stack.snapshot(<fixture name>)``) so that fixtures built on
    this one share it without copying. The stack is unmounted at the end of the scope;
    the frozen layers stay as long as a fixture or test still uses them.
    """
    if not bases:
        raise TypeError("overlay_fixture() needs at least one base: a path or a fixture name")
    here, module, file = _caller()
    fixtures: list[str] = []
    for base in bases:
        if isinstance(base, str) and base.isidentifier():
            if base == _FACTORY:
                raise ValueError(f"{_FACTORY!r} is not a base: name a directory or a fixture")
            if base not in fixtures:
                fixtures.append(base)
            if (here / base).is_dir():
                # Most likely a fixture of that name, but if there is none, pytest's
                # "fixture not found" gets a hint at the directory.
                _hints.remember(base, file, here / base)
        elif not isinstance(base, (str, os.PathLike, Snapshot)):
            raise TypeError(
                f"overlay_fixture() got {base!r} ({type(base).__name__}) as a base: give "
                "paths, fixture names or Snapshot objects"
            )

    def resolve(values: dict[str, object], user: str) -> list[BaseLike]:
        layers: list[BaseLike] = []
        for base in bases:
            if isinstance(base, Snapshot):
                layers.append(base)
            elif isinstance(base, str) and base.isidentifier():
                layers.append(_as_base(values[base], base, user))
            else:
                layers.append(here / Path(base))
        return layers

    def overlay_fixture_function(**values: Any) -> Iterator[OverlayStack]:
        request: pytest.FixtureRequest = values["request"]
        factory: OverlayStackFactory = values[_FACTORY]
        label = request.fixturename or name or "overlay_fixture"
        try:
            stack = factory.mount(resolve(values, label), name=label)
        except BackendUnavailable as exc:
            pytest.skip(f"pytest-overlay cannot mount here: {exc}")
        except OverlayError as exc:
            fail(f"{label}: {exc}")
        try:
            if build is not None:
                build(stack)
                _BUILT[stack] = stack.snapshot(label)
            else:
                _BUILT[stack] = stack.base
            yield stack
        finally:
            stack.close()

    described = ", ".join(str(b) if not isinstance(b, Snapshot) else b.name for b in bases)
    # pytest --fixtures lists a fixture under its function's module: the caller's.
    overlay_fixture_function.__module__ = module
    overlay_fixture_function.__doc__ = (
        f"An overlay stack over {described} ({scope} scope"
        + (f", built by {getattr(build, '__name__', 'a function')}" if build else "")
        + "), declared with pytest_overlay.overlay_fixture."
    )
    # pytest learns a fixture's dependencies from its signature: declare the base
    # fixtures there, so that scopes are checked and --setup-plan shows them.
    parameters = [
        inspect.Parameter(arg, inspect.Parameter.KEYWORD_ONLY)
        for arg in ("request", _FACTORY, *fixtures)
    ]
    overlay_fixture_function.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    # pytest.fixture returns the function itself before pytest 8.4, a wrapper from then on.
    return cast(OverlayFixture, pytest.fixture(scope=scope, name=name)(overlay_fixture_function))
