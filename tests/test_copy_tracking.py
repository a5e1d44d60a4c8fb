"""The copy backend looks only at what a test touched: changes(), upper and reset."""

from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_overlay import OverlayStack
from pytest_overlay._backends import copy as copy_backend
from pytest_overlay._backends import tracking
from pytest_overlay._backends.materialize import diff_baseline
from pytest_overlay._linux.filecopy import FileCopier
from pytest_overlay.changes import ChangeKind
from tests.helpers import make_tree, tree_digest

A, M, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE


@pytest.fixture
def base(tmp_path: Path) -> Path:
    spec: dict[str, object] = {
        f"d{d}": {f"f{f}": f"{d}-{f}" for f in range(20)} for d in range(10)
    }
    spec["top"] = "top"
    spec["link"] = ("symlink", "top")
    return make_tree(tmp_path / "base", spec)


@pytest.fixture
def no_full_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any look at the copy that walks all of it, but the one at teardown (which
    deletes the whole copy anyway)."""
    real = diff_baseline

    def full_walk(*args: Any, **kwargs: Any) -> Any:
        if "opened" in kwargs:
            return real(*args, **kwargs)
        raise AssertionError("the whole copy was walked")

    monkeypatch.setattr(copy_backend, "diff_baseline", full_walk)


def _digest(root: Path) -> dict[str, tuple[object, ...]]:
    """The tree's digest, but for the root's mtime (kept by no backend across a reset)."""
    digest = tree_digest(root)
    del digest["."]
    return digest


def _kinds(stack: OverlayStack) -> set[tuple[ChangeKind, str]]:
    return {(c.kind, c.path) for c in stack.changes()}


@pytest.mark.usefixtures("no_full_walk")
def test_changes_and_upper_look_only_at_touched_paths(base: Path, tmp_path: Path) -> None:
    with OverlayStack([base], workspace=tmp_path / "ws", backend="copy") as stack:
        m = stack.merged
        assert stack.changes() == []
        (m / "d1" / "f1").write_text("changed")
        (m / "d2" / "f2").unlink()
        (m / "d3" / "new").mkdir()
        (m / "d3" / "new" / "x").write_text("x")
        os.chmod(m / "top", 0o600)
        os.rename(m / "d4" / "f4", m / "d4" / "moved")
        for name in os.listdir(m / "d5"):
            (m / "d5" / name).unlink()
        os.rmdir(m / "d5")
        (m / "d5").mkdir()  # made again: opaque, like overlayfs
        assert _kinds(stack) == {
            (M, "d1"),
            (M, "d1/f1"),
            (M, "d2"),
            (D, "d2/f2"),
            (M, "d3"),
            (A, "d3/new"),
            (A, "d3/new/x"),
            (M, "top"),
            (M, "d4"),
            (D, "d4/f4"),
            (A, "d4/moved"),
            (M, "d5"),
            *((D, f"d5/f{f}") for f in range(20)),
        }
        assert (stack.upper / "d1" / "f1").read_text() == "changed"


def test_a_write_through_a_shared_mapping_is_seen_while_the_file_is_open(
    base: Path, tmp_path: Path
) -> None:
    with OverlayStack([base], workspace=tmp_path / "ws", backend="copy") as stack:
        assert stack.changes() == []  # the tracker is running before the open
        fd = os.open(stack.merged / "d7" / "f3", os.O_RDWR)
        try:
            with mmap.mmap(fd, 0) as mapped:
                mapped[0:1] = b"X"
                mapped.flush()
                assert _kinds(stack) == {(M, "d7"), (M, "d7/f3")}
        finally:
            os.close(fd)


def test_a_write_through_a_new_hard_link_is_seen(base: Path, tmp_path: Path) -> None:
    with OverlayStack([base], workspace=tmp_path / "ws", backend="copy") as stack:
        m = stack.merged
        (m / "new").mkdir()
        os.link(m / "d8" / "f8", m / "new" / "alias")
        with open(m / "new" / "alias", "a") as f:
            f.write("more")
        # The write reached d8/f8 through a directory no watch of d8 hears about.
        assert (M, "d8/f8") in _kinds(stack)


def test_an_overflowed_event_queue_falls_back_to_a_full_walk(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with OverlayStack([base], workspace=tmp_path / "ws", backend="copy") as stack:
        tracker = tracking.poll(next(iter(copy_backend.COPY._trackers.values())))
        (stack.merged / "d9" / "f9").write_text("lost")
        tracking.poll(tracker)
        tracker.touched.clear()  # what an overflow loses
        tracker.lost = True
        assert _kinds(stack) == {(M, "d9"), (M, "d9/f9")}


@pytest.mark.usefixtures("no_full_walk")
def test_reset_redoes_only_what_the_example_changed(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copied: list[str] = []
    real = FileCopier._copy_one

    def counting(self: FileCopier, src: str, dst: str, st: os.stat_result) -> os.stat_result:
        copied.append(src)
        return real(self, src, dst, st)

    before = tree_digest(base)
    with OverlayStack([base], workspace=tmp_path / "ws", backend="copy") as stack:
        fresh = _digest(stack.merged)
        monkeypatch.setattr(FileCopier, "_copy_one", counting)
        m = stack.merged
        (m / "d1" / "f1").write_text("changed")
        (m / "d2" / "f2").unlink()
        (m / "d3" / "new").mkdir()
        os.chmod(m / "d6", 0o500)
        os.unlink(m / "link")
        for name in os.listdir(m / "d5"):
            (m / "d5" / name).unlink()
        os.rmdir(m / "d5")
        stack.reset()
        assert sorted(os.path.relpath(p, base) for p in copied) == sorted(
            ["d1/f1", "d2/f2", *(f"d5/f{f}" for f in range(20))]
        )
        assert _digest(stack.merged) == fresh
        assert stack.changes() == []
        assert not any(stack.upper.iterdir())
        # The next example is tracked afresh.
        copied.clear()
        (m / "d1" / "f2").write_text("again")
        assert _kinds(stack) == {(M, "d1"), (M, "d1/f2")}
        stack.reset()
        assert copied == [os.fspath(base / "d1" / "f2")]
        assert _digest(stack.merged) == fresh
    assert tree_digest(base) == before


def test_restore_of_a_snapshot_in_place(base: Path, tmp_path: Path) -> None:
    with OverlayStack([base], workspace=tmp_path / "ws", backend="copy") as stack:
        fresh = _digest(stack.merged)
        (stack.merged / "d1" / "f1").write_text("one")
        shutil_rm = stack.merged / "d2"
        for name in os.listdir(shutil_rm):
            (shutil_rm / name).unlink()
        os.rmdir(shutil_rm)
        (stack.merged / "d2").mkdir()
        snap = stack.snapshot()
        at_snapshot = _digest(stack.merged)
        (stack.merged / "d1" / "f1").write_text("two")
        (stack.merged / "d3" / "f3").unlink()
        stack.restore(snap)
        assert _digest(stack.merged) == at_snapshot
        assert stack.changes() == []
        stack.reset()
        assert _digest(stack.merged) == fresh
        assert stack.changes() == []
        stack.restore(snap)
        assert _digest(stack.merged) == at_snapshot
