"""A watcher process that cleans up after a dead pytest: FUSE daemons and host mounts.

Two things can outlive a killed pytest when fuse-overlayfs is the backend:

- the daemons. Each gets a parent-death signal, but that signal is tied to the thread that
  started it and is lost if pytest dies before the daemon asks for it. So pytest also
  tells the watcher each daemon it starts (pid and start time, so a reused pid is never
  hit), and the watcher sends ``SIGTERM`` to those still listed, then ``SIGKILL`` to
  any that ignore it.
- the mounts, where an ordinary user cannot enter a user namespace and fuse-overlayfs
  mounts through the setuid ``fusermount3`` into the host's mount namespace: nothing
  takes such a mount down when pytest is killed, and fuse-overlayfs 1.10 ignores
  ``auto_unmount``. pytest lists each such mount point *before* the daemon starts, so a
  kill during the mount is covered too, and the watcher runs ``fusermount3 -u -z`` on
  every point still listed, after the daemons are gone. A mount can still appear after
  that: a daemon killed while its ``fusermount3`` mounts leaves that ``fusermount3``
  running, and it finishes the mount with nobody to serve it (a dead mount; 6 to 16 of
  60 such kills here). So the watcher keeps unmounting listed points as they appear, for
  3 s and for as long as a ``fusermount3`` of this user runs (15 s at most).

The first such registration starts the watcher, in a session of its own. pytest tells it,
through a pipe, what to add and remove; when the pipe reaches end of file pytest has
exited in whatever way. A clean exit leaves both lists empty.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Final

# Runs with ``python -I -S``: a few milliseconds to start, nothing imported from the
# user's environment. Lines are "+<hex>"/"-<hex>" of a mount point's bytes, and
# "k<pid> <start time>"/"x<pid>" for daemons.
_WATCHER: Final = """
import os, signal, subprocess, sys, time
points, daemons = {}, {}
for line in sys.stdin.buffer:
    line = line.strip()
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        points[rest] = None
    elif kind == b"-":
        points.pop(rest, None)
    elif kind == b"k":
        pid, start = rest.split()
        daemons[int(pid)] = start
    elif kind == b"x":
        daemons.pop(int(rest), None)
def same(pid, start):
    # Field 22 of /proc/PID/stat, the start time: a reused pid has another one.
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == start and fields[0] != b"Z"
for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 2.0)):
    daemons = {pid: start for pid, start in daemons.items() if same(pid, start)}
    for pid in daemons:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
    deadline = time.monotonic() + wait
    while daemons and time.monotonic() < deadline:
        daemons = {pid: start for pid, start in daemons.items() if same(pid, start)}
        time.sleep(0.01)
def unmount(point):
    subprocess.run(["fusermount3", "-u", "-z", os.fsdecode(bytes.fromhex(point.decode()))],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def mounted():
    # The watched points in this namespace's mount table (octal escapes as in the kernel).
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            raw = {line.split()[4] for line in f}
    except OSError:
        return set()
    table = {p.decode("unicode_escape").encode("latin-1").hex().encode() for p in raw}
    return table & set(points)
def mounting():
    # A fusermount3 of this user still at work: a daemon killed while mounting leaves its
    # fusermount3 running, and the mount it makes appears after the daemon is gone.
    uid = str(os.getuid()).encode()
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        if lines[0].split()[1:] == [b"fusermount3"] and any(
            line.startswith(b"Uid:") and line.split()[1] == uid for line in lines
        ):
            return True
    return False
for point in points:
    unmount(point)
# Late mounts: those of a fusermount3 orphaned mid-mount, and whatever else appears at a
# watched point soon after: unmount them as they come, for GRACE seconds at least and as
# long as a fusermount3 of this user runs (LIMIT at most).
GRACE, LIMIT = 3.0, 15.0
start = time.monotonic()
while points:
    now = time.monotonic() - start
    if now > LIMIT or (now > GRACE and not mounting()):
        break
    for point in mounted():
        unmount(point)
    time.sleep(0.05)
"""

_lock = threading.Lock()
_pipe: int | None = None
_owner: int | None = None  # the pid that started the watcher: a fork must not share it
# The watcher's pid. Started with posix_spawn, not Popen: it is meant to outlive this
# process, and a Popen object of a running child warns (ResourceWarning) at exit.
_watcher: int | None = None


def _send(line: bytes) -> None:
    global _pipe
    with _lock:
        try:
            os.write(_ensure_watcher(), line)
        except BrokenPipeError:
            # Someone killed the watcher: start another for what comes next (the parent-
            # death signal still covers the daemons the dead one knew of).
            if _pipe is not None:
                os.close(_pipe)
            _pipe = None
            os.write(_ensure_watcher(), line)


def _ensure_watcher() -> int:
    """The write end of the pipe to this process's watcher, started on first use."""
    global _pipe, _owner, _watcher
    if _pipe is None or _owner != os.getpid():
        read_end, _pipe = os.pipe()  # both ends close-on-exec: no daemon inherits them
        devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        try:
            _watcher = os.posix_spawn(
                sys.executable,
                [sys.executable, "-I", "-S", "-c", _WATCHER],
                os.environ,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, read_end, 0),
                    (os.POSIX_SPAWN_DUP2, devnull, 1),
                    (os.POSIX_SPAWN_DUP2, devnull, 2),
                ],
                # Out of pytest's session and process group: Ctrl-C and the signals
                # that kill pytest's group do not reach it.
                setsid=True,
            )
        finally:
            os.close(read_end)
            os.close(devnull)
        _owner = os.getpid()
    return _pipe


def watch(mount_point: Path) -> None:
    """Unmount *mount_point* if this process exits before :func:`forget` is called."""
    _send(b"+" + os.fsencode(mount_point).hex().encode() + b"\n")


def forget(mount_point: Path) -> None:
    """*mount_point* was unmounted: the watcher no longer needs to."""
    _send(b"-" + os.fsencode(mount_point).hex().encode() + b"\n")


def start_time(pid: int) -> bytes | None:
    """The start time of process *pid* (field 22 of its stat), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def keep(pid: int) -> None:
    """Terminate daemon *pid* if this process exits before :func:`release` is called.

    Call it while *pid* is an unreaped child, so that the pid still names it.
    """
    start = start_time(pid)
    if start is not None:
        _send(b"k%d %s\n" % (pid, start))


def release(pid: int) -> None:
    """Daemon *pid* has exited or is about to be reaped: the watcher must not touch it."""
    _send(b"x%d\n" % pid)
