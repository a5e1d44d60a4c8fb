"""Whether a merged directory is in use, and by whom: open files, working directories, maps.

A snapshot or restore must unmount the union. With a file still open under it, umount
fails with EBUSY and the only way down is a lazy detach, after which the old mount keeps
writing into its upper layer, the very directory that is about to become a frozen layer.
So both refuse while the union is busy, and say which processes hold what.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Final

from pytest_overlay._errors import OverlayError
from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux import syscalls as _syscalls

#: umount2(2): fail with EBUSY if the mount is in use, else mark it expired (EAGAIN).
#: Nothing is unmounted by the first such call, so it serves as an exact busy test.
MNT_EXPIRE: Final = 0x4

_MAX_LISTED: Final = 5


def _mount_busy(merged: Path) -> bool | None:
    """True/False when *merged* is a mount point we may probe; None when we cannot tell."""
    if not _syscalls.available():
        return None
    try:
        with _namespace.mount_privileges():
            _syscalls.umount(merged, MNT_EXPIRE)
    except OSError as exc:
        if exc.errno == errno.EAGAIN:
            return False
        if exc.errno == errno.EBUSY:
            return True
        # EINVAL: not a mount point (a backend that needs no mount); EPERM: no right to
        # probe. Fall back to looking for holders in /proc.
        return None
    # Success means the mount was already marked expired and idle, and is now gone;
    # only possible if an earlier probe was not followed by an unmount.
    raise OverlayError(
        f"the union at {merged} was unmounted while checking whether it is busy: close the "
        "stack and mount it again"
    )


def _inside(link: str, prefix: str) -> bool:
    return link == prefix or link.startswith(prefix + "/")


def holders(merged: Path, limit: int = _MAX_LISTED) -> list[str]:
    """Up to *limit* descriptions of what processes hold open under *merged*.

    Looks at the processes in this mount namespace that /proc lets us inspect: their
    open files, working and root directories, and memory-mapped files.
    """
    prefix = os.fsdecode(merged)
    try:
        own_ns = os.readlink("/proc/self/ns/mnt")
    except OSError:
        own_ns = None
    try:
        pids = sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int)
    except OSError:
        return []  # no /proc (macOS, for the copy backend): nothing to go by
    found: list[str] = []
    for pid in pids:
        proc = f"/proc/{pid}"
        try:
            if own_ns is not None and os.readlink(f"{proc}/ns/mnt") != own_ns:
                continue
            with open(f"{proc}/comm") as f:
                who = f"pid {pid} ({f.read().strip()})"
        except OSError:
            continue
        for label, link in _links(proc):
            if _inside(link, prefix):
                found.append(f"{who} {label} {link}")
                if len(found) >= limit:
                    return found
    return found


def _links(proc: str) -> list[tuple[str, str]]:
    links: list[tuple[str, str]] = []
    for name, label in (("cwd", "has its working directory in"), ("root", "is chrooted to")):
        with contextlib.suppress(OSError):
            links.append((label, os.readlink(f"{proc}/{name}")))
    try:
        fds = os.listdir(f"{proc}/fd")
    except OSError:
        fds = []
    for fd in fds:
        with contextlib.suppress(OSError):
            links.append((f"has open (fd {fd})", os.readlink(f"{proc}/fd/{fd}")))
    try:
        with open(f"{proc}/maps") as f:
            mapped = {line.split(maxsplit=5)[5].strip() for line in f if line.count(" ") >= 5}
    except (OSError, IndexError):
        mapped = set()
    links.extend(("has mapped", path) for path in sorted(mapped) if path.startswith("/"))
    return links


#: Who held each union that an unmount had to detach lazily, looked up just before the
#: detach (afterwards /proc shows paths relative to the detached mount) and picked up by
#: the stack that closed it, to say so.
_detached: dict[str, list[str]] = {}


def note_holders(merged: Path) -> None:
    """Record who holds *merged* now, for :func:`detached_holders` (call before a detach)."""
    _detached[os.fspath(merged)] = holders(merged)


def detached_holders(merged: Path) -> list[str]:
    """What :func:`note_holders` found for *merged* (empty if nothing was recorded)."""
    return _detached.pop(os.fspath(merged), [])


def check_idle(merged: Path, doing: str) -> None:
    """Raise :class:`OverlayError` naming the holders if something uses *merged*.

    *doing* completes "cannot ... <merged>", e.g. "take a snapshot of".
    """
    busy = _mount_busy(merged)
    if busy is False:
        return
    held = holders(merged)
    if busy is None and not held:
        return
    listing = "; ".join(held) if held else "a process outside this mount namespace"
    raise OverlayError(
        f"cannot {doing} {merged}: it is in use ({listing}). Close those files and move "
        "working directories out of it first, then try again; nothing was changed. "
        "(pytest-overlay will not freeze a layer that a lazily detached mount could still "
        "write to.)"
    )
