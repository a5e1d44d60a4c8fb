"""OverlayStack against the real kernel: copy-up, whiteouts, layers, cleanup."""

from __future__ import annotations

import errno
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
    OverlayWarning,
)
from pytest_overlay._backends.protocol import Backend
from tests.helpers import make_tree, overlay_mounts, tree_digest

A, M, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE


def _mount(lowers: list[Path], workspace: Path) -> OverlayStack:
    stack = OverlayStack(lowers, workspace=workspace)
    try:
        return stack.mount()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return make_tree(
        tmp_path / "base",
        {"file.txt": "original\n", "dir": {"inner.txt": "inner\n", "sub": {"deep": "d"}}},
    )


@pytest.fixture
def stack(base: Path, tmp_path: Path) -> Iterator[OverlayStack]:
    s = _mount([base], tmp_path / "ws")
    yield s
    s.close()


def test_write_copies_up_and_leaves_base(stack: OverlayStack, base: Path) -> None:
    (stack.merged / "file.txt").write_text("changed\n")
    assert (stack.upper / "file.txt").read_text() == "changed\n"
    assert (base / "file.txt").read_text() == "original\n"
    assert stack.changes() == [Change(M, "file.txt")]


def test_read_does_not_copy_up(stack: OverlayStack) -> None:
    assert (stack.merged / "dir" / "inner.txt").read_text() == "inner\n"
    os.stat(stack.merged / "dir" / "sub" / "deep")
    assert os.listdir(stack.upper) == []
    assert stack.changes() == []


def test_nested_write_copies_parents_up(stack: OverlayStack) -> None:
    (stack.merged / "dir" / "sub" / "deep").write_text("new")
    assert stack.changes() == [Change(M, "dir"), Change(M, "dir/sub"), Change(M, "dir/sub/deep")]
    # Only the directories on the way were copied up, not their other entries.
    assert sorted(os.listdir(stack.upper / "dir")) == ["sub"]


def test_unlink_of_lower_file_leaves_whiteout(stack: OverlayStack, base: Path) -> None:
    (stack.merged / "file.txt").unlink()
    st = os.lstat(stack.upper / "file.txt")
    assert stat.S_ISCHR(st.st_mode)
    assert st.st_rdev == 0
    assert (base / "file.txt").exists()
    assert stack.changes() == [Change(D, "file.txt")]


def test_new_files_are_adds(stack: OverlayStack) -> None:
    (stack.merged / "new").mkdir()
    (stack.merged / "new" / "a").write_text("a")
    (stack.merged / "dir" / "b").symlink_to("../file.txt")
    assert stack.changes() == [
        Change(M, "dir"),
        Change(A, "dir/b"),
        Change(A, "new"),
        Change(A, "new/a"),
    ]


def test_new_then_deleted_leaves_nothing(stack: OverlayStack) -> None:
    (stack.merged / "tmp").write_text("x")
    (stack.merged / "tmp").unlink()
    assert stack.changes() == []
    assert os.listdir(stack.upper) == []


def test_deleted_tree_reported_once_at_its_root(stack: OverlayStack) -> None:
    shutil.rmtree(stack.merged / "dir")
    assert stack.changes() == [Change(D, "dir")]


def test_rm_rf_then_mkdir_makes_opaque_directory(stack: OverlayStack) -> None:
    shutil.rmtree(stack.merged / "dir")
    (stack.merged / "dir").mkdir()
    (stack.merged / "dir" / "fresh").write_text("f")
    assert os.listdir(stack.merged / "dir") == ["fresh"]
    assert stack.changes() == [
        Change(M, "dir"),
        Change(A, "dir/fresh"),
        Change(D, "dir/inner.txt"),
        Change(D, "dir/sub"),
    ]


def test_directory_rename_of_lower_dir_is_exdev(stack: OverlayStack) -> None:
    with pytest.raises(OSError) as info:
        os.rename(stack.merged / "dir", stack.merged / "moved")
    assert info.value.errno == errno.EXDEV


