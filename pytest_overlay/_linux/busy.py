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


def holders(merged: Path, limit: int = _MAX_LISTED, device: int | None = None) -> list[str]:
    """Up to *limit* descriptions of what processes hold open under *merged*.

    Looks at the processes in this mount namespace that /proc lets us inspect: their
    open files, working and root directories, and memory-mapped files. With *device*,
    only what lies on that device counts: a union shown over its own lower directory
    has the same path as that directory, whose descriptors (the stack's own, the fuse
    daemon's lowers, a working directory stepped out of the union) are not in the union.
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
        for label, link, dev in _links(proc):
            if _inside(link, prefix) and (device is None or dev in (None, device)):
                found.append(f"{who} {label} {link}")
                if len(found) >= limit:
                    return found
    return found


def _links(proc: str) -> list[tuple[str, str, int | None]]:
    """(label, path, device of what it names, None where unknown) for *proc*'s holdings."""
    links: list[tuple[str, str, int | None]] = []

    def add(label: str, entry: str) -> None:
        with contextlib.suppress(OSError):
            link = os.readlink(entry)
            try:
                dev: int | None = os.stat(entry).st_dev  # the object itself, not the path
            except OSError:
                dev = None
            links.append((label, link, dev))

    for name, label in (("cwd", "has its working directory in"), ("root", "is chrooted to")):
        add(label, f"{proc}/{name}")
    try:
        fds = os.listdir(f"{proc}/fd")
    except OSError:
        fds = []
    for fd in fds:
        add(f"has open (fd {fd})", f"{proc}/fd/{fd}")
    mapped: dict[str, int | None] = {}
    try:
        with open(f"{proc}/maps") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].startswith("/"):
                    major, _, minor = fields[3].partition(":")
                    mapped[fields[5].strip()] = os.makedev(int(major, 16), int(minor, 16))
    except (OSError, ValueError):
        pass
    links.extend(("has mapped", path, dev) for path, dev in sorted(mapped.items()))
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


def check_idle(merged: Path, doing: str, in_place: bool = False) -> None:
    """Raise :class:`OverlayError` naming the holders if something uses *merged*.

    *doing* completes "cannot ... <merged>", e.g. "take a snapshot of". *in_place*: the
    union is shown over its own lower directory, so only holders on the union's device
    count (see :func:`holders`).
    """
    busy = _mount_busy(merged)
    if busy is False:
        return
    held = holders(merged, device=os.stat(merged).st_dev if in_place else None)
    if busy is None and not held:
        return
    listing = "; ".join(held) if held else "a process outside this mount namespace"
    raise OverlayError(
        f"cannot {doing} {merged}: it is in use ({listing}). Close those files and move "
        "working directories out of it first, then try again; nothing was changed. "
        "(pytest-overlay will not freeze a layer that a lazily detached mount could still "
        "write to.)"
    )
