"""Workspaces on a tmpfs private to the pytest process.

On a disk filesystem a mount cycle's dozen directory operations wait on the journal
(about 60 µs per rmdir on ext4, ten times that under load), which is most of the
per-test cost. On tmpfs the same cycle takes about 1 ms, flat. The tmpfs lives in the
process's own mount namespace, so it vanishes with the process, and nobody else sees it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from pytest_overlay._linux import mount as _mount
from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux import syscalls as _syscalls

#: Backends whose upper layer may live on tmpfs. The copy backend keeps a whole copy of
#: the base in its workspace, which would not fit in memory.
MOUNTING_BACKENDS = frozenset({"kernel", "userns", "fuse"})


def mount_tmpfs(root: Path, backend: str) -> str:
    """Mount a tmpfs on the empty directory *root*; return "" or why it was not done."""
    if backend not in MOUNTING_BACKENDS:
        return f"the {backend} backend keeps a full copy of the base in its workspace"
    if _namespace.state().mode is _namespace.Mode.NONE:
        return "the process has no private mount namespace to hold it"
    try:
        with _namespace.mount_privileges():
            _syscalls.mount("tmpfs", root, "tmpfs", 0, "mode=0700")
    except OSError as exc:
        return f"mounting a tmpfs failed ({exc.strerror})"
    if _namespace.state().mode is _namespace.Mode.USERNS:
        # An unprivileged overlay keeps its xattrs under user.*, which tmpfs accepts
        # only since Linux 6.6.
        try:
            os.setxattr(root, "user.pytest-overlay", b"1")
            os.removexattr(root, "user.pytest-overlay")
        except OSError as exc:
            unmount_tmpfs(root)
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                return "this kernel's tmpfs has no user xattrs (Linux >= 6.6 has them)"
            raise
    return ""


def unmount_tmpfs(root: Path) -> None:
    with contextlib.suppress(OSError), _namespace.mount_privileges():
        _mount.unmount(root)
