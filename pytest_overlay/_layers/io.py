"""Reading and writing layers on disk: the only I/O of the layer code.

Readers must know every marker that overlayfs, fuse-overlayfs and kernels >= 6.7 use
(``_format``); writers pick one form the mount that will read the layer understands.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pytest_overlay._layers import format as _format
from pytest_overlay._layers.layer import (
    WHITEOUT,
    Dir,
    Entry,
    File,
    Layer,
    LayerError,
    Symlink,
    Whiteout,
)

__all__ = ["default_xattr_namespace", "read_layer", "write_layer"]

XattrNamespace = Literal["trusted", "user"]


def read_layer(path: str | os.PathLike[str]) -> Layer:
    """Read the directory *path* as a layer.

    Whiteouts are recognised in every on-disk form: character device 0/0 (overlayfs,
    fuse-overlayfs) and zero-size files carrying ``trusted.overlay.whiteout`` or
    ``user.overlay.whiteout`` (kernel >= 6.7). Directories are opaque when
    ``trusted.overlay.opaque``, ``user.overlay.opaque`` or ``user.fuseoverlayfs.opaque``
    is ``y``. Every other xattr (overlay's own ``origin``, ``impure``, ``redirect``...)
    is ignored. Timestamps and ownership are not read. Symlinks are never followed.

    Raises :class:`~pytest_overlay.layers.LayerError` naming the path of anything a layer
    cannot hold (device nodes other than whiteouts, FIFOs, sockets).
    """
    root = Path(path)
    if not root.is_dir():
        raise LayerError(f"{str(root)!r} is not a directory")
    entries: dict[str, Entry] = {}
    _read_into(root, "", entries)
    return Layer(entries)


def _read_into(directory: Path, prefix: str, entries: dict[str, Entry]) -> None:
    with os.scandir(directory) as it:
        found = sorted(it, key=lambda e: e.name)
    for item in found:
        rel = f"{prefix}{item.name}"
        st = item.stat(follow_symlinks=False)
        mode = stat.S_IMODE(st.st_mode)
        if _format.is_whiteout(item.path, st):
            entries[rel] = WHITEOUT
        elif stat.S_ISDIR(st.st_mode):
            entries[rel] = Dir(mode, opaque=_has_opaque_xattr(item.path))
            _read_into(Path(item.path), f"{rel}/", entries)
        elif stat.S_ISREG(st.st_mode):
            with open(item.path, "rb") as f:
                entries[rel] = File(f.read(), mode)
        elif stat.S_ISLNK(st.st_mode):
            entries[rel] = Symlink(os.readlink(item.path))
        else:
            raise LayerError(
                f"{item.path!r}: a layer holds files, directories, symlinks and whiteouts "
                f"only, not {_describe(st)}"
            )


def _has_opaque_xattr(path: str) -> bool:
    # Only the xattrs: ``_format.is_opaque`` also takes a file named ``.wh..wh..opq`` as a
    # marker (fuse-overlayfs drops one), but on kernel overlayfs that is an ordinary name
    # a user may create, and a layer must read back as it was written.
    return any(_format._getxattr(path, name) == b"y" for name in _format.OPAQUE_XATTRS)


def _describe(st: os.stat_result) -> str:
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        kind = "character" if stat.S_ISCHR(st.st_mode) else "block"
        return f"a {kind} device {os.major(st.st_rdev)}/{os.minor(st.st_rdev)}"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket"
    return f"file type {stat.S_IFMT(st.st_mode):#o}"


def default_xattr_namespace() -> XattrNamespace:
    """``trusted`` for real root (plain overlayfs), ``user`` otherwise (``userxattr`` mounts).

    A kernel mount reads only its own namespace: a root mount ignores
    ``user.overlay.opaque`` and a ``userxattr`` mount ignores ``trusted.overlay.opaque``.
    """
    return "trusted" if os.geteuid() == 0 else "user"


def write_layer(
    layer: Mapping[str, Entry],
    path: str | os.PathLike[str],
    *,
    whiteouts: Literal["chardev", "xattr"] = "chardev",
    xattr_namespace: XattrNamespace | None = None,
) -> None:
    """Materialise *layer* in the directory *path*, which must be missing or empty.

    Whiteouts are written as character devices 0/0 (``whiteouts="chardev"``, readable by
    every overlayfs; unprivileged processes may create them since Linux 5.8) or as
    xattr whiteouts (``whiteouts="xattr"``, kernel >= 6.7, lower layers only). Opaque
    directories get ``<namespace>.overlay.opaque=y``; *xattr_namespace* defaults to
    :func:`default_xattr_namespace`. Modes are set exactly (the umask does not apply);
    directory modes are set last so that read-only directories can still be filled.

    Every step is taken relative to a directory file descriptor opened with
    ``O_NOFOLLOW``, so a directory swapped for a symlink while the layer is written
    fails the write instead of redirecting it. *path* must belong to this process's
    user: anyone else who owns it could change it under the writer.
    """
    if not isinstance(layer, Layer):
        layer = Layer(layer)
    namespace = xattr_namespace or default_xattr_namespace()
    if whiteouts == "xattr":
        _check_xattr_whiteouts(layer)
    shown = os.fspath(path)
    root_fd, created = _open_target(shown)
    try:
        _LayerWriter(layer, shown, whiteouts, namespace).fill(root_fd, "")
    except BaseException:
        # Half a layer reads back as a different layer: leave nothing behind.
        _clear(root_fd)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(shown)
        raise
    finally:
        os.close(root_fd)


def _check_xattr_whiteouts(layer: Layer) -> None:
    # Kernels read xattr whiteouts only in a directory marked ``overlay.opaque=x``, and
    # ``x`` and ``y`` are values of the same xattr: an opaque directory cannot hold one.
    # (Measured on 6.18: readdir lists such a whiteout, lookup says ENOENT, rmdir says
    # ENOTEMPTY.)
    for rel, entry in layer.items():
        parent = rel.rpartition("/")[0]
        if isinstance(entry, Whiteout) and parent:
            container = layer[parent]
            if isinstance(container, Dir) and container.opaque:
                raise LayerError(
                    f"{rel!r}: an opaque directory cannot hold an xattr whiteout; "
                    "use whiteouts='chardev'"
                )


# Directories are opened for reading (listing, fchmod, fsetxattr) and never through a
# symlink; O_CLOEXEC so that a subprocess a test starts from another thread inherits none.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Errors that mean an entry changed under the writer: a directory became a symlink
# (ELOOP) or something else (ENOTDIR), or a name appeared before we created it (EEXIST).
_RACE_ERRNOS = frozenset({errno.ELOOP, errno.ENOTDIR, errno.EEXIST})


def _open_target(path: str) -> tuple[int, bool]:
    """Open (creating it if missing) the empty directory *path*, owned by this user.

    Returns the descriptor and whether the directory was created.
    """
    parent, name = os.path.split(os.path.abspath(path))
    parent_fd = _open_resolved(parent, path)
    try:
        try:
            os.mkdir(name, dir_fd=parent_fd)
            created = True
        except FileExistsError:
            created = False
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno not in _RACE_ERRNOS:
                raise
            raise _not_empty(path) from None
    finally:
        os.close(parent_fd)
    try:
        _check_owner(fd, path)
        if not created and os.listdir(fd):
            raise _not_empty(path)
    except BaseException:
        os.close(fd)
        raise
    return fd, created


def _clear(dir_fd: int) -> None:
    """Delete everything below *dir_fd*, through descriptors, following no symlink.

    A directory's mode may deny us entry: it is opened up through an ``O_PATH``
    descriptor (``/proc/self/fd/N`` names that very directory, never a link's target).
    """
    with os.scandir(dir_fd) as it:
        entries = list(it)
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            os.unlink(entry.name, dir_fd=dir_fd)
            continue
        handle = os.open(entry.name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            os.chmod(f"/proc/self/fd/{handle}", stat.S_IRWXU)
        finally:
            os.close(handle)
        child = os.open(entry.name, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            _clear(child)
        finally:
            os.close(child)
        os.rmdir(entry.name, dir_fd=dir_fd)


def _open_resolved(directory: str, target: str) -> int:
    """An ``O_PATH`` descriptor of *directory*, walked from ``/`` without following links.

    Symlinks in the path as given are resolved once, up front; one that appears later
    (an ancestor swapped for a link during the walk) fails the walk instead of moving it.
    ``O_PATH`` needs only search permission, like a path lookup.
    """
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in os.path.realpath(directory).split("/"):
            if not part:
                continue
            try:
                child = os.open(part, os.O_PATH | _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise LayerError(
                    f"{target!r}: the parent directory {directory!r} changed while it was "
                    "being opened (a component became a symlink or a file); nothing was "
                    "written. Write layers under directories no other user can change"
                ) from None
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_owner(fd: int, path: str) -> None:
    owner = os.fstat(fd).st_uid
    if owner != os.geteuid():
        raise LayerError(
            f"{path!r} belongs to uid {owner}, not to this process (uid {os.geteuid()}): "
            "its owner could swap what is inside for symlinks while the layer is written. "
            "Write the layer into a missing path or a directory of your own"
        )


def _not_empty(path: str) -> LayerError:
    return LayerError(
        f"{path!r} must be a missing or empty directory: writing a layer into "
        "existing content could follow symlinks out of it"
    )


class _LayerWriter:
    """Writes one layer below a directory descriptor, one directory at a time.

    Only the descriptors of the directories on the way down are open at once, so the
    depth of the layer, not its size, bounds them.
    """

    def __init__(self, layer: Layer, root: str, whiteouts: str, namespace: str) -> None:
        self.layer = layer
        self.root = root
        self.whiteouts = whiteouts
        self.namespace = namespace

    def fill(self, dir_fd: int, prefix: str) -> None:
        for name in self.layer.children(prefix):
            rel = f"{prefix}/{name}" if prefix else name
            try:
                self._write(dir_fd, name, rel, self.layer[rel])
            except OSError as exc:
                # ENOENT too: every name below the target is one this writer just made,
                # so one that is gone was taken away (renamed between mkdir and open).
                if exc.errno not in _RACE_ERRNOS and exc.errno != errno.ENOENT:
                    raise
                raise LayerError(
                    f"{os.path.join(self.root, rel)!r} changed while the layer was being "
                    f"written ({exc.strerror}): another process is changing the target. "
                    "Nothing was written outside it; write into a directory only you use"
                ) from None

    def _write(self, dir_fd: int, name: str, rel: str, entry: Entry) -> None:
        if isinstance(entry, Dir):
            # 0o700 until it is filled: no one else may add to it in between.
            os.mkdir(name, 0o700, dir_fd=dir_fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                _check_owner(fd, os.path.join(self.root, rel))
                if entry.opaque:
                    os.setxattr(fd, f"{self.namespace}.overlay.opaque", b"y")
                self.fill(fd, rel)
                # Children first, so that a directory without write permission is filled
                # before it is closed.
                os.fchmod(fd, entry.mode)
            finally:
                os.close(fd)
        elif isinstance(entry, File):
            fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=dir_fd)
            try:
                view = memoryview(entry.data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, entry.mode)
            finally:
                os.close(fd)
        elif isinstance(entry, Symlink):
            os.symlink(entry.target, name, dir_fd=dir_fd)
        elif self.whiteouts == "xattr":
            self._write_xattr_whiteout(dir_fd, name)
        else:
            self._write_chardev_whiteout(dir_fd, name, rel)

    def _write_chardev_whiteout(self, dir_fd: int, name: str, rel: str) -> None:
        try:
            os.mknod(name, stat.S_IFCHR | 0o000, os.makedev(0, 0), dir_fd=dir_fd)
        except PermissionError as exc:
            raise LayerError(
                f"cannot create the whiteout {os.path.join(self.root, rel)!r} as a character "
                f"device 0/0 ({exc.strerror}); write the layer with whiteouts='xattr' "
                "(kernel >= 6.7) or export it as an OCI tarball with "
                "pytest_overlay.oci.write_tar"
            ) from exc

    def _write_xattr_whiteout(self, dir_fd: int, name: str) -> None:
        fd = os.open(name, _NEW_FILE_FLAGS, 0o644, dir_fd=dir_fd)
        try:
            os.setxattr(fd, f"{self.namespace}.overlay.whiteout", b"y")
        finally:
            os.close(fd)
        try:
            os.setxattr(dir_fd, f"{self.namespace}.overlay.opaque", b"x", os.XATTR_CREATE)
        except OSError as exc:
            # EEXIST: an earlier whiteout in the same directory already marked it.
            if exc.errno != errno.EEXIST:
                raise
