"""Mounting one overlayfs: the new mount API where the kernel has it, mount(2) otherwise."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from pytest_overlay._errors import OverlayError
from pytest_overlay._linux import syscalls as _syscalls

#: OVL_MAX_STACK in fs/overlayfs/params.h.
MAX_LOWER_LAYERS: Final = 500
# fsconfig() copies string values with strndup_user(value, 256): longer paths are passed
# as /proc/self/fd/N of an O_PATH descriptor instead.
_FSCONFIG_MAX_STRING: Final = 255

_new_api_works: bool | None = None


def escape_classic(path: str | os.PathLike[str]) -> str:
    """Escape a path for the ``lowerdir=``/``upperdir=`` options of classic mount(2)."""
    text = os.fsdecode(path)
    return text.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def classic_options(lowers: Sequence[Path], upper: Path, work: Path, flags: Sequence[str]) -> str:
    """Build the option string for mount(2), refusing one the kernel would truncate."""
    parts = [
        "lowerdir=" + ":".join(escape_classic(p) for p in lowers),
        "upperdir=" + escape_classic(upper),
        "workdir=" + escape_classic(work),
        *flags,
    ]
    data = ",".join(parts)
    # The kernel copies one page of option data and silently drops the rest, so a long
    # lowerdir list would mount a different stack or fail with a misleading ENOENT.
    limit = os.sysconf("SC_PAGE_SIZE") - 1
    size = len(os.fsencode(data))
    if size > limit:
        raise OverlayError(
            f"the overlay mount options are {size} bytes long ({len(lowers)} lower layers), "
            f"but classic mount(2) only carries {limit}: use fewer or shorter lower-layer "
            "paths, or a kernel >= 6.8 where pytest-overlay passes each layer separately "
            "through the new mount API"
        )
    return data


def _fsconfig_path(fd: int, key: str, path: Path) -> None:
    # The kernel takes "lowerdir+" values verbatim but unescapes upperdir and workdir
    # (ovl_mount_dir), so only those need the backslash escaping of mount(2).
    value = os.fsencode(path) if key.endswith("+") else os.fsencode(escape_classic(path))
    if len(value) <= _FSCONFIG_MAX_STRING:
        _syscalls.fsconfig_string(fd, key, value)
        return
    path_fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # The kernel resolves the path during this call, so the descriptor may go at once.
        _syscalls.fsconfig_string(fd, key, f"/proc/self/fd/{path_fd}")
    finally:
        os.close(path_fd)


def _mount_new_api(
    lowers: Sequence[Path], upper: Path, work: Path, target: Path, flags: Sequence[str]
) -> None:
    fs_fd = _syscalls.fsopen("overlay")
    try:
        try:
            for lower in lowers:
                _fsconfig_path(fs_fd, "lowerdir+", lower)
            _fsconfig_path(fs_fd, "upperdir", upper)
            _fsconfig_path(fs_fd, "workdir", work)
            for flag in flags:
                _syscalls.fsconfig_flag(fs_fd, flag)
            _syscalls.fsconfig_create(fs_fd)
        except OSError as exc:
            log = _syscalls.read_fs_context_log(fs_fd)
            if log:
                exc.strerror = f"{exc.strerror} ({'; '.join(log)})"
            raise
        mount_fd = _syscalls.fsmount(fs_fd)
        try:
            _syscalls.move_mount(mount_fd, target)
        finally:
            # An open mount fd pins the mount: umount would answer EBUSY.
            os.close(mount_fd)
    finally:
        os.close(fs_fd)


def _new_api_supported() -> bool:
    """Whether fsopen works and overlayfs accepts ``lowerdir+`` (kernel >= 6.8)."""
    global _new_api_works
    if _new_api_works is None:
        try:
            fd = _syscalls.fsopen("overlay")
        except OSError as exc:
            if exc.errno == errno.EPERM:
                # No mount capability right now (outside mount_privileges): that says
                # nothing about the kernel, so do not remember it.
                return False
            _new_api_works = False
        else:
            try:
                _syscalls.fsconfig_string(fd, "lowerdir+", "/")
                _new_api_works = True
            except OSError:
                _new_api_works = False
            finally:
                os.close(fd)
    return _new_api_works


def mount_overlay(
    lowers: Sequence[Path],
    upper: Path,
    work: Path,
    target: Path,
    *,
    flags: Sequence[str] = (),
    use_new_api: bool | None = None,
) -> str:
    """Mount an overlay of *lowers* (top-most first) at *target*; return the API used."""
    if not lowers:
        raise OverlayError("an overlay needs at least one lower layer")
    if len(lowers) > MAX_LOWER_LAYERS:
        raise OverlayError(
            f"{len(lowers)} lower layers given, but overlayfs stacks at most "
            f"{MAX_LOWER_LAYERS}: merge some layers first (for example by taking a snapshot)"
        )
    if use_new_api is None:
        use_new_api = _new_api_supported()
    if use_new_api:
        _mount_new_api(lowers, upper, work, target, flags)
        return "fsopen"
    data = classic_options(lowers, upper, work, flags)
    _syscalls.mount("overlay", target, "overlay", 0, data)
    return "mount"


def fusermount_unmount(target: Path, *, lazy: bool = False) -> bool:
    """Unmount a FUSE mount that this user made in the host namespace, through the setuid
    ``fusermount3`` (umount2 would need privileges); return whether it worked."""
    command = ["fusermount3", "-u", *(["-z"] if lazy else []), os.fspath(target)]
    try:
        result = subprocess.run(command, capture_output=True, check=False)
    except OSError:  # no fusermount3
        return False
    return result.returncode == 0


#: Pauses before each retry of a busy unmount (seconds). A process that another thread
#: forks holds copies of our file descriptors until it execs, which alone makes umount
#: fail with EBUSY for a moment (seen with four threads churning fuse stacks).
_BUSY_PAUSES: Final = (0.001, 0.005, 0.02, 0.1)


def unmount(target: Path, on_busy: Callable[[Path], object] | None = None) -> bool:
    """Unmount *target*; return False if it was busy and had to be detached lazily.

    *on_busy* is called with *target* before the detach: only then can /proc still tell
    who holds it (a detached mount's paths read as relative to its own root).
    """
    for pause in (*_BUSY_PAUSES, None):
        if _umount_unless_busy(target):
            return True
        if pause is not None:
            time.sleep(pause)
    if on_busy is not None:
        on_busy(target)
    # A process still has a file open or its cwd inside: detach now, and the kernel
    # frees the mount when the last user goes. The base is not at risk either way.
    _syscalls.umount(target, _syscalls.MNT_DETACH)
    return False


def _umount_unless_busy(target: Path) -> bool:
    try:
        _syscalls.umount(target)
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        return False
    return True
