"""The on-disk format of overlay layers: whiteouts and opaque-directory markers.

Every marker that a reader of an upper or lower layer can meet is named here once, with the
place it is defined, so the rest of the package never spells an xattr name itself.

- Kernel overlayfs: Documentation/filesystems/overlayfs.rst, "whiteouts and opaque
  directories" and "Whiteouts and opaque directories in lower layers" (xattr whiteouts,
  kernel >= 6.7).
- fuse-overlayfs: ``user.fuseoverlayfs.opaque`` when running unprivileged (its README).
- OCI image layers: image-spec ``layer.md``, "Whiteouts" (``.wh.<name>``, ``.wh..wh..opq``).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Final

#: Overlayfs stores its xattrs under ``trusted.`` when mounted by real root and under
#: ``user.`` when mounted with ``userxattr`` (unprivileged, in a user namespace).
XATTR_PREFIXES: Final = ("trusted.overlay.", "user.overlay.")

#: Opaque directory: ``<prefix>opaque`` = ``y``. Value ``x`` marks a directory that holds
#: xattr whiteouts but is not itself opaque (kernel >= 6.7).
OPAQUE_XATTRS: Final = (
    "trusted.overlay.opaque",
    "user.overlay.opaque",
    # fuse-overlayfs cannot write trusted.* without privilege and uses its own name.
    "user.fuseoverlayfs.opaque",
)
#: Xattr whiteout (kernel >= 6.7): a zero-size regular file carrying ``<prefix>whiteout``.
WHITEOUT_XATTRS: Final = ("trusted.overlay.whiteout", "user.overlay.whiteout")

#: OCI layer tarballs: ``.wh.<name>`` deletes ``<name>``; ``.wh..wh..opq`` makes the
#: directory that holds it opaque.
OCI_WHITEOUT_PREFIX: Final = ".wh."
OCI_OPAQUE_MARKER: Final = ".wh..wh..opq"


def _getxattr(path: str | os.PathLike[str], name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError as exc:
        # ENODATA: not set. EPERM/EACCES: trusted.* is unreadable without CAP_SYS_ADMIN,
        # which for us means "not set" because such a layer was not written by us either.
        # ENOTSUP: the filesystem has no xattrs at all.
        if exc.errno in (errno.ENODATA, errno.EPERM, errno.EACCES, errno.ENOTSUP):
            return None
        raise


def is_whiteout(path: str | os.PathLike[str], st: os.stat_result) -> bool:
    """Whether the entry at *path* (already lstat-ed as *st*) is a whiteout."""
    if stat.S_ISCHR(st.st_mode):
        return st.st_rdev == 0
    if stat.S_ISREG(st.st_mode) and st.st_size == 0:
        # Only zero-size files can be xattr whiteouts, so the xattr lookup is skipped for
        # every file with data; that keeps a scan of a large upper layer cheap.
        return any(_getxattr(path, name) is not None for name in WHITEOUT_XATTRS)
    return False


def is_opaque(path: str | os.PathLike[str]) -> bool:
    """Whether the directory at *path* hides the same-named directories below it."""
    return any(_getxattr(path, name) == b"y" for name in OPAQUE_XATTRS)


#: Files fuse-overlayfs drops into the directories it makes opaque, next to the xattr:
#: ``.wh..opq`` as a char 0/0 device, ``.wh..wh..opq`` as an empty file of mode 0700.
FUSE_MARKER_FILES: Final = frozenset({OCI_OPAQUE_MARKER, ".wh..opq"})


def _is_fuse_marker(path: str, name: str) -> bool:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if name == OCI_OPAQUE_MARKER:
        return stat.S_ISREG(st.st_mode) and st.st_size == 0 and stat.S_IMODE(st.st_mode) == 0o700
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def marker_names(directory: str | os.PathLike[str]) -> frozenset[str]:
    """Names in *directory* that are bookkeeping rather than content.

    fuse-overlayfs marks an opaque directory with marker files as well as the xattr. To
    kernel overlayfs those names are ordinary files, so they only count as markers in a
    directory that carries an opaque xattr, where fuse-overlayfs would have put them, and
    only in the exact shape it gives them: a test's own file of that name stays content.
    """
    if not is_opaque(directory):
        return frozenset()
    root = os.fspath(directory)
    return frozenset(
        name for name in FUSE_MARKER_FILES if _is_fuse_marker(os.path.join(root, name), name)
    )
