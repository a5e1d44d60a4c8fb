"""Sweeping stale workspaces left by a killed run."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from pytest_overlay._linux import mount as _mount
from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux.sweep import _mount_points, stale_workspaces, sweep
from pytest_overlay._linux.workspace import create_workspace
from tests.helpers import auto_backend, make_tree, usable_backend


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


def _dead_fuse_mount(tmp_path: Path) -> tuple[Path, Path]:
    """A workspace under ``tmp_path/bt`` whose fuse mount lost its daemon, and its base.

    What a run killed together with its daemon and its watcher leaves behind, as a later
    run finds it: nothing looked at the mount since it was made, so the kernel has no
    cached attributes for its root and even a stat() fails.
    """
    usable_backend("fuse")  # enters the user namespace where an ordinary user can
    base = make_tree(tmp_path / "base", {"f": "f"})
    space = create_workspace(tmp_path / "bt" / "overlay", base, prefix="test_dead")
    options = f"lowerdir={base},upperdir=upper,workdir=work"
    with _namespace.mount_privileges(for_children=True):
        daemon = subprocess.Popen(
            ["fuse-overlayfs", "-f", "-o", options, "merged"],
            cwd=space.root,
            stderr=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + 10
    # The mount table, not os.path.ismount: a stat would fill the attribute cache.
    while os.fspath(space.merged) not in _mount_points() and time.monotonic() < deadline:
        time.sleep(0.01)
    daemon.kill()
    daemon.wait()
    assert os.fspath(space.merged) in _mount_points()  # dead, but still mounted
    with pytest.raises(OSError) as info:
        os.stat(space.merged)
    assert info.value.errno == errno.ENOTCONN  # what made the sweep abort the session
    return space.merged, base


def test_sweep_unmounts_a_dead_fuse_mount_it_cannot_even_stat(tmp_path: Path) -> None:
    merged, base = _dead_fuse_mount(tmp_path)
    try:
        assert sweep(tmp_path / "bt") == [merged.parent]
        assert os.fspath(merged) not in _mount_points()
        assert (base / "f").read_text() == "f"
    finally:
        _cleanup(merged)


def test_a_dead_mount_under_basetemp_does_not_stop_the_next_run(
    pytester: pytest.Pytester,
) -> None:
    if os.geteuid() != 0 and auto_backend() != "fuse":
        pytest.skip("a dead mount in a user namespace dies with it: no later run sees it")
    merged, _ = _dead_fuse_mount(pytester.path)
    try:
        make_tree(pytester.path / "base2", {"g": "g"})
        pytester.makepyfile(
            """
            import pytest

            @pytest.mark.overlay("base2")
            def test_it(overlay_stack):
                assert (overlay_stack.merged / "g").read_text() == "g"
            """
        )
        result = pytester.runpytest_subprocess(f"--basetemp={pytester.path / 'bt'}")
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
        result.assert_outcomes(passed=1)
        assert os.fspath(merged) not in _mount_points()
    finally:
        _cleanup(merged)


def _cleanup(merged: Path) -> None:
    """Take the dead mount down if the code under test failed to."""
    if os.fspath(merged) in _mount_points():
        try:
            with _namespace.mount_privileges():
                _mount.unmount(merged)
        except OSError:
            _mount.fusermount_unmount(merged, lazy=True)


def test_sweep_follows_the_colon_free_home_and_removes_it(tmp_path: Path) -> None:
    from pytest_overlay._linux import colon

    basetemp = tmp_path / "a:b"
    root = basetemp / "overlay"
    root.mkdir(parents=True)
    home = colon.move_out(root)
    try:
        assert ":" not in os.fspath(home)
        assert root.is_symlink()
        stale = make_tree(home / "test_x-abc", {"upper": {"f": "f"}, "work": {"work": {}}})
        (stale / "merged").mkdir()
        os.chmod(stale / "work" / "work", 0)
        assert stale_workspaces(basetemp) == [stale]
        assert sweep(basetemp) == [stale]
        assert not home.exists()
    finally:
        if home.exists():
            subprocess.run(["chmod", "-R", "u+rwx", home], check=False)
            subprocess.run(["rm", "-rf", home], check=False)


def test_sweep_leaves_a_symlink_to_anything_else_alone(tmp_path: Path) -> None:
    other = make_tree(tmp_path / "pytest-overlay-colon-x", {"test_x-abc": {"upper": {}}})
    make_tree(other / "test_x-abc", {"work": {}, "merged": {}})
    (tmp_path / "bt").mkdir()
    # Relative, so not one move_out made: followed, someone's data could be deleted.
    (tmp_path / "bt" / "overlay").symlink_to("../pytest-overlay-colon-x")
    assert stale_workspaces(tmp_path / "bt") == []
    assert sweep(tmp_path / "bt") == []
    assert (other / "test_x-abc" / "upper").is_dir()
