"""fuse-overlayfs specifics: the daemon never outlives pytest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_overlay._backends.fuse import FUSE
from tests.helpers import all_pids, make_tree, overlay_mounts, process_info

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _needs_fuse() -> None:
    reason = FUSE.probe()
    if reason:
        pytest.skip(f"fuse does not work here: {reason}")


def _fuse_children(parent: int) -> list[int]:
    """Pids of fuse-overlayfs processes whose parent is *parent*."""
    infos = {pid: process_info(pid) for pid in all_pids()}
    return [p for p, i in infos.items() if i and i[1] == parent and i[2] == "fuse-overlayfs"]


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if (info := process_info(pid)) and info[0] != "Z"]


def test_daemon_dies_with_a_killed_pytest(pytester: pytest.Pytester, tmp_path: Path) -> None:
    make_tree(pytester.path / "base", {"f": "f"})
    ready = tmp_path / "ready"
    pytester.makepyfile(
        f"""
        import pytest, time, pathlib

        @pytest.mark.overlay("base")
        def test_hang(overlay_stack):
            (overlay_stack.merged / "f").write_text("being written")
            pathlib.Path({os.fspath(ready)!r}).write_text(str(overlay_stack.workspace))
            time.sleep(120)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--overlay-backend=fuse"],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None, "the inner pytest ended early"
            assert time.monotonic() < deadline, "the inner test never started"
            time.sleep(0.05)
        workspace = Path(ready.read_text())
        daemons = _fuse_children(child.pid)
        assert daemons, "no fuse-overlayfs daemon found"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 10
    while _alive(daemons) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive(daemons) == []
    deadline = time.monotonic() + 10
    while str(workspace / "merged") in overlay_mounts() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert str(workspace / "merged") not in overlay_mounts()
    assert (pytester.path / "base" / "f").read_text() == "f"


def test_mount_failure_reports_the_daemon_message(tmp_path: Path) -> None:
    from pytest_overlay import OverlayError
    from pytest_overlay._linux.workspace import create_workspace

    space = create_workspace(tmp_path, tmp_path)
    expected = r"fuse-overlayfs did not mount .* over lowers \[0: .*missing\]: "
    with pytest.raises(OverlayError, match=expected):
        FUSE.mount([tmp_path / "missing"], space)
    assert not os.path.ismount(space.merged)
    # The daemon's own complaint, with its /proc/self/fd/N names replaced by the lowers.
    space.upper.rmdir()
    with pytest.raises(OverlayError, match=r"over lowers \[0: .*\]: .*upper") as info:
        FUSE.mount([tmp_path], space)
    assert "/proc/self/fd" not in str(info.value)
    assert not os.path.ismount(space.merged)
