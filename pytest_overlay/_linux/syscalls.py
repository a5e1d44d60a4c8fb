"""Thin ctypes wrappers for the Linux system calls the kernel backends need.

Every call into libc lives here so the rest of the package stays testable without them.
Each wrapper raises :class:`OSError` with the kernel's errno, like the ``os`` module does.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import Final

# The syscalls added in Linux 5.2 share one number on every architecture but alpha.
SYS_MOVE_MOUNT: Final = 429
SYS_FSOPEN: Final = 430
SYS_FSCONFIG: Final = 431
SYS_FSMOUNT: Final = 432

FSOPEN_CLOEXEC: Final = 0x1
FSMOUNT_CLOEXEC: Final = 0x1
MOVE_MOUNT_F_EMPTY_PATH: Final = 0x4
FSCONFIG_SET_FLAG: Final = 0
FSCONFIG_SET_STRING: Final = 1
FSCONFIG_SET_FD: Final = 5
FSCONFIG_CMD_CREATE: Final = 6
AT_FDCWD: Final = -100

MS_REC: Final = 0x4000
MS_PRIVATE: Final = 1 << 18
MNT_DETACH: Final = 0x2

CLONE_NEWNS: Final = 0x00020000
CLONE_NEWUSER: Final = 0x10000000

_LINUX_CAPABILITY_VERSION_3: Final = 0x20080522
CAP_DAC_OVERRIDE: Final = 1
CAP_DAC_READ_SEARCH: Final = 2
CAP_FOWNER: Final = 3
CAP_SYS_ADMIN: Final = 21


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # glibc's soname; find_library would run ldconfig in a subprocess (~5 ms at import).
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:  # musl and other libcs
        return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


_libc = _load_libc()


def available() -> bool:
    """Whether this platform has the Linux calls at all."""
    return _libc is not None


def _lib() -> ctypes.CDLL:
    if _libc is None:  # pragma: no cover - only on non-Linux systems
        raise OSError(38, "Linux system calls are not available on " + sys.platform)
    return _libc


def _check(result: int, what: str, path: str | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def _b(value: str | os.PathLike[str]) -> bytes:
    return os.fsencode(value)


def fsopen(fsname: str) -> int:
    return _check(_lib().syscall(SYS_FSOPEN, _b(fsname), FSOPEN_CLOEXEC), "fsopen")


def fsconfig_string(fd: int, key: str, value: str | bytes | os.PathLike[str]) -> None:
    encoded = os.fsencode(value)
    # Called a few times per mount, every test: the message is built only on failure.
    if _lib().syscall(SYS_FSCONFIG, fd, FSCONFIG_SET_STRING, _b(key), encoded, 0) < 0:
        _check(-1, f"fsconfig {key}", os.fsdecode(encoded))


def fsconfig_flag(fd: int, key: str) -> None:
    _check(
        _lib().syscall(SYS_FSCONFIG, fd, FSCONFIG_SET_FLAG, _b(key), None, 0), f"fsconfig {key}"
    )


def fsconfig_create(fd: int) -> None:
    _check(_lib().syscall(SYS_FSCONFIG, fd, FSCONFIG_CMD_CREATE, None, None, 0), "fsconfig create")


def fsmount(fd: int) -> int:
    return _check(_lib().syscall(SYS_FSMOUNT, fd, FSMOUNT_CLOEXEC, 0), "fsmount")


def move_mount(mount_fd: int, target: str | os.PathLike[str]) -> None:
    _check(
        _lib().syscall(
            SYS_MOVE_MOUNT, mount_fd, b"", AT_FDCWD, _b(target), MOVE_MOUNT_F_EMPTY_PATH
        ),
        "move_mount",
        os.fsdecode(target),
    )


def read_fs_context_log(fd: int) -> list[str]:
    """Drain the messages the kernel left on an fs context (``e overlay: ...`` lines)."""
    messages: list[str] = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            # ENODATA marks the end of the log.
            return messages
        if not data:
            return messages
        messages.append(data.decode("utf-8", "replace").rstrip("\n"))


def mount(
    source: str, target: str | os.PathLike[str], fstype: str | None, flags: int, data: str | None
) -> None:
    _check(
        _lib().mount(
            _b(source) if source else None,
            _b(target),
            _b(fstype) if fstype else None,
            ctypes.c_ulong(flags),
            _b(data) if data is not None else None,
        ),
        "mount",
        os.fsdecode(target),
    )


def umount(target: str | os.PathLike[str], flags: int = 0) -> None:
    if _lib().umount2(_b(target), flags) < 0:
        _check(-1, "umount", os.fsdecode(target))


def unshare(flags: int) -> None:
    _check(_lib().unshare(flags), "unshare")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def get_capabilities() -> tuple[int, int, int]:
    """Return this thread's (effective, permitted, inheritable) capability sets as bitmasks."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_lib().capget(ctypes.byref(header), data), "capget")
    return (
        data[0].effective | data[1].effective << 32,
        data[0].permitted | data[1].permitted << 32,
        data[0].inheritable | data[1].inheritable << 32,
    )


def set_capabilities(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for index, shift in enumerate((0, 32)):
        data[index].effective = (effective >> shift) & 0xFFFFFFFF
        data[index].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[index].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_lib().capset(ctypes.byref(header), data), "capset")


PR_SET_PDEATHSIG: Final = 1
PR_CAP_AMBIENT: Final = 47
PR_CAP_AMBIENT_RAISE: Final = 2
PR_CAP_AMBIENT_CLEAR_ALL: Final = 4


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    _check(
        _lib().prctl(
            option,
            ctypes.c_ulong(arg2),
            ctypes.c_ulong(arg3),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        ),
        "prctl",
    )


def set_parent_death_signal(signum: int) -> None:
    """Have the kernel send *signum* to this process when its parent thread dies."""
    prctl(PR_SET_PDEATHSIG, signum)


OVERLAYFS_SUPER_MAGIC: Final = 0x794C7630
FUSE_SUPER_MAGIC: Final = 0x65735546
#: Filesystems an overlay upper layer cannot live on.
NO_UPPER_MAGICS: Final = (OVERLAYFS_SUPER_MAGIC, FUSE_SUPER_MAGIC)


def statfs_type(path: str | os.PathLike[str]) -> int:
    """The ``f_type`` magic number of the filesystem holding *path*."""
    # struct statfs starts with f_type (a long); 256 bytes covers the whole struct.
    buf = ctypes.create_string_buffer(256)
    _check(_lib().statfs(_b(path), buf), "statfs", os.fsdecode(path))
    return ctypes.c_long.from_buffer(buf).value
