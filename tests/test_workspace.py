"""Workspace creation and removal."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pytest_overlay import BackendUnavailable
from pytest_overlay._backends import ladder as _backends
from pytest_overlay._linux import mount as _mount
from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux.workspace import create_workspace, remove_workspace
from tests.helpers import make_tree


def test_fresh_workspace_layout(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {})
    os.chmod(base, 0o705)
    first = create_workspace(tmp_path / "ws", base, prefix="my-test")
    second = create_workspace(tmp_path / "ws", base, prefix="my-test")
    assert first.root != second.root
    assert first.root.name.startswith("my-test-")
    assert [p.name for p in (first.upper, first.work, first.merged)] == ["upper", "work", "merged"]
    assert all(p.is_dir() and not any(p.iterdir()) for p in (first.upper, first.work))
    assert stat.S_IMODE(first.upper.stat().st_mode) == 0o705


def test_remove_survives_modes_left_by_kernel_and_tests(tmp_path: Path) -> None:
    space = create_workspace(tmp_path, make_tree(tmp_path / "base", {}))
    (space.work / "work").mkdir(mode=0o000)  # what overlayfs leaves after unmount
    locked = make_tree(space.upper / "locked", {"inner": {"f": "f"}})
    os.chmod(locked / "inner", 0o000)
    os.chmod(locked, 0o500)
    remove_workspace(space.root)
    assert not space.root.exists()


def test_remove_missing_workspace_is_quiet(tmp_path: Path) -> None:
    space = create_workspace(tmp_path, tmp_path)
    remove_workspace(space.root)
    remove_workspace(space.root)
    assert not space.root.exists()


def test_remove_after_a_volatile_mount_leaves_nothing(tmp_path: Path) -> None:
    # The fast path names what overlayfs leaves behind: work/work (mode 000), the volatile
    # marker incompat/volatile/dirty, and temporary #<hex> entries in work/work.
    try:
        backend = _backends.select_backend()
        backend.activate()  # an ordinary user enters the user namespace here
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    if backend.name not in ("kernel", "userns"):
        pytest.skip(f"needs kernel overlayfs; the best backend here is {backend.name}")
    flags = ("userxattr", "volatile") if backend.name == "userns" else ("volatile",)
    base = make_tree(tmp_path / "base", {"d": {"f": "f"}, "gone": "g"})
    space = create_workspace(tmp_path / "ws", base)
    with _namespace.mount_privileges():
        _mount.mount_overlay([base], space.upper, space.work, space.merged, flags=flags)
    try:
        (space.merged / "d" / "f").write_text("changed")
        (space.merged / "gone").unlink()
        (space.merged / "new").mkdir()
        os.symlink("/", space.merged / "new" / "to-root")
    finally:
        with _namespace.mount_privileges():
            assert _mount.unmount(space.merged)
    assert (space.work / "work").exists()
    remove_workspace(space.root)
    assert not space.root.exists()
    assert (base / "d" / "f").read_text() == "f"
    assert (base / "gone").exists()


def test_remove_handles_an_unusual_layout(tmp_path: Path) -> None:
    space = create_workspace(tmp_path, make_tree(tmp_path / "base", {}))
    make_tree(space.work / "work", {"#1f": "left by an interrupted copy-up"})
    os.chmod(space.work / "work", 0o000)
    make_tree(space.root / "layer-1", {"frozen": "f"})
    os.chmod(space.upper, 0o555)
    remove_workspace(space.root)
    assert not space.root.exists()


def test_parent_symlink_is_followed_where_it_points_now(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {})
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    link = tmp_path / "link"
    link.symlink_to(first)
    assert create_workspace(link, base).root.parent == first
    link.unlink()
    link.symlink_to(second)
    assert create_workspace(link, base).root.parent == second
