"""Sweeping stale workspaces left by a killed run."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux.sweep import _mount_points, stale_workspaces, sweep
from pytest_overlay._linux.workspace import create_workspace
from tests.helpers import auto_backend, make_tree


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


def test_sweep_unmounts_a_dead_fuse_mount_in_the_host_namespace(tmp_path: Path) -> None:
    if os.geteuid() == 0 or auto_backend() != "fuse" or not _namespace.cached_probe():
        pytest.skip("only an ordinary user without user namespaces mounts fuse on the host")
    base = make_tree(tmp_path / "base", {"f": "f"})
    space = create_workspace(tmp_path / "bt" / "overlay", base, prefix="test_dead")
    # A daemon whose pytest and watcher were both killed: started here, then SIGKILLed.
    daemon = subprocess.Popen(
        ["fuse-overlayfs", "-f", "-o", f"lowerdir={base},upperdir=upper,workdir=work", "merged"],
        cwd=space.root,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not os.path.ismount(space.merged) and time.monotonic() < deadline:
        time.sleep(0.01)
    daemon.kill()
    daemon.wait()
    assert os.fspath(space.merged) in _mount_points()  # dead, but still mounted

    assert sweep(tmp_path / "bt") == [space.root]
    assert os.fspath(space.merged) not in _mount_points()
    assert (base / "f").read_text() == "f"
