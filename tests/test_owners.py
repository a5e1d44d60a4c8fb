"""Workspaces of killed runs under pytest's own numbered basetemps (no --basetemp)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import make_tree

pytest_plugins = ["pytester"]

HANG = """
import pathlib, time, pytest

@pytest.mark.overlay("base")
def test_hang(overlay_stack):
    (overlay_stack.merged / "f").write_text("being written")
    pathlib.Path({ready!r}).write_text(str(overlay_stack.workspace))
    time.sleep(120)
"""

QUICK = """
import pytest

@pytest.mark.overlay("base")
def test_quick(overlay_stack):
    assert (overlay_stack.merged / "f").read_text() == "f"
"""


def _pytest(project: Path, temproot: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTEST_DEBUG_TEMPROOT": os.fspath(temproot)}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    return subprocess.Popen(
        command,
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _start_hanging(
    project: Path, temproot: Path, args: list[str]
) -> tuple[Path, subprocess.Popen[bytes]]:
    ready = project / "ready"
    ready.unlink(missing_ok=True)
    (project / "test_hang.py").write_text(HANG.format(ready=os.fspath(ready)))
    child = _pytest(project, temproot, "test_hang.py", *args)
    deadline = time.monotonic() + 60
    while not ready.exists() or not ready.read_text():
        assert child.poll() is None, "the hanging pytest ended early"
        assert time.monotonic() < deadline, "the hanging test never started"
        time.sleep(0.05)
    return Path(ready.read_text()), child


@pytest.mark.parametrize("args", [[], ["-n", "2"]], ids=["plain", "xdist"])
def test_the_next_start_removes_the_workspaces_of_a_killed_run(
    pytester: pytest.Pytester, tmp_path: Path, args: list[str]
) -> None:
    project = pytester.path
    make_tree(project / "base", {"f": "f"})
    (project / "test_quick.py").write_text(QUICK)
    temproot = tmp_path / "temproot"
    temproot.mkdir()
    backend = "--overlay-backend=copy"
    workspace, child = _start_hanging(project, temproot, [backend, *args])
    try:
        # A run that starts while the first one lives leaves its workspace alone.
        assert _pytest(project, temproot, "test_quick.py", backend).wait() == 0
        assert (workspace / "merged" / "f").read_text() == "being written"
    finally:
        # The whole run at once, xdist's workers too (as a CI timeout or the OOM killer
        # would): a worker that outlived its controller would clean up after itself.
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 10
    while _holds_lock(workspace) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert workspace.is_dir()
    # pytest itself keeps a killed run's numbered directory for three days.
    assert _pytest(project, temproot, "test_quick.py", backend).wait() == 0
    assert not workspace.exists()
    assert (project / "base" / "f").read_text() == "f"


def _holds_lock(workspace: Path) -> bool:
    import fcntl

    lock = workspace.parent.parent / "overlay.owner"
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False
