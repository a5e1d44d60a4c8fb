"""inotify(7) through ctypes: one non-blocking instance, directory watches, raw events.

Linux caps inotify instances per user (``max_user_instances``, 128 by default) across all
of that user's processes, so a process should share one instance among all it watches.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
from typing import Final

IN_MODIFY: Final = 0x2
IN_ATTRIB: Final = 0x4
IN_CLOSE_WRITE: Final = 0x8
IN_OPEN: Final = 0x20
IN_MOVED_FROM: Final = 0x40
IN_MOVED_TO: Final = 0x80
IN_CREATE: Final = 0x100
IN_DELETE: Final = 0x200
IN_DELETE_SELF: Final = 0x400
IN_MOVE_SELF: Final = 0x800
IN_Q_OVERFLOW: Final = 0x4000
IN_IGNORED: Final = 0x8000
IN_ONLYDIR: Final = 0x1000000
IN_DONT_FOLLOW: Final = 0x2000000
_IN_NONBLOCK: Final = os.O_NONBLOCK
_IN_CLOEXEC: Final = os.O_CLOEXEC

#: Everything that can change an entry or a directory's listing. IN_OPEN too: a file
#: opened for writing and mapped can be changed through the mapping without any other
#: event, so every opened file is looked at again.
CHANGES: Final = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_OPEN
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len

#: (watch descriptor, mask, name); the name is "" for an event on the directory itself.
Event = tuple[int, int, str]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class Inotify:
    """One inotify instance. Raises OSError where the kernel refuses one."""

    def __init__(self) -> None:
        self._libc = _libc()
        fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.fd: int = fd

    def watch(self, path: str) -> int:
        """Watch the directory *path* (not following a symlink); return its descriptor."""
        wd = self._libc.inotify_add_watch(
            self.fd, os.fsencode(path), CHANGES | IN_ONLYDIR | IN_DONT_FOLLOW
        )
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        return int(wd)

    def unwatch(self, wd: int) -> None:
        self._libc.inotify_rm_watch(self.fd, wd)  # EINVAL: already gone with its directory

    def read(self) -> list[Event]:
        """Every event queued now (never blocks)."""
        events: list[Event] = []
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return events
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                offset += _HEADER.size
                raw = data[offset : offset + length].split(b"\0", 1)[0]
                offset += length
                events.append((wd, mask, os.fsdecode(raw)))

    def close(self) -> None:
        os.close(self.fd)
