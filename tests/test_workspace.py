"""Workspace creation and removal."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pytest_overlay._workspace import create_workspace, remove_workspace
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
