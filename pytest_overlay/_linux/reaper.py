"""A watcher process that unmounts FUSE mounts a dead pytest left in the host namespace.

Where an ordinary user cannot enter a user namespace, fuse-overlayfs mounts through the
setuid ``fusermount3`` into the host's mount namespace, and nothing takes such a mount
down when pytest is killed: the daemon dies with pytest (parent-death signal), but the
mount stays, dead ("Transport endpoint is not connected"), and fuse-overlayfs 1.10
ignores ``auto_unmount``. So the first such mount starts a small watcher in a session of
its own. pytest tells it, through a pipe, each mount point it adds and removes; when the
pipe reaches end of file, pytest has exited in whatever way, and the watcher runs
``fusermount3 -u -z`` on every mount point still listed, then exits. A clean exit leaves
the list empty.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Final

# Runs with ``python -I -S``: a few milliseconds to start, nothing imported from the
# user's environment. Lines are "+<hex>" or "-<hex>" of the mount point's bytes.
_WATCHER: Final = """
import os, subprocess, sys
points = {}
for line in sys.stdin.buffer:
    line = line.strip()
    if line[:1] == b"+":
        points[line[1:]] = None
    elif line[:1] == b"-":
        points.pop(line[1:], None)
for point in points:
    subprocess.run(["fusermount3", "-u", "-z", os.fsdecode(bytes.fromhex(point.decode()))],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
"""

_lock = threading.Lock()
_pipe: int | None = None
_owner: int | None = None  # the pid that started the watcher: a fork must not share it
_watcher: subprocess.Popen[bytes] | None = None  # kept so it is not collected while running


def _send(line: bytes) -> None:
    global _pipe, _owner, _watcher
    with _lock:
        if _pipe is None or _owner != os.getpid():
            read_end, _pipe = os.pipe()  # both ends close-on-exec: no daemon inherits them
            try:
                _watcher = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _WATCHER],
                    stdin=read_end,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    # Out of pytest's session and process group: Ctrl-C and the signals
                    # that kill pytest's group do not reach it.
                    start_new_session=True,
                )
            finally:
                os.close(read_end)
            _owner = os.getpid()
        os.write(_pipe, line)


def watch(mount_point: Path) -> None:
    """Unmount *mount_point* if this process exits before :func:`forget` is called."""
    _send(b"+" + os.fsencode(mount_point).hex().encode() + b"\n")


def forget(mount_point: Path) -> None:
    """*mount_point* was unmounted: the watcher no longer needs to."""
    _send(b"-" + os.fsencode(mount_point).hex().encode() + b"\n")
