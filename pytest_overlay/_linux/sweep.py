"""Cleaning up after a pytest run that was killed: stale workspaces, never user data.

A killed run leaves its workspaces under its basetemp: the kernel drops the mounts with
the private namespace, but ``work/work`` stays at mode 000, which makes pytest's
collection (when ``--basetemp`` lies inside the project) and ``rm -rf`` by an ordinary
user fail. A fuse mount made in the host namespace (an ordinary user without user
namespaces) can outlive the run if its watcher was killed too; it is unmounted here with
``fusermount3``. A basetemp whose path holds a ':' has its workspaces in a directory
of their own that ``overlay`` links to; that directory is removed here. Only directories
with the exact workspace layout (``overlay/<name>-*/{upper,work,merged}``) are touched.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from pytest_overlay._linux import colon as _colon

#: The directory under the basetemp that holds the factory's workspaces.
FACTORY_DIR = "overlay"


def _mount_points() -> set[str]:
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    points = set()
    for line in lines:
        # Mount points escape space, tab, newline and backslash as octal (\\040...).
        raw = line.split()[4]
        points.add(raw.encode().decode("unicode_escape").encode("latin-1").decode())
    return points


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _dead_or_mounted(merged: Path, mounted: set[str]) -> bool:
    """Whether *merged* is still a mount point, dead or alive.

    A FUSE mount whose daemon died answers every look-up of its root with an error
    (ENOTCONN "Transport endpoint is not connected", or ECONNABORTED, EIO, ...): any
    error but "not there" means something is mounted there that must come down.
    """
    if os.fspath(merged) in mounted:
        return True
    try:
        os.lstat(merged)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return False


def stale_workspaces(basetemp: Path, mounted: set[str] | None = None) -> list[Path]:
    """Workspaces left under *basetemp* by an earlier run.

    *mounted* (the mount points of this namespace) lets a ``merged`` that cannot even be
    looked at, because it is a dead mount, count as part of a workspace.
    """
    root = basetemp / FACTORY_DIR
    # A basetemp whose path holds a ':' has its workspaces elsewhere (see _linux.colon).
    root = _colon.owned_home(root) or root
    if not _is_dir(root):
        return []
    try:
        candidates = sorted(root.iterdir())
    except OSError:
        return []
    found = []
    for candidate in candidates:
        if not _is_dir(candidate):  # lstat: a symlink is never followed
            continue
        if not (_is_dir(candidate / "upper") and _is_dir(candidate / "work")):
            continue
        merged = candidate / "merged"
        if _is_dir(merged) or _dead_or_mounted(merged, mounted or set()):
            found.append(candidate)
    return found


def sweep(basetemp: Path) -> list[Path]:
    """Unmount and open up stale workspaces under *basetemp*; return those it touched.

    It never raises: whatever it cannot clean, pytest's own removal of the basetemp
    reports. A dead mount must not stop the run that comes to clean it up.
    """
    mounted = _mount_points()
    swept = stale_workspaces(basetemp, mounted)
    for space in swept:
        merged = space / "merged"
        if _dead_or_mounted(merged, mounted):
            _unmount(merged)
        _open_up(space / "work")
    home = _colon.owned_home(basetemp / FACTORY_DIR)
    if home is not None:
        # pytest deletes the symlink with the basetemp, never what it points to.
        _colon.remove_home(home)
    return swept


def _unmount(merged: Path) -> None:
    # Loaded only when a killed run left a mount: every pytest start with --basetemp
    # sweeps, and most find nothing to unmount.
    from pytest_overlay._linux import mount as _mount
    from pytest_overlay._linux import namespace as _namespace

    try:
        with _namespace.mount_privileges():
            _mount.unmount(merged)
        return
    except OSError:
        pass
    # A fuse mount an ordinary user made through fusermount3 in the host namespace,
    # left when even the watcher (see _linux.reaper) was killed.
    _mount.fusermount_unmount(merged, lazy=True)


def _open_up(directory: Path) -> None:
    """chmod 0700 every directory under overlayfs's private *directory*, top-down."""
    with contextlib.suppress(OSError):
        if directory.is_symlink() or not directory.is_dir():
            return
        os.chmod(directory, 0o700)
        for child in directory.iterdir():
            _open_up(child)
