"""Choosing a backend: the ladder, names, vetoes and preferences, with fake backends."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from pytest_overlay import BackendUnavailable, OverlayError
from pytest_overlay._backends.ladder import backend_names, builtin_backends, select_backend
from pytest_overlay._backends.protocol import AUTO, DEVIATIONS, Backend
from pytest_overlay._linux.workspace import Workspace
from pytest_overlay.changes import Change


class Fake:
    description = "a fake"
    deviations: frozenset[str] = frozenset()

    def __init__(self, name: str, rank: int, failure: str = "") -> None:
        self.name, self.rank, self.failure = name, rank, failure
        self.probed = 0

    def probe(self) -> str:
        self.probed += 1
        return self.failure

    def activate(self) -> None:
        pass

    def mount(self, lowers: Sequence[Path], space: Workspace) -> None:
        raise AssertionError("not used")

    def unmount(self, space: Workspace) -> bool:
        raise AssertionError("not used")

    def changes(self, lowers: Sequence[Path], space: Workspace) -> list[Change]:
        raise AssertionError("not used")


def test_fake_follows_the_protocol() -> None:
    assert isinstance(Fake("x", 1), Backend)


def test_auto_takes_the_best_working_rung_and_probes_no_further() -> None:
    best = Fake("best", 1, "broken here")
    second, third = Fake("second", 2), Fake("third", 3)
    assert select_backend(AUTO, [third, best, second]) is second
    assert (best.probed, second.probed, third.probed) == (1, 1, 0)


def test_auto_with_nothing_working_lists_every_reason() -> None:
    with pytest.raises(BackendUnavailable, match=r"no backend works here \(a: no A; b: no B\)"):
        select_backend(AUTO, [Fake("a", 1, "no A"), Fake("b", 2, "no B")])


def test_named_rung_that_fails_says_why() -> None:
    with pytest.raises(BackendUnavailable, match="the 'b' backend cannot work here: no B"):
        select_backend("b", [Fake("a", 1), Fake("b", 2, "no B")])


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(OverlayError, match="unknown overlay backend 'zfs': choose one of auto, a"):
        select_backend("zfs", [Fake("a", 1)])


def test_veto_skips_a_rung_and_its_reason_is_reported() -> None:
    a, b = Fake("a", 1), Fake("b", 2)
    assert select_backend(AUTO, [a, b], veto=lambda x: "no" if x is a else None) is b
    assert a.probed == 0
    with pytest.raises(BackendUnavailable, match="cannot work here: banned"):
        select_backend("a", [a, b], veto=lambda x: "banned")


def test_chooser_sees_unprobed_candidates_and_wins() -> None:
    a, b = Fake("a", 1), Fake("b", 2)
    seen: list[list[str]] = []

    def choose(candidates: list[Backend]) -> Backend | None:
        seen.append([c.name for c in candidates])
        return b

    assert select_backend(AUTO, [a, b], choose=choose) is b
    assert seen == [["a", "b"]]
    assert a.probed == 0


def test_chosen_backend_that_fails_is_not_replaced() -> None:
    a, b = Fake("a", 1), Fake("b", 2, "no B")
    with pytest.raises(BackendUnavailable, match="b: no B"):
        select_backend(AUTO, [a, b], choose=lambda c: b)


def test_a_backend_object_is_taken_as_is() -> None:
    fake = Fake("x", 1, "would fail")
    assert select_backend(fake) is fake
    assert fake.probed == 0


def test_builtin_ladder() -> None:
    assert backend_names() == ["auto", "kernel", "userns", "fuse", "copy"]
    ranks = [b.rank for b in builtin_backends()]
    assert ranks == sorted(ranks)
    for backend in builtin_backends():
        assert isinstance(backend, Backend)
        assert backend.deviations <= set(DEVIATIONS), backend.name


def test_copy_backend_always_works() -> None:
    copy = next(b for b in builtin_backends() if b.name == "copy")
    assert copy.probe() == ""
