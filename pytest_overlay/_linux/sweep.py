"""Cleaning up after a pytest run that was killed: stale workspaces, never user data.

A killed run leaves its workspaces under its basetemp: the kernel drops the mounts with
the private namespace, but ``work/work`` stays at mode 000, which makes pytest's
collection (when ``--basetemp`` lies inside the project) and ``rm -rf`` by an ordinary
user fail. A fuse mount made in the host namespace (an ordinary user without user
namespaces) can outlive the run if its watcher was killed too; it is unmounted here with
``fusermount3``. Only directories with the exact workspace layout
(``overlay/<name>-*/{upper,work,merged}``) are touched.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pytest_overlay._linux import mount as _mount
from pytest_overlay._linux import namespace as _namespace

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


def stale_workspaces(basetemp: Path) -> list[Path]:
    """Workspaces left under *basetemp* by an earlier run."""
    root = basetemp / FACTORY_DIR
    if not root.is_dir():
        return []
    found = []
    for candidate in sorted(root.iterdir()):
        if candidate.is_symlink() or not candidate.is_dir():
            continue
        if all((candidate / sub).is_dir() for sub in ("upper", "work", "merged")):
            found.append(candidate)
    return found


def sweep(basetemp: Path) -> list[Path]:
    """Unmount and open up stale workspaces under *basetemp*; return those it touched."""
    swept = stale_workspaces(basetemp)
    if not swept:
        return []
    mounted = _mount_points()
    for space in swept:
        merged = space / "merged"
        if os.fspath(merged) in mounted:
            try:
                with _namespace.mount_privileges():
                    _mount.unmount(merged)
            except OSError:
                # A fuse mount an ordinary user made through fusermount3 in the host
                # namespace, left when even the watcher (see _reaper) was killed.
                _mount.fusermount_unmount(merged, lazy=True)
        _open_up(space / "work")
    return swept


def _open_up(directory: Path) -> None:
    """chmod 0700 every directory under overlayfs's private *directory*, top-down."""
    with contextlib.suppress(OSError):
        if directory.is_symlink() or not directory.is_dir():
            return
        os.chmod(directory, 0o700)
        for child in directory.iterdir():
            _open_up(child)
