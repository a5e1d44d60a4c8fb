"""Reading and writing layers on disk: the only I/O of the layer code.

Readers must know every marker that overlayfs, fuse-overlayfs and kernels >= 6.7 use
(``_format``); writers pick one form the mount that will read the layer understands.
"""

from __future__ import annotations

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
    """
    if not isinstance(layer, Layer):
        layer = Layer(layer)
    namespace = xattr_namespace or default_xattr_namespace()
    root = Path(path)
    try:
        root.mkdir()
    except FileExistsError:
        if not root.is_dir() or root.is_symlink() or any(root.iterdir()):
            raise LayerError(
                f"{str(root)!r} must be a missing or empty directory: writing a layer into "
                "existing content could follow symlinks out of it"
            ) from None
    if whiteouts == "xattr":
        _check_xattr_whiteouts(layer)
    for rel, entry in layer.items():
        target = root / rel
        if isinstance(entry, Dir):
            target.mkdir()
            if entry.opaque:
                os.setxattr(target, f"{namespace}.overlay.opaque", b"y")
        elif isinstance(entry, File):
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with open(fd, "wb") as f:
                f.write(entry.data)
                os.fchmod(fd, entry.mode)
        elif isinstance(entry, Symlink):
            os.symlink(entry.target, target)
        elif whiteouts == "xattr":
            _write_xattr_whiteout(root, rel, namespace)
        else:
            _write_chardev_whiteout(target)
    # Children first, so that a directory without write permission is filled before it
    # is closed.
    for rel in reversed(list(layer)):
        entry = layer[rel]
        if isinstance(entry, Dir):
            os.chmod(root / rel, entry.mode)


def _write_chardev_whiteout(target: Path) -> None:
    try:
        os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    except PermissionError as exc:
        raise LayerError(
            f"cannot create the whiteout {str(target)!r} as a character device 0/0 "
            f"({exc.strerror}); write the layer with whiteouts='xattr' (kernel >= 6.7) or "
            "export it as an OCI tarball with pytest_overlay.oci.write_tar"
        ) from exc


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


def _write_xattr_whiteout(root: Path, rel: str, namespace: str) -> None:
    target = root / rel
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644))
    os.setxattr(target, f"{namespace}.overlay.whiteout", b"y")
    try:
        os.setxattr(target.parent, f"{namespace}.overlay.opaque", b"x", os.XATTR_CREATE)
    except OSError as exc:
        # EEXIST: an earlier whiteout in the same directory already marked it.
        if exc.errno != errno.EEXIST:
            raise
