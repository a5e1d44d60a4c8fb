"""Squashing: several upper layers merged into one new layer that stacks the same way.

A chain of snapshots grows by one lower layer per snapshot, and every mount of it costs
per layer. Layers that lie next to each other in a chain can be replaced by one layer
that shows the same thing over whatever lies below them: for each name, the top-most
layer that has it decides, as in overlayfs's lookup (``filesystems/overlayfs.rst``):

- a non-directory (a file, symlink, device, or a whiteout) hides everything below it;
- directories of the same name merge, down to the first opaque one, or to the first
  non-directory or whiteout under them: that one stops the lookup, so the merged
  directory must be opaque in the new layer to keep hiding what lies further below.

Only what the squashed layers hold is read and written, never the layers below them.
Overlayfs's private xattrs (origin, impure...) describe an upper layer's ties to its
lowers at the time and are not carried over; opaque markers are.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence

from pytest_overlay._layers import format as _format
from pytest_overlay._layers.copytree import _copy_file, _xattrs

__all__ = ["squash_layers"]

# The overlay xattrs kept in a squashed layer: the opaque markers. Others are dropped.
_PRIVATE_PREFIXES = ("trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.")


def squash_layers(
    layers: Sequence[str], destination: str, opaque_xattr: str, below: Sequence[str] = ()
) -> None:
    """Merge *layers* (directories, top-most first) into the new directory *destination*.

    *opaque_xattr* is the opaque marker the mount that reads the result understands
    (``trusted.overlay.opaque``, or ``user.overlay.opaque`` under ``userxattr``).
    *below* are the layers the result will stand on (top-most first). They are only
    looked up, name by name, where the squashed layers hold a whiteout: one that hides
    nothing below is left out. It must be: overlayfs lists the entries of a directory
    found in one layer alone as they are, so a whiteout there would show in the listing
    of the merged directory while its lookup fails (ENOENT).
    """
    _Squasher(opaque_xattr).merge_dir(list(layers), destination, opaque=False, below=list(below))


def _look_below(below: list[str], name: str) -> tuple[bool, list[str]]:
    """Whether a lookup of *name* under the directories *below* (top-most first) finds
    anything, and the directories of that name it merges, as overlayfs looks it up."""
    dirs: list[str] = []
    for directory in below:
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISDIR(st.st_mode):
            dirs.append(path)
            if _format.is_opaque(path):
                break
            continue
        if dirs:
            return True, dirs  # a file under a directory ends the lookup there
        # A file ends the lookup and shows; a whiteout ends it and shows nothing.
        return not _format.is_whiteout(path, st), []
    return bool(dirs), dirs


class _Squasher:
    def __init__(self, opaque_xattr: str) -> None:
        self._opaque_xattr = opaque_xattr
        # (st_dev, st_ino) of a multiply linked source file -> its copy: the links of
        # one upper layer stay links.
        self._links: dict[tuple[int, int], str] = {}

    def merge_dir(self, sources: list[str], dst: str, *, opaque: bool, below: list[str]) -> None:
        """Make *dst* the merge of the same-named directories *sources* (top-most first).

        *opaque*: the lookup stops at the last of *sources* (opaque, or a non-directory
        under it), so *dst* must hide what lies below the squashed layers. *below*: the
        same-named directories under the squashed layers that a lookup reaches.
        """
        top = sources[0]
        top_st = os.lstat(top)
        os.mkdir(dst, 0o700)
        names: dict[str, None] = {}
        for source in sources:
            hidden = _format.marker_names(source)
            for name in os.listdir(source):
                if name not in hidden:
                    names.setdefault(name)
        reach = [] if opaque else below
        for name in names:
            self._merge_name(
                [os.path.join(s, name) for s in sources], os.path.join(dst, name), reach, name
            )
        self._copy_attributes(top, dst, top_st)
        if opaque and not _format.is_opaque(dst):
            os.setxattr(dst, self._opaque_xattr, b"y", follow_symlinks=False)

    def _merge_name(self, candidates: list[str], dst: str, below: list[str], name: str) -> None:
        """*dst* as the top-most of *candidates* (one per layer, top-most first) shows it.

        *below* are the directories under the squashed layers where the lookup of
        *name* goes on (empty when nothing below is reached).
        """
        dirs: list[str] = []
        for path in candidates:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode):
                if not dirs:
                    if _format.is_whiteout(path, st) and not _look_below(below, name)[0]:
                        return  # it hides nothing: left out (see squash_layers)
                    self._copy_entry(path, dst, st)  # the top-most entry is not a directory
                    return
                # A non-directory or whiteout under a directory ends the lookup there.
                self.merge_dir(dirs, dst, opaque=True, below=[])
                return
            dirs.append(path)
            if _format.is_opaque(path):
                self.merge_dir(dirs, dst, opaque=True, below=[])
                return
        self.merge_dir(dirs, dst, opaque=False, below=_look_below(below, name)[1])

    def _copy_entry(self, src: str, dst: str, st: os.stat_result) -> None:
        mode = st.st_mode
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self._links:
                os.link(self._links[key], dst)
                return
            _copy_file(src, dst, st)
            if st.st_nlink > 1:
                self._links[key] = dst
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(dst, 0o600)
        else:
            # Whiteouts (char 0/0), sockets, devices: as they are.
            os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
        self._copy_attributes(src, dst, st)

    def _copy_attributes(self, src: str, dst: str, st: os.stat_result) -> None:
        for name in _xattrs(src):
            if (
                name.startswith(_PRIVATE_PREFIXES)
                and name not in _format.OPAQUE_XATTRS
                and name not in _format.WHITEOUT_XATTRS
            ):
                continue
            os.setxattr(
                dst, name, os.getxattr(src, name, follow_symlinks=False), follow_symlinks=False
            )
        if os.geteuid() == 0:
            os.lchown(dst, st.st_uid, st.st_gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(dst, stat.S_IMODE(st.st_mode))
        with contextlib.suppress(OSError):
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