def test_lower_precedence_top_most_first(tmp_path: Path) -> None:
    top = make_tree(tmp_path / "top", {"shared": "top", "only-top": "t"})
    bottom = make_tree(tmp_path / "bottom", {"shared": "bottom", "only-bottom": "b"})
    with OverlayStack([top, bottom], workspace=tmp_path / "ws") as s:
        assert (s.merged / "shared").read_text() == "top"
        assert sorted(os.listdir(s.merged)) == ["only-bottom", "only-top", "shared"]
        assert s.lowers == (top.resolve(), bottom.resolve())
        (s.merged / "only-bottom").unlink()
        assert s.changes() == [Change(D, "only-bottom")]


def test_file_in_higher_layer_hides_directory_below(tmp_path: Path) -> None:
    top = make_tree(tmp_path / "top", {"x": "file on top"})
    bottom = make_tree(tmp_path / "bottom", {"x": {"below": "hidden"}})
    with OverlayStack([top, bottom], workspace=tmp_path / "ws") as s:
        assert (s.merged / "x").read_text() == "file on top"
        (s.merged / "x").unlink()
        (s.merged / "x").mkdir()
        assert os.listdir(s.merged / "x") == []
        assert s.changes() == [Change(M, "x")]


@pytest.mark.parametrize("name", ["with space", "co:lon", "com,ma", "back\\slash", "-dash", "ünï"])
def test_lower_paths_that_need_escaping(tmp_path: Path, name: str) -> None:
    lower = make_tree(tmp_path / name / name, {"f": name})
    with OverlayStack([lower, make_tree(tmp_path / "plain", {"g": "g"})]) as s:
        assert (s.merged / "f").read_text() == name
        assert (s.merged / "g").read_text() == "g"


def test_two_hundred_lower_layers(tmp_path: Path) -> None:
    layers = [
        make_tree(tmp_path / f"layer{i:03}", {f"f{i}": str(i), "who": str(i)}) for i in range(200)
    ]
    with OverlayStack(layers, workspace=tmp_path / "ws") as s:
        names = os.listdir(s.merged)
        assert len(names) == 201
        assert (s.merged / "who").read_text() == "0"
        assert (s.merged / "f199").read_text() == "199"


def test_base_is_byte_identical_after_heavy_use(base: Path, tmp_path: Path) -> None:
    before = tree_digest(base)
    with OverlayStack([base], workspace=tmp_path / "ws") as s:
        m = s.merged
        (m / "file.txt").write_text("x")
        os.chmod(m / "dir" / "inner.txt", 0o600)
        os.utime(m / "dir" / "sub" / "deep", (0, 0))
        os.rename(m / "file.txt", m / "renamed")
        shutil.rmtree(m / "dir" / "sub")
        with open(m / "dir" / "inner.txt", "r+") as f:
            f.truncate(0)
    assert tree_digest(base) == before


def test_merged_root_looks_like_base_root(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"f": "f"})
    os.chmod(base, 0o751)
    with OverlayStack([base], workspace=tmp_path / "ws") as s:
        assert stat.S_IMODE(os.stat(s.merged).st_mode) == 0o751


def test_close_unmounts_and_removes_workspace(base: Path, tmp_path: Path) -> None:
    s = OverlayStack([base], workspace=tmp_path / "ws").mount()
    (s.merged / "junk").mkdir()
    os.chmod(s.merged / "junk", 0o500)  # read-only directories must not block cleanup
    workspace, merged = s.workspace, s.merged
    assert str(merged) in overlay_mounts()
    s.close()
    s.close()  # idempotent
    assert str(merged) not in overlay_mounts()
    assert not workspace.exists()
    assert not s.mounted


def test_busy_mount_is_detached_lazily(base: Path, tmp_path: Path) -> None:
    s = OverlayStack([base], workspace=tmp_path / "ws").mount()
    held = open(s.merged / "file.txt")  # noqa: SIM115 - held open across close on purpose
    try:
        with pytest.warns(OverlayWarning, match=r"has open \(fd \d+\) \S+/merged/file.txt"):
            s.close()
        assert not s.clean_unmount
        assert held.read() == "original\n"
    finally:
        held.close()
    assert (base / "file.txt").read_text() == "original\n"


