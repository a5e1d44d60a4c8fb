"""A Hypothesis state machine that checks a union filesystem against :class:`UnionModel`.

Each run draws a pool of names, one to four lower layers and a umask, opens the system
under test on those lowers (:meth:`UnionStateMachine.open_system`), then applies random
operations to the system and to the model. After every step it checks:

- the operation failed with the same errno on both sides, or succeeded on both;
- the merged view is the same: names, types, data, permission bits, symlink targets;
- the upper layer is the same: copy-ups, whiteouts, opaque directories;
- the lower layers are unchanged;
- the change list is the same, if the system reports one.

A system that can freeze and roll back its state (:class:`SnapshotCapable`: ``snapshot()``
and ``restore(token)``, as :class:`OverlayStackSystem` does) also gets two more rules:
take a snapshot (the model's upper layer becomes its top-most lower layer under a fresh,
empty upper) and restore any snapshot taken so far (the model goes back to that chain).

Every step is recorded with :func:`hypothesis.note`, so a failure prints as a script.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from pytest_overlay._layers.layer import Layer, path_key
from pytest_overlay.model import UnionModel, UnmodelledError
from pytest_overlay.testing.ops import Operation
from pytest_overlay.testing.strategies import UMASKS, layer_stacks, name_pools, operations
from pytest_overlay.testing.systems import UnionSystem

__all__ = ["SnapshotCapable", "UnionStateMachine", "describe_difference"]

T = TypeVar("T")


@runtime_checkable
class SnapshotCapable(Protocol):
    """A system under test that can freeze its state and roll back to a frozen one."""

    def snapshot(self) -> Any:
        """Freeze the merged state into a new lower layer; return a token for it."""
        ...

    def restore(self, token: Any, /) -> None:
        """Roll the merged view back to the state *token* was taken in."""
        ...


class UnionStateMachine(RuleBasedStateMachine):
    """Drive a :class:`~pytest_overlay.testing.UnionSystem` next to the reference model.

    Subclass it, implement :meth:`open_system`, and expose the test case::

        class MyUnionMachine(UnionStateMachine):
            def open_system(self, lowers, umask):
                return MyUnion.create(lowers, umask)   # anything with the protocol

        TestMyUnion = MyUnionMachine.TestCase
        TestMyUnion.settings = settings(max_examples=50, stateful_step_count=30)
    """

    #: How many lower layers a run draws.
    min_lowers: ClassVar[int] = 1
    max_lowers: ClassVar[int] = 4
    #: Whether the system's upper layer must match the model's entry for entry. A union
    #: that stores its layer in another format (fuse-overlayfs marks new directories
    #: opaque and adds marker files) still has its merged view and changes checked.
    compare_upper: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.model: UnionModel | None = None
        self.system: UnionSystem | None = None
        self.pool: tuple[str, ...] = ()
        self.lowers: tuple[Layer, ...] = ()
        self.umask = 0o022
        # The model's lower layers now (frozen upper layers first) and, per snapshot
        # taken, the system's token with the chain it froze.
        self.chain: tuple[Layer, ...] = ()
        self.snapshots: list[tuple[Any, tuple[Layer, ...]]] = []

    def open_system(self, lowers: Sequence[Layer], umask: int) -> UnionSystem:
        """Return a fresh system under test on *lowers* (top-most first) under *umask*.

        Called once per run; the machine calls ``close()`` on the result at the end.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement open_system(lowers, umask) and return "
            "the system under test (see pytest_overlay.testing.UnionSystem)"
        )

    def make_model(self, lowers: Sequence[Layer], umask: int, system: UnionSystem) -> UnionModel:
        """The model to compare *system* with. A system that is an unprivileged overlay
        mount says so with a true ``unprivileged`` attribute."""
        unprivileged = bool(getattr(system, "unprivileged", False))
        return UnionModel(lowers, umask=umask, unprivileged=unprivileged)

    def lower_layers(self, pool: Sequence[str]) -> st.SearchStrategy[list[Layer]]:
        """The strategy for one run's lower layers; override to restrict them."""
        return layer_stacks(pool, min_layers=self.min_lowers, max_layers=self.max_lowers)

    def name_pool(self) -> st.SearchStrategy[tuple[str, ...]]:
        """The strategy for one run's pool of names; override to leave some out."""
        return name_pools()

    def operation(self, model: UnionModel) -> st.SearchStrategy[Operation]:
        """The strategy for the next operation on *model*; override to leave some out."""
        return operations(model, self.pool)

    @initialize(data=st.data())
    def start(self, data: st.DataObject) -> None:
        self.pool = data.draw(self.name_pool(), label="name pool")
        lowers = data.draw(self.lower_layers(self.pool), label="lowers")
        umask = data.draw(st.sampled_from(UMASKS), label="umask")
        self.lowers = self.chain = tuple(lowers)
        self.umask = umask
        self.system = self.open_system(lowers, umask)
        self.model = self.make_model(lowers, umask, self.system)
        flag = ", unprivileged=True" if self.model.unprivileged else ""
        note(f"fs = UnionModel({lowers!r}, umask={umask:#o}{flag})")

    @rule(data=st.data())
    def operate(self, data: st.DataObject) -> None:
        model, system = self._both()
        op = data.draw(self.operation(model), label="operation")
        try:
            expected = _errno_of(op.apply, model)
        except UnmodelledError as exc:
            # Nothing changed on either side; the step just does not count.
            note(f"# skipped fs.{op}: {exc}")
            return
        actual = _errno_of(system.apply, op)
        note(f"fs.{op}  # {_outcome(expected)}")
        assert actual == expected, (
            f"fs.{op}: the model says {_outcome(expected)}, the system says {_outcome(actual)}"
        )

    def _snapshots_supported(self) -> bool:
        return isinstance(self.system, SnapshotCapable)

    @precondition(_snapshots_supported)
    @rule()
    def take_snapshot(self) -> None:
        model, system = self._both()
        assert isinstance(system, SnapshotCapable)
        token = system.snapshot()
        self.chain = (model.upper(), *self.chain)
        self._rebuild_model()
        self.snapshots.append((token, self.chain))
        note(f"snap{len(self.snapshots) - 1} = fs.snapshot()")

    @precondition(lambda self: bool(self.snapshots))
    @rule(data=st.data())
    def restore_snapshot(self, data: st.DataObject) -> None:
        _, system = self._both()
        assert isinstance(system, SnapshotCapable)
        index = data.draw(st.integers(0, len(self.snapshots) - 1), label="snapshot")
        token, self.chain = self.snapshots[index]
        system.restore(token)
        self._rebuild_model()
        note(f"fs.restore(snap{index})")

    def _rebuild_model(self) -> None:
        # A snapshot is the union of its chain under an empty upper: exactly a new model.
        assert self.system is not None
        self.model = self.make_model(self.chain, self.umask, self.system)

    def upper_view(self, layer: Layer) -> Layer:
        """What of an upper layer is compared; override to leave out a declared difference."""
        return layer

    @invariant()
    def agree(self) -> None:
        if self.system is None:
            return  # before start()
        model, system = self._both()
        _assert_same("merged view", model.merged(), system.merged())
        if self.compare_upper:
            _assert_same(
                "upper layer", self.upper_view(model.upper()), self.upper_view(system.upper())
            )
        now = system.lowers()
        assert len(now) == len(self.lowers), f"{len(now)} lowers, expected {len(self.lowers)}"
        for index, (before, after) in enumerate(zip(self.lowers, now, strict=True)):
            _assert_same(f"lower layer {index} (must never change)", before, after)
        changes = system.changes()
        if changes is not None:
            expected = model.changes()
            assert changes == expected, (
                "change lists differ:\n  model:  "
                + ", ".join(map(str, expected))
                + "\n  system: "
                + ", ".join(map(str, changes))
            )

    def teardown(self) -> None:
        system, self.system = self.system, None
        if system is not None:
            system.close()

    def _both(self) -> tuple[UnionModel, UnionSystem]:
        assert self.model is not None, "start() has not run"
        assert self.system is not None, "start() has not run"
        return self.model, self.system


def _errno_of(call: Callable[[T], None], arg: T) -> int | None:
    try:
        call(arg)
    except OSError as exc:
        return exc.errno
    return None


def _outcome(code: int | None) -> str:
    return "ok" if code is None else f"OSError {errno.errorcode.get(code, code)}"


def describe_difference(expected: Layer, actual: Layer) -> str:
    """One line per path where *actual* differs from *expected*."""
    lines = []
    for path in sorted(set(expected) | set(actual), key=path_key):
        want, got = expected.get(path), actual.get(path)
        if want != got:
            lines.append(f"  {path!r}: expected {want!r}, got {got!r}")
    return "\n".join(lines)


def _assert_same(what: str, expected: Layer, actual: Layer) -> None:
    if expected != actual:
        difference = describe_difference(expected, actual)
        raise AssertionError(f"{what} differs from the model:\n{difference}")
