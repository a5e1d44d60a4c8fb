"""Telling a killed run's workspaces from a live run's: a lock that dies with its owner.

Without ``--basetemp`` each run gets a numbered basetemp (``pytest-of-USER/pytest-N``),
and pytest deletes an old one only once its own lock file is three days old: a run
killed with SIGKILL never removes that file, so its workspaces (whole copies of the base
with the copy backend) stay for days. pytest's lock holds a pid, which can be reused, and
no start time. Here each session that mounts holds ``flock`` on ``<basetemp>/overlay.owner``
for its whole life; the kernel releases the lock when the process dies, however it dies.
A later session that can take the lock of another basetemp knows its owner is dead, and
removes its workspaces.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from pytest_overlay._linux import sweep as _sweep
from pytest_overlay._linux.workspace import remove_workspace

#: The lock file in a basetemp, next to its ``overlay`` directory.
OWNER_FILE = "overlay.owner"

_FLAGS = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW


def claim(basetemp: Path) -> int:
    """Hold the owner lock of *basetemp* until :func:`release` or the process's death.

    Call it before the first workspace is made: a sweeper that takes the lock first finds
    nothing to remove. Returns the descriptor (close-on-exec, so a subprocess started by
    a test does not keep a dead run looking alive).
    """
    path = basetemp / OWNER_FILE
    while True:
        fd = os.open(path, _FLAGS | os.O_CREAT, 0o600)
        # Blocks only while another run's sweeper looks at this basetemp.
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        # That sweeper took this file for a dead run's and unlinked it: lock a new one.
        os.close(fd)


def release(basetemp: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(basetemp / OWNER_FILE)
    os.close(fd)


def _candidates(runs: Path) -> list[Path]:
    # pytest-N/ for a plain run, pytest-N/popen-gwK/ for each xdist worker.
    found: list[Path] = []
    for pattern in (f"pytest-*/{OWNER_FILE}", f"pytest-*/popen-gw*/{OWNER_FILE}"):
        found.extend(runs.glob(pattern))
    return sorted(found)


def sweep_dead(runs: Path, own: Path) -> list[Path]:
    """Remove the workspaces of dead runs' basetemps under *runs* (``pytest-of-USER``).

    *own* is this session's basetemp. Never raises: what it cannot remove stays for
    pytest's own rotation. Returns the workspaces removed.
    """
    removed: list[Path] = []
    for lock in _candidates(runs):
        basetemp = lock.parent
        if basetemp == own:
            continue
        try:
            fd = os.open(lock, _FLAGS)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # alive, or another run's sweeper is at it
            continue
        try:
            for space in _sweep.sweep(basetemp):
                with contextlib.suppress(OSError):
                    remove_workspace(space)
                    removed.append(space)
            with contextlib.suppress(OSError):
                os.unlink(lock)
        finally:
            os.close(fd)
    return removed
