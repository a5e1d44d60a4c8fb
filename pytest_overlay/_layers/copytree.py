"""Copying an unmounted upper layer to another filesystem, whatever a test left in it.

Used to keep the upper layer of a failed test when it cannot simply be renamed (the
workspace is on a tmpfs that dies with pytest). Unlike :func:`~pytest_overlay._layers.io.
write_layer`, which writes the layer model (files, directories, symlinks, whiteouts), this
copies the tree as it is: FIFOs, sockets and device nodes too, modes, times, xattrs (the
whiteout and opaque markers among them) and, for root, owners. The source is about to be
deleted, so directories and files a test made unreadable are opened up to read them; the
copies keep the original modes. What cannot be copied is left out and reported, never
raised: a test's leftovers must not turn into a teardown error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat

__all__ = ["copy_layer"]


def copy_layer(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> list[str]:
    """Copy the directory tree *source* to the new path *destination*.

    Returns a description of each entry left out (``"path: reason"``, relative to
    *source*), in the order met; the rest of the tree is copied regardless.
    """
    skipped: list[str] = []
    _copy_dir(os.fspath(source), os.fspath(destination), ".", skipped)
    return skipped


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _copy_dir(src: str, dst: str, rel: str, skipped: list[str]) -> None:
    st = os.lstat(src)
    os.mkdir(dst, 0o700)
    try:
        names = _listdir(src, st)
    except OSError as exc:
        skipped.append(f"{rel}/*: {_reason(exc)}")
        names = []
    for name in names:
        child_rel = name if rel == "." else f"{rel}/{name}"
        try:
            _copy_entry(os.path.join(src, name), os.path.join(dst, name), child_rel, skipped)
        except OSError as exc:
            skipped.append(f"{child_rel}: {_reason(exc)}")
    # Attributes last: a read-only directory must be filled first, and filling it moves
    # its mtime.
    _copy_attributes(src, dst, st, rel, skipped)


def _listdir(path: str, st: os.stat_result) -> list[str]:
    try:
        return os.listdir(path)
    except PermissionError:
        # A test chmod-ed it away; the source is ours and about to be deleted.
        os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
        return os.listdir(path)


def _copy_entry(src: str, dst: str, rel: str, skipped: list[str]) -> None:
    st = os.lstat(src)
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        _copy_dir(src, dst, rel, skipped)
        return
    if stat.S_ISREG(mode):
        _copy_file(src, dst, st)
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISFIFO(mode):
        os.mkfifo(dst, 0o600)
    else:
        # Sockets, and character or block devices (a whiteout is char 0/0, which any
        # user may make since Linux 5.8; other devices need CAP_MKNOD).
        os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
    _copy_attributes(src, dst, st, rel, skipped)


def _copy_file(src: str, dst: str, st: os.stat_result) -> None:
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except PermissionError:
        os.chmod(src, stat.S_IMODE(st.st_mode) | stat.S_IRUSR)
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with (
        open(fd, "rb") as fsrc,
        open(os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fdst,
    ):
        shutil.copyfileobj(fsrc, fdst)


def _copy_attributes(src: str, dst: str, st: os.stat_result, rel: str, skipped: list[str]) -> None:
    link = stat.S_ISLNK(st.st_mode)
    for name in _xattrs(src):
        try:
            value = os.getxattr(src, name, follow_symlinks=False)
            os.setxattr(dst, name, value, follow_symlinks=False)
        except OSError as exc:
            skipped.append(f"{rel}: xattr {name}: {_reason(exc)}")
    if os.geteuid() == 0:
        os.lchown(dst, st.st_uid, st.st_gid)
    if not link:
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    with contextlib.suppress(OSError):
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _xattrs(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:  # ENOTSUP: a filesystem without xattrs has none to copy
        return []
