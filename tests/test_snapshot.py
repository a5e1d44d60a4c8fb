"""Snapshots on real mounts: freeze, restore, diff, share, and what keeps layers alive.

Every test runs on each backend that works here (kernel or userns, fuse-overlayfs, copy):
snapshot and restore are built on the backend protocol alone.
"""

from __future__ import annotations

import gc
import mmap
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_overlay import (
    BackendUnavailable,
    Change,
    ChangeKind,
    OverlayError,
    OverlayStack,
    Snapshot,
)
from pytest_overlay import stack as stack_module
from pytest_overlay._backends.ladder import builtin_backends
from pytest_overlay._backends.protocol import Backend
from tests.helpers import make_tree, overlay_mounts, tree_digest

A, M, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE
BACKENDS: dict[str, Backend] = {b.name: b for b in builtin_backends()}


@pytest.fixture
def kernel() -> Backend:
    """Whichever kernel overlayfs backend fits this uid, for the cost tests."""
    for name in ("kernel", "userns"):
        if not BACKENDS[name].probe():
            return BACKENDS[name]
    pytest.skip("kernel overlayfs cannot mount here")


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return make_tree(
        tmp_path / "base",
        {
            "file.txt": "original\n",
            "dir": {"inner.txt": "inner\n", "sub": {"deep": "d"}},
            "link": ("symlink", "file.txt"),
        },
    )


@pytest.fixture
def stack(backend: Backend, base: Path, tmp_path: Path) -> Iterator[OverlayStack]:
    s = OverlayStack([base], workspace=tmp_path / "ws", backend=backend)
    try:
        s.mount()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    yield s
    s.close()


