"""Workspaces on a tmpfs private to the pytest process.

On a disk filesystem a mount cycle's dozen directory operations wait on the journal
(about 60 µs per rmdir on ext4, ten times that under load), which is most of the
per-test cost. On tmpfs the same cycle takes about 1 ms, flat. The tmpfs lives in the
process's own mount namespace, so it vanishes with the process, and nobody else sees it.

Without ``size=`` a tmpfs may grow to half the RAM, per mount: each pytest process and
xdist worker has one, and inside a memory cgroup filling it gets pytest OOM-killed
instead of failing the write with ENOSPC. So it is always mounted with a size and an
inode limit: by default half the memory available (to this cgroup, if less) shared
among the workers, never less than :data:`FLOOR`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path

#: Backends whose upper layer may live on tmpfs. The copy backend keeps a whole copy of
#: the base in its workspace, which would not fit in memory.
MOUNTING_BACKENDS = frozenset({"kernel", "userns", "fuse"})

#: The smallest default size: a few workers on a small machine must still be able to
#: write something.
FLOOR = 256 << 20
#: One inode per 4 KiB page of the size, as tmpfs's own default (half the RAM's pages
#: for half the RAM), and never fewer than this.
MIN_INODES = 1024

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_SIZE = re.compile(r"([1-9][0-9]*)([KMG%]?)", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _meminfo(meminfo: Path, key: str) -> int:
    for line in meminfo.read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0]) * 1024
    raise LookupError(f"{key} not in {meminfo}")


def _cgroup_dir() -> Path | None:
    """This process's memory cgroup directory: cgroup v2, else v1's memory controller."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            unified = _CGROUP_ROOT / path.lstrip("/")
            if (unified / "memory.max").exists():
                return unified
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return _CGROUP_ROOT / "memory" / path.lstrip("/")
    return None


def _cgroup_room(directory: Path) -> int | None:
    """What the memory limit of *directory* leaves, or None if it sets none."""
    for limit_name, usage_name in (
        ("memory.max", "memory.current"),  # v2
        ("memory.limit_in_bytes", "memory.usage_in_bytes"),  # v1: "no limit" is huge
    ):
        try:
            limit = (directory / limit_name).read_text().strip()
            used = int((directory / usage_name).read_text())
        except (OSError, ValueError):
            continue
        return None if limit == "max" else max(int(limit) - used, 0)
    return None


def available_memory(meminfo: Path = Path("/proc/meminfo"), cgroup: Path | None = None) -> int:
    """Bytes this process could still fill: MemAvailable, or less under a cgroup limit."""
    available = _meminfo(meminfo, "MemAvailable")
    directory = cgroup if cgroup is not None else _cgroup_dir()
    # A limit on any enclosing cgroup applies too.
    while directory is not None:
        room = _cgroup_room(directory)
        if room is not None:
            available = min(available, room)
        if directory.parent == directory or directory.parent == _CGROUP_ROOT:
            break
        directory = directory.parent
    return available


def total_memory(meminfo: Path = Path("/proc/meminfo")) -> int:
    return _meminfo(meminfo, "MemTotal")


def default_size(available: int, workers: int) -> int:
    """Half of *available* shared among *workers* processes, at least :data:`FLOOR`."""
    return max(FLOOR, available // 2 // max(workers, 1))


def inodes_for(size: int) -> int:
    return max(MIN_INODES, size // 4096)


def parse_size(text: str, total: int) -> int:
    """Bytes for ``512M``, ``2G``, ``1048576`` or ``25%`` (of *total*); ValueError if not."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise ValueError(text)
    number, unit = int(match[1]), match[2].upper()
    if unit == "%":
        if number > 100:
            raise ValueError(text)
        return total * number // 100
    return number * _UNITS[unit]


def describe(size: int) -> str:
    """*size* bytes the way a person reads it: 256 MiB, 3.9 GiB."""
    if size >= 1 << 30:
        return f"{size / (1 << 30):.1f} GiB"
    return f"{size / (1 << 20):.0f} MiB"


def mount_tmpfs(root: Path, backend: str, size: int, inodes: int) -> str:
    """Mount a tmpfs of at most *size* bytes and *inodes* inodes on the empty directory
    *root*; return "" or why it was not done."""
    # Imported here: the plugin reads this module's sizes at start-up, and a session
    # that never mounts should not load the mount code (ctypes among it).
    from pytest_overlay._linux import namespace as _namespace
    from pytest_overlay._linux import syscalls as _syscalls

    if backend not in MOUNTING_BACKENDS:
        return f"the {backend} backend keeps a full copy of the base in its workspace"
    if _namespace.state().mode is _namespace.Mode.NONE:
        return "the process has no private mount namespace to hold it"
    try:
        with _namespace.mount_privileges():
            _syscalls.mount("tmpfs", root, "tmpfs", 0, f"mode=0700,size={size},nr_inodes={inodes}")
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
    from pytest_overlay._linux import mount as _mount
    from pytest_overlay._linux import namespace as _namespace

    with contextlib.suppress(OSError), _namespace.mount_privileges():
        _mount.unmount(root)
