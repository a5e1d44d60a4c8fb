"""The starter: one small process per pytest that starts every fuse-overlayfs daemon."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_overlay._backends import fuse
from pytest_overlay._backends.fuse import FUSE
from pytest_overlay._backends.starter import STARTER, Started, Starter
from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux.workspace import create_workspace, remove_workspace
from tests.helpers import make_tree, process_info

SLEEP = shutil.which("sleep") or "/bin/sleep"


@pytest.fixture(autouse=True)
def _needs_fuse() -> None:
    reason = FUSE.probe()
    if reason:
        pytest.skip(f"fuse does not work here: {reason}")
    if not STARTER.usable():
        pytest.skip("no pidfds here (Linux < 5.3): daemons start from pytest")


@pytest.fixture
def devnull() -> Iterator[int]:
    fd = os.open(os.devnull, os.O_WRONLY)
    yield fd
    os.close(fd)


def _alive(pid: int) -> bool:
    info = process_info(pid)
    return info is not None and info[0] != "Z"


def _wait_until(condition: object, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)


def test_daemons_start_without_a_process_spawned_by_pytest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = make_tree(tmp_path / "base", {"f": "f"})
    first = create_workspace(tmp_path / "ws", base)
    FUSE.mount([base], first)  # the starter runs from here on
    FUSE.unmount(first)
    remove_workspace(first.root)

    def popen(*args: object, **kwargs: object) -> None:
        raise AssertionError("a daemon start spawned a process from pytest")

    space = create_workspace(tmp_path / "ws", base)
    with monkeypatch.context() as patch:
        # Mounting only: without user namespaces unmounting runs fusermount3.
        patch.setattr(subprocess, "Popen", popen)
        FUSE.mount([base], space)
    try:
        assert (space.merged / "f").read_text() == "f"
        daemon = FUSE._daemons[space.root]
        info = process_info(daemon.pid)
        assert info is not None
        assert info[2] == "fuse-overlayfs"
        # Its parent is the starter, not pytest: no setpriv, no sh, no fork of pytest.
        assert info[1] != os.getpid()
        assert process_info(info[1]) is not None
    finally:
        FUSE.unmount(space)
        remove_workspace(space.root)


def test_the_starter_ends_its_daemons_when_pytest_is_killed(tmp_path: Path) -> None:
    # Without the watcher's help: the starter alone must end them.
    script = f"""
import os, sys, time
from pytest_overlay._backends.starter import STARTER
from pytest_overlay._linux import reaper
reaper.keep = reaper.release = lambda pid: None
fd = os.open(os.devnull, os.O_WRONLY)
started = STARTER.start([{SLEEP!r}, "60"], "/", fd, [])
print(started.pid, STARTER._process.pid, flush=True)
time.sleep(60)
"""
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    with child.stdout:
        daemon, starter = map(int, child.stdout.readline().split())
    assert _alive(daemon)
    assert _alive(starter)
    child.send_signal(signal.SIGKILL)
    child.wait()
    _wait_until(lambda: not _alive(daemon) and not _alive(starter))
    assert not _alive(daemon)
    assert not _alive(starter)


def test_a_starter_started_by_a_thread_that_ends_keeps_its_daemons(devnull: int) -> None:
    # The parent-death signal comes when the starting thread ends, pytest or not.
    starter = Starter()
    started: list[Started] = []
    thread = threading.Thread(
        target=lambda: started.append(starter.start([SLEEP, "60"], "/", devnull, []))
    )
    thread.start()
    thread.join()
    try:
        time.sleep(0.3)
        assert started[0].poll() is None
        assert starter._process is not None
        assert starter._process.poll() is None
    finally:
        started[0].kill()
        started[0].wait(timeout=10)
        starter.stop()


def test_a_killed_starter_is_replaced(devnull: int) -> None:
    starter = Starter()
    first = starter.start([SLEEP, "0"], "/", devnull, [])
    first.wait(timeout=10)
    assert starter._process is not None
    starter._process.kill()
    starter._process.wait()
    second = starter.start([SLEEP, "0"], "/", devnull, [])
    assert second.wait(timeout=10) == 0
    starter.stop()


def test_the_daemon_gets_its_descriptors_at_the_numbers_named(tmp_path: Path) -> None:
    # Stderr as 2, the lowers as 3, 4, ...: whatever numbers they had in pytest and in
    # the starter; and the working directory asked for.
    log = tmp_path / "log"
    dirs = [make_tree(tmp_path / f"d{i}", {f"in-{i}": ""}) for i in range(3)]
    fds = [os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) for d in dirs]
    starter = Starter()
    try:
        with open(log, "wb") as out:
            command = "for n in 3 4 5; do ls /proc/self/fd/$n/ >&2; done; pwd >&2"
            sh = shutil.which("sh") or "/bin/sh"
            started = starter.start([sh, "-c", command], "/tmp", out.fileno(), fds)
        started.wait(timeout=10)
    finally:
        for fd in fds:
            os.close(fd)
        starter.stop()
    assert log.read_text().split() == ["in-0", "in-1", "in-2", "/tmp"]


def test_a_start_that_fails_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_overlay import OverlayError

    base = make_tree(tmp_path / "base", {"f": "f"})
    space = create_workspace(tmp_path / "ws", base)
    missing = tmp_path / "gone" / "fuse-overlayfs"
    monkeypatch.setattr(fuse.FuseBackend, "_executable", lambda self: os.fspath(missing))
    with pytest.raises(OverlayError, match=r"cannot start .*gone/fuse-overlayfs.*No such file"):
        FUSE.mount([base], space)
    assert not os.path.ismount(space.merged)


def test_without_pidfds_daemons_start_from_pytest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(STARTER, "_works", False)
    base = make_tree(tmp_path / "base", {"f": "f"})
    space = create_workspace(tmp_path / "ws", base)
    FUSE.mount([base], space)
    try:
        assert (space.merged / "f").read_text() == "f"
        assert isinstance(FUSE._daemons[space.root], subprocess.Popen)
    finally:
        assert FUSE.unmount(space)
        remove_workspace(space.root)


def test_the_end_of_the_pool_reaps_the_starter(tmp_path: Path) -> None:
    # Reaped, its daemons' CPU time counts in pytest's own (what benchmarks measure).
    base = make_tree(tmp_path / "base", {"f": "f"})
    FUSE.enable_pool()
    try:
        for _ in range(3):
            space = create_workspace(tmp_path / "ws", base)
            FUSE.mount([base], space)
            FUSE.unmount(space)
            remove_workspace(space.root)
        process = STARTER._process
        assert process is not None
    finally:
        FUSE.drain_pool()
    assert STARTER._process is None
    assert process.returncode is not None  # reaped
    assert process_info(process.pid) is None


def test_the_starter_keeps_no_workspace_busy(tmp_path: Path) -> None:
    # Its working directory in a workspace would keep the session's tmpfs from unmounting.
    base = make_tree(tmp_path / "base", {"f": "f"})
    space = create_workspace(tmp_path / "ws", base)
    FUSE.mount([base], space)
    try:
        process = STARTER._process
        assert process is not None
        # In a user namespace the starter holds the mount capabilities, and the kernel
        # shows its cwd only to a reader whose effective ones cover them.
        with _namespace.mount_privileges():
            cwd = os.readlink(f"/proc/{process.pid}/cwd")
        assert cwd == "/"
    finally:
        FUSE.unmount(space)
        remove_workspace(space.root)