def listing(root: Path) -> dict[str, str]:
    """Every path under *root* with its content (files), target (symlinks) or "/" (dirs)."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                found[rel] = "/"
            else:
                found[rel] = path.read_text()
    return found


def test_snapshot_keeps_merged_and_starts_a_fresh_upper(stack: OverlayStack, base: Path) -> None:
    merged = stack.merged
    (merged / "new.txt").write_text("new\n")
    (merged / "file.txt").write_text("changed\n")
    before = listing(merged)

    snap = stack.snapshot("first")

    assert stack.merged == merged
    assert listing(merged) == before
    assert os.listdir(stack.upper) == []
    assert stack.changes() == []
    assert snap.name == "first"
    assert snap.layers == stack.lowers == (snap.layer, base.resolve())
    assert snap.layer is not None
    assert sorted(os.listdir(snap.layer)) == ["file.txt", "new.txt"]
    assert snap.changes() == [Change(M, "file.txt"), Change(A, "new.txt")]
    # Writes after the snapshot go to the new upper, not into the frozen layer.
    (merged / "after").write_text("x")
    assert sorted(os.listdir(snap.layer)) == ["file.txt", "new.txt"]
    assert stack.changes() == [Change(A, "after")]


def test_snapshot_layer_holds_only_the_changes(stack: OverlayStack, base: Path) -> None:
    for i in range(50):
        (base / f"bulk{i}").write_text(str(i))
    (stack.merged / "dir" / "sub" / "deep").write_text("edited")
    snap = stack.snapshot()
    assert snap.layer is not None
    assert {p.relative_to(snap.layer).as_posix() for p in snap.layer.rglob("*")} == {
        "dir",
        "dir/sub",
        "dir/sub/deep",
    }
    # The base is a layer of the snapshot as it is, not a copy of it.
    assert snap.layers[-1] == base.resolve()


def test_nested_snapshots_restore_in_any_order(stack: OverlayStack) -> None:
    m = stack.merged
    states: list[tuple[Snapshot, dict[str, str]]] = []
    (m / "one").write_text("1")
    states.append((stack.snapshot("s1"), listing(m)))
    shutil.rmtree(m / "dir")
    (m / "dir").mkdir()
    (m / "dir" / "fresh").write_text("f")
    states.append((stack.snapshot("s2"), listing(m)))
    (m / "one").unlink()
    (m / "link").unlink()
    (m / "link").symlink_to("dir/fresh")
    states.append((stack.snapshot("s3"), listing(m)))
    (m / "unsaved").write_text("lost")

    for index in (0, 2, 1, 2, 0):
        snap, expected = states[index]
        (m / "scribble").write_text(str(index))
        stack.restore(snap)
        assert listing(m) == expected, snap.name
        assert stack.lowers == snap.layers
        assert stack.merged == m
    stack.restore(stack.base)
    assert "one" not in listing(m)
    assert listing(m)["dir/sub/deep"] == "d"


def test_snapshot_taken_after_a_restore_branches(stack: OverlayStack) -> None:
    m = stack.merged
    (m / "a").write_text("a")
    s1 = stack.snapshot()
    (m / "b").write_text("b")
    s2 = stack.snapshot()
    stack.restore(s1)
    (m / "c").write_text("c")
    s3 = stack.snapshot()
    assert s3.layers[1:] == s1.layers
    assert s1.diff(s2) == [Change(A, "b")]
    assert s1.diff(s3) == [Change(A, "c")]
    assert s2.diff(s3) == [Change(D, "b"), Change(A, "c")]
    stack.restore(s2)
    assert sorted(os.listdir(m)) == ["a", "b", "dir", "file.txt", "link"]


def test_snapshot_without_changes_adds_no_layer(stack: OverlayStack) -> None:
    (stack.merged / "x").write_text("x")
    s1 = stack.snapshot()
    s2 = stack.snapshot()
    assert s2.layer is None
    assert s2.layers == s1.layers == stack.lowers
    assert s2.changes() == []
    stack.restore(s1)
    assert stack.snapshot().layers == s1.layers


def test_root_attributes_survive_snapshot_and_restore(stack: OverlayStack) -> None:
    original = stat.S_IMODE(os.stat(stack.merged).st_mode)
    os.chmod(stack.merged, 0o711)
    snap = stack.snapshot()
    assert snap.layer is not None  # a root chmod alone is a change worth a layer
    assert stat.S_IMODE(os.stat(stack.merged).st_mode) == 0o711
    stack.restore(stack.base)
    assert stat.S_IMODE(os.stat(stack.merged).st_mode) == original
    stack.restore(snap)
    assert stat.S_IMODE(os.stat(stack.merged).st_mode) == 0o711


def test_restore_discards_writes_and_frees_unused_layers(stack: OverlayStack) -> None:
    m = stack.merged
    (m / "kept").write_text("k")
    s1 = stack.snapshot()
    (m / "dropped").write_text("d")
    s2 = stack.snapshot()
    assert s2.layer is not None
    dropped_layer = s2.layer
    stack.restore(s1)
    assert not (m / "dropped").exists()
    assert dropped_layer.exists()  # s2 still refers to it
    del s2
    gc.collect()
    assert not dropped_layer.exists()
    assert s1.layer is not None
    assert s1.layer.exists()


def test_reset_goes_back_to_the_base_or_to_a_snapshot(stack: OverlayStack, base: Path) -> None:
    m = stack.merged
    before = listing(m)
    (m / "file.txt").write_text("changed\n")
    snap = stack.snapshot()
    (m / "later").write_text("l")
    stack.reset(snap)
    assert (m / "file.txt").read_text() == "changed\n"
    assert not (m / "later").exists()
    stack.reset()
    assert listing(m) == before
    assert stack.lowers == (base,)
    assert stack.merged == m


def test_diff_ignores_copy_ups_that_changed_nothing(stack: OverlayStack) -> None:
    m = stack.merged
    with open(m / "file.txt", "r+"):
        pass  # opened for writing: overlayfs copies it up
    os.utime(m / "dir" / "inner.txt")  # copies up, changes only times
    (m / "added").write_text("a")
    snap = stack.snapshot()
    assert Change(A, "added") in snap.changes()
    assert snap.diff(stack.base) == [Change(D, "added")]
    assert stack.base.diff(snap) == [Change(A, "added")]
    assert stack.diff() == [Change(A, "added")]


def test_diff_against_the_live_view(stack: OverlayStack) -> None:
    m = stack.merged
    (m / "file.txt").write_text("v1")
    s1 = stack.snapshot()
    (m / "file.txt").write_text("v2")
    shutil.rmtree(m / "dir" / "sub")
    os.chmod(m / "dir", 0o700)
    assert s1.diff() == [Change(M, "dir"), Change(D, "dir/sub"), Change(M, "file.txt")]
    assert stack.diff(s1) == s1.diff()
    assert stack.diff() == [Change(M, "dir"), Change(D, "dir/sub"), Change(M, "file.txt")]
    (m / "file.txt").write_text("v1")
    assert s1.diff() == [Change(M, "dir"), Change(D, "dir/sub")]


def test_deltas_carry_the_entries_before_and_after(stack: OverlayStack, base: Path) -> None:
    (stack.merged / "file.txt").write_text("now\n")
    (delta,) = stack._deltas_since()
    assert delta.before is not None
    assert delta.after is not None
    assert delta.before.source == base.resolve() / "file.txt"
    assert delta.after.source.read_text() == "now\n"


def test_open_file_blocks_snapshot_and_restore(stack: OverlayStack) -> None:
    m = stack.merged
    (m / "file.txt").write_text("written")
    snap = stack.snapshot()
    (m / "more").write_text("more")
    held = open(m / "file.txt")  # noqa: SIM115 - held open across the calls on purpose
    try:
        with pytest.raises(OverlayError, match=r"in use \(pid \d+ .*has open .*file\.txt"):
            stack.snapshot()
        with pytest.raises(OverlayError, match=r"cannot restore .*Close those files"):
            stack.restore(snap)
        # Nothing changed: still mounted, same state, same layers.
        assert stack.mounted
        assert (m / "more").read_text() == "more"
        assert stack.changes() == [Change(A, "more")]
        assert stack.lowers == snap.layers
    finally:
        held.close()
    stack.restore(snap)
    assert not (m / "more").exists()


def test_working_directory_inside_blocks_snapshot(stack: OverlayStack) -> None:
    here = os.getcwd()
    os.chdir(stack.merged / "dir")
    try:
        with pytest.raises(OverlayError, match="has its working directory in"):
            stack.snapshot()
    finally:
        os.chdir(here)
    stack.snapshot()


def test_mapped_file_blocks_snapshot(stack: OverlayStack) -> None:
    with open(stack.merged / "file.txt", "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        with pytest.raises(OverlayError, match="in use"):
            stack.snapshot()
    finally:
        mapping.close()
    stack.snapshot()


def test_snapshot_as_the_base_of_another_stack(
    stack: OverlayStack, backend: Backend, tmp_path: Path
) -> None:
    (stack.merged / "built").write_text("once")
    snap = stack.snapshot()
    with OverlayStack([snap], workspace=tmp_path / "other", backend=backend) as other:
        assert (other.merged / "built").read_text() == "once"
        assert other.lowers == snap.layers
        (other.merged / "built").write_text("changed by other")
        assert other.diff() == [Change(M, "built")]
        assert other.base.layers == snap.layers
        # The original is not affected, and may even go away.
        assert (stack.merged / "built").read_text() == "once"
        stack.close()
        assert (other.merged / "file.txt").read_text() == "original\n"


def test_snapshot_outlives_its_stack(base: Path, backend: Backend, tmp_path: Path) -> None:
    with OverlayStack([base], workspace=tmp_path / "ws", backend=backend) as s:
        (s.merged / "built").write_text("once")
        snap = s.snapshot()
        workspace = s.workspace
    assert snap.layer is not None
    assert (snap.layer / "built").read_text() == "once"
    with OverlayStack([snap], workspace=tmp_path / "ws2", backend=backend) as other:
        assert (other.merged / "built").read_text() == "once"
        del snap
        gc.collect()
        # The mounted stack keeps the layers alive.
        assert (other.merged / "built").read_text() == "once"
        assert workspace.exists()
    # So does the unmounted one, which could be mounted again.
    gc.collect()
    assert workspace.exists()
    del other
    gc.collect()
    assert not workspace.exists()
    assert list((tmp_path / "ws").iterdir()) == []


def test_close_without_snapshots_removes_everything(stack: OverlayStack) -> None:
    (stack.merged / "x").write_text("x")
    workspace = stack.workspace
    stack.close()
    assert not workspace.exists()


def test_closed_stack_cannot_give_a_live_diff(stack: OverlayStack) -> None:
    snap = stack.snapshot()
    stack.close()
    with pytest.raises(OverlayError, match="stack that took it is closed"):
        snap.diff()


def test_restoring_a_snapshot_of_another_base_is_refused(
    stack: OverlayStack, backend: Backend, tmp_path: Path
) -> None:
    other_base = make_tree(tmp_path / "other-base", {"o": "o"})
    with OverlayStack([other_base], workspace=tmp_path / "o", backend=backend) as other:
        foreign = other.snapshot()
        with pytest.raises(OverlayError, match="not taken on this stack's base"):
            stack.restore(foreign)
        with pytest.raises(OverlayError, match="shares no layer"):
            stack.diff(foreign)
        with pytest.raises(OverlayError, match="share no layer"):
            foreign.diff(stack.base)
    assert stack.mounted


def test_a_stack_on_a_snapshot_may_restore_to_it(
    stack: OverlayStack, backend: Backend, tmp_path: Path
) -> None:
    (stack.merged / "built").write_text("b")
    snap = stack.snapshot()
    with OverlayStack([snap], workspace=tmp_path / "o", backend=backend) as other:
        (other.merged / "scratch").write_text("s")
        other.restore(snap)
        assert not (other.merged / "scratch").exists()
        with pytest.raises(OverlayError, match="not taken on this stack's base"):
            other.restore(stack.base)


def test_layer_limit_is_checked_before_unmounting(
    stack: OverlayStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack_module, "MAX_LOWER_LAYERS", 3)
    for i in range(2):
        (stack.merged / f"f{i}").write_text(str(i))
        stack.snapshot()
    (stack.merged / "more").write_text("m")
    with pytest.raises(OverlayError, match="stacks at most 3"):
        stack.snapshot()
    assert (stack.merged / "more").read_text() == "m"


def test_base_is_untouched(stack: OverlayStack, base: Path) -> None:
    before = tree_digest(base)
    m = stack.merged
    shutil.rmtree(m / "dir")
    s1 = stack.snapshot()
    (m / "dir").mkdir()
    os.chmod(m / "file.txt", 0o600)
    stack.snapshot()
    stack.restore(s1)
    stack.restore(stack.base)
    assert tree_digest(base) == before


def test_snapshot_objects_come_from_stacks(stack: OverlayStack) -> None:
    with pytest.raises(TypeError, match=r"OverlayStack.snapshot\(\)"):
        Snapshot(object(), (), None, "x", stack)
    assert "snapshot-1" in repr(stack.snapshot())


def test_snapshot_needs_a_mounted_stack(base: Path) -> None:
    with pytest.raises(OverlayError, match="not mounted"):
        OverlayStack([base]).snapshot()


def test_snapshot_keeps_the_mount_point(stack: OverlayStack, backend: Backend) -> None:
    if "not-a-mount-point" in backend.deviations:
        pytest.skip(f"{backend.name} mounts nothing")
    (stack.merged / "x").write_text("x")
    stack.snapshot()
    assert str(stack.merged) in overlay_mounts()


# --- cost: nothing that snapshot, restore or diff does depends on the size of the base ---


def count_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    for name in ("lstat", "stat", "scandir", "listdir"):
        real = getattr(os, name)

        def counting(*args: object, _real: object = real, **kwargs: object) -> object:
            calls.append(str(args[0]) if args else "")
            return _real(*args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(os, name, counting)
    return calls


def operations(stack: OverlayStack, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    m = stack.merged
    for i in range(5):
        (m / f"new{i}").write_text(str(i))
    (m / "file.txt").write_text("changed")
    counts: dict[str, int] = {}
    with monkeypatch.context() as patch:
        calls = count_calls(patch)
        snap = stack.snapshot()
        counts["snapshot"] = len(calls)
        (m / "later").write_text("l")
        calls.clear()
        assert len(stack.diff(stack.base)) == 7
        counts["diff"] = len(calls)
        calls.clear()
        stack.restore(snap)
        counts["restore"] = len(calls)
    return counts


@pytest.mark.parametrize("bulk", [10, 2000])
def test_cost_does_not_follow_the_base_size(
    kernel: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bulk: int
) -> None:
    small = make_tree(tmp_path / "small", {"file.txt": "x"})
    large = make_tree(tmp_path / "large", {"file.txt": "x"})
    for i in range(bulk):
        (large / f"bulk{i:05}").write_text(str(i))
    with OverlayStack([small], workspace=tmp_path / "a", backend=kernel) as a:
        reference = operations(a, monkeypatch)
    with OverlayStack([large], workspace=tmp_path / "b", backend=kernel) as b:
        measured = operations(b, monkeypatch)
    assert measured == reference
    assert all(count < 80 for count in measured.values()), measured