def test_each_mount_gets_a_fresh_workspace(base: Path, tmp_path: Path) -> None:
    s = OverlayStack([base], workspace=tmp_path / "ws")
    with s:
        first = s.workspace
        (s.merged / "a").write_text("a")
    with s:
        assert s.workspace != first
        assert not (s.merged / "a").exists()


def test_not_mounted_attributes_explain(base: Path) -> None:
    s = OverlayStack([base])
    with pytest.raises(OverlayError, match="not mounted"):
        _ = s.merged


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (lambda t: [t / "missing"], "does not exist"),
        (lambda t: [make_tree(t / "x", {"f": "f"}) / "f"], "is not a directory"),
        (lambda t: [make_tree(t / "x", {}), t / "x"], "given twice"),
        (lambda t: [make_tree(t / "x", {"y": {}}), t / "x" / "y"], "lies inside lower layer"),
        (lambda t: [], "at least one lower layer"),
    ],
)
def test_bad_lowers_are_refused_before_mounting(tmp_path: Path, layers, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OverlayError, match=message):
        OverlayStack(layers(tmp_path))


def test_symlink_loop_lower_is_refused(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(OverlayError, match="symlink loop"):
        OverlayStack([tmp_path / "loop"])


def test_workspace_inside_base_is_refused(base: Path) -> None:
    with pytest.raises(OverlayError, match="inside lower layer"):
        OverlayStack([base], workspace=base / "ws")


def test_a_single_path_is_not_a_list_of_layers(base: Path) -> None:
    with pytest.raises(TypeError, match=r"OverlayStack\(\[path\]\)"):
        OverlayStack(base)  # type: ignore[arg-type]


# --- merged= : the union shown at a directory of the caller's choosing ---------------------


def test_the_union_shows_at_a_new_directory_left_empty_at_close(
    backend: Backend, base: Path, tmp_path: Path
) -> None:
    target = tmp_path / "place" / "data"
    stack = OverlayStack([base], workspace=tmp_path / "ws", backend=backend, merged=target)
    with stack:
        assert stack.merged == target
        assert sorted(os.listdir(target)) == sorted(os.listdir(base))
        (target / "new.txt").write_text("new")
        assert Change(ChangeKind.ADD, "new.txt") in stack.changes()
        snap = stack.snapshot()
        (target / "later.txt").write_text("later")
        stack.restore(snap)
        assert (target / "new.txt").read_text() == "new"
        assert not (target / "later.txt").exists()
    assert os.listdir(target) == []
    assert not (base / "new.txt").exists()


def test_an_existing_empty_directory_is_used_and_kept(
    backend: Backend, base: Path, tmp_path: Path
) -> None:
    target = tmp_path / "empty"
    target.mkdir()
    with OverlayStack([base], workspace=tmp_path / "ws", backend=backend, merged=target) as s:
        assert sorted(os.listdir(s.merged)) == sorted(os.listdir(base))
    assert target.is_dir()
    assert os.listdir(target) == []


def test_a_target_that_is_not_empty_is_refused_and_left_alone(base: Path, tmp_path: Path) -> None:
    target = make_tree(tmp_path / "full", {"mine.txt": "keep me"})
    stack = OverlayStack([base], workspace=tmp_path / "ws", merged=target)
    with pytest.raises(OverlayError, match="exists and is not an empty directory"):
        stack.mount()
    assert os.listdir(target) == ["mine.txt"]
    assert not stack.mounted


@pytest.mark.parametrize("where", ["inside", "above"])
def test_a_target_overlapping_the_base_is_refused(base: Path, where: str) -> None:
    # The base itself is allowed: the union over its own path (tests/test_in_place.py).
    target = {"inside": base / "sub", "above": base.parent}[where]
    with pytest.raises(OverlayError, match="overlaps lower layer"):
        OverlayStack([base], merged=target)
