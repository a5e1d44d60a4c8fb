"""Sweeping stale workspaces left by a killed run."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pytest_overlay._sweep import stale_workspaces, sweep
from tests.helpers import make_tree


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_sweep_opens_up_stale_work_dirs_only(tmp_path: Path) -> None:
    stale = make_tree(
        tmp_path / "overlay" / "test_x-abc",
        {"upper": {"f": "kept"}, "work": {"work": {"incompat": {"volatile": {}}}}, "merged": {}},
    )
    os.chmod(stale / "work" / "work" / "incompat", 0)
    os.chmod(stale / "work" / "work", 0)
    # Look-alikes that are not workspaces: never touched.
    user = make_tree(tmp_path / "overlay" / "notes", {"work": {"work": {}}})
    os.chmod(user / "work" / "work", 0)
    other = make_tree(
        tmp_path / "elsewhere" / "x", {"upper": {}, "work": {"work": {}}, "merged": {}}
    )
    os.chmod(other / "work" / "work", 0)

    assert stale_workspaces(tmp_path) == [stale]
    assert sweep(tmp_path) == [stale]
    assert _mode(stale / "work" / "work") == 0o700
    assert _mode(stale / "work" / "work" / "incompat") == 0o700
    assert (stale / "upper" / "f").read_text() == "kept"
    assert _mode(user / "work" / "work") == 0
    assert _mode(other / "work" / "work") == 0
    for path in (user / "work" / "work", other / "work" / "work"):
        os.chmod(path, 0o700)


def test_nothing_to_sweep(tmp_path: Path) -> None:
    assert sweep(tmp_path / "missing") == []
    assert sweep(tmp_path) == []
