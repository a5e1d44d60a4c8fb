"""Union semantics on plain directories, for the copy backend.

``materialize`` copies the union of lower layers (which may hold whiteouts and opaque
directories) into an ordinary directory and records a :class:`Baseline`: the identity of
every entry it created. ``diff_baseline`` later walks the directory and reports changes in
the same vocabulary, and by the same rules, as an overlayfs upper layer would give them;
``write_upper`` turns those changes into a real upper layer (char 0/0 whiteouts, opaque
xattrs) so the result can be stacked like any other layer.

Identity is (type, inode, ctime_ns, size): ctime moves on every write, chmod, utime, link
and rename, and cannot be set back by the test, so a same-size rewrite that restores
mtime is still seen. Size and mtime alone would miss it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import struct
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_overlay._errors import OverlayError, OverlayWarning
from pytest_overlay._layers import format as _format
from pytest_overlay._layers.changes import Change, ChangeKind, sort_changes
from pytest_overlay._linux.filecopy import FileCopier, copy_data

_FS_IOC_GETVERSION = 0x80087601  # linux/fs.h: the inode's generation number

#: (type, inode, ctime_ns, size, generation); generation is 0 for non-directories.
Identity = tuple[int, int, int, int, int]


def _generation(path: str) -> int:
    # rm -rf d; mkdir d often gets d's old inode number back on ext4; the generation
    # number tells the new directory from the old one, as overlayfs's opaque flag does.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return 0
    try:
        (generation,) = struct.unpack("l", fcntl.ioctl(fd, _FS_IOC_GETVERSION, bytes(8)))
        return int(generation)
    except OSError:
        return 0
    finally:
        os.close(fd)


def _identity(path: str, st: os.stat_result) -> Identity:
    kind = stat.S_IFMT(st.st_mode)
    generation = _generation(path) if kind == stat.S_IFDIR else 0
    return (kind, st.st_ino, st.st_ctime_ns, st.st_size, generation)


@dataclass
class Baseline:
    """What ``materialize`` created: identities by path and directory listings."""

    entries: dict[str, Identity] = field(default_factory=dict)
    children: dict[str, set[str]] = field(default_factory=dict)
    #: Whether regular files were cloned (reflinked) rather than copied byte by byte.
    reflinked: bool = False


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


class _Copier:
    def __init__(
        self, lowers: Sequence[Path], target: Path, baseline: Baseline | None = None
    ) -> None:
        self.lowers = [os.fspath(p) for p in lowers]
        self.target = os.fspath(target)
        self.baseline = Baseline() if baseline is None else baseline
        self.as_root = os.geteuid() == 0
        self.files = FileCopier()
        # Directories wait for their attributes until every file in them is written:
        # files are copied in threads, and a read-only mode would block them.
        self.dirs: list[tuple[str, str, os.stat_result]] = []

    def finish(self) -> None:
        """Wait for the queued file copies, then give directories their attributes."""
        self.files.close()
        self.baseline.reflinked |= self.files.cloned
        for rel, dest, st in reversed(self.dirs):  # children before parents
            self._attributes(dest, st)
            self.baseline.entries[rel] = _identity(dest, os.lstat(dest))
        self.dirs = []

    def _file_done(self, rel: str) -> Callable[[os.stat_result], None]:
        entries = self.baseline.entries

        def done(st: os.stat_result) -> None:
            entries[rel] = (stat.S_IFREG, st.st_ino, st.st_ctime_ns, st.st_size, 0)

        return done

    def _symlink_target(self, target: str, dest: str) -> str:
        # A link that leads into a lower layer would let writes through it reach the base:
        # point it at the same place inside the copy instead. Where it leads is asked of
        # the filesystem (realpath), not of the spelling: a link through another path to
        # the base (an alias symlink, or '..' up to / and down again) leads there too.
        if os.path.isabs(target):
            where = target
        else:
            where = os.path.normpath(os.path.join(os.path.dirname(dest), target))
            if where == self.target or where.startswith(self.target + os.sep):
                return target  # stays inside the copy
        real = os.path.realpath(where)
        for lower in self.lowers:
            if real == lower or real.startswith(lower + os.sep):
                return os.path.join(self.target, os.path.relpath(real, lower))
        return target

    def fill(self, rel: str, sources: list[str], dest: str) -> None:
        """Create in *dest* the union of directories *sources* (top-most first)."""
        found: dict[str, tuple[str, os.stat_result, list[str]] | None] = {}
        merging: dict[str, bool] = {}
        for source in sources:
            markers = _format.marker_names(source)
            with os.scandir(source) as it:
                for entry in it:
                    name = entry.name
                    if name in markers:
                        continue
                    st = entry.stat(follow_symlinks=False)
                    whiteout = _format.is_whiteout(entry.path, st)
                    if name not in found:
                        if whiteout:
                            found[name] = None
                            continue
                        is_dir = stat.S_ISDIR(st.st_mode)
                        found[name] = (entry.path, st, [entry.path])
                        merging[name] = is_dir and not _format.is_opaque(entry.path)
                        continue
                    current = found[name]
                    if current is None or not merging.get(name):
                        continue
                    if whiteout or not stat.S_ISDIR(st.st_mode):
                        merging[name] = False
                        continue
                    current[2].append(entry.path)
                    merging[name] = not _format.is_opaque(entry.path)
        names: set[str] = set()
        for name, item in found.items():
            if item is None:
                continue
            path, st, dirs = item
            child_rel = _join(rel, name)
            child_dest = os.path.join(dest, name)
            if not self._create(child_rel, path, st, dirs, child_dest):
                continue
            names.add(name)
        self.baseline.children[rel] = names

    def _create(self, rel: str, src: str, st: os.stat_result, dirs: list[str], dest: str) -> bool:
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(dest, 0o700)
            self.dirs.append((rel, dest, st))
            self.fill(rel, dirs, dest)
            return True
        if stat.S_ISREG(mode):
            self.files.copy(src, dest, st, self._file_done(rel))
            return True
        if stat.S_ISLNK(mode):
            os.symlink(self._symlink_target(os.readlink(src), dest), dest)
        elif stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
            # A new inode of the same type: nothing listens on a socket that is copied.
            os.mknod(dest, stat.S_IFMT(mode) | 0o600)
        else:
            try:
                os.mknod(dest, stat.S_IFMT(mode) | 0o600, st.st_rdev)
            except PermissionError:
                # Only root may make device nodes (deviation "device-nodes-need-root").
                warnings.warn(
                    f"the copy backend leaves out the device node {rel!r} of the base: only "
                    "root may create device nodes; run as root or use a mounting backend",
                    OverlayWarning,
                    stacklevel=2,
                )
                return False
        self._attributes(dest, st)
        self.baseline.entries[rel] = _identity(dest, os.lstat(dest))
        return True

    def _attributes(self, dest: str, st: os.stat_result) -> None:
        if self.as_root:
            os.lchown(dest, st.st_uid, st.st_gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(dest, stat.S_IMODE(st.st_mode))
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def materialize(lowers: Sequence[Path], target: Path) -> Baseline:
    """Copy the union of *lowers* (top-most first) into the empty directory *target*."""
    copier = _Copier(lowers, target)
    try:
        copier.fill("", copier.lowers, copier.target)
    except BaseException:
        copier.files.abandon()
        raise
    copier.finish()
    return copier.baseline


def diff_baseline(
    root: Path, baseline: Baseline, *, opened: dict[str, int] | None = None
) -> list[Change]:
    """Compare the tree at *root* with what ``materialize`` put there.

    A *root* the test deleted counts as emptied. With *opened* (at teardown, when the
    tree is about to be discarded), directories the test made unreadable are opened up
    to be compared, and their modes recorded there by relative path, for the upper
    layer; without it, such a directory raises PermissionError.
    """
    return sort_changes(_diff_dir(os.fspath(root), "", baseline, compare=True, opened=opened))


def _entries(directory: str, rel: str, opened: dict[str, int] | None) -> list[os.DirEntry[str]]:
    try:
        return _scandir(directory)
    except FileNotFoundError:
        if rel:
            raise
        return []  # the test removed merged itself: everything in it is gone
    except PermissionError:
        if opened is None:
            raise
        mode = stat.S_IMODE(os.lstat(directory).st_mode)
        os.chmod(directory, mode | stat.S_IRWXU)
        opened.setdefault(rel, mode)
        return _scandir(directory)


class HardLinked(Exception):
    """A file in the copy has a second link: a change tracker cannot follow it."""


def _diff_dir(
    directory: str,
    rel: str,
    baseline: Baseline,
    *,
    compare: bool,
    opened: dict[str, int] | None = None,
    links: bool = False,
) -> Iterator[Change]:
    entries = _entries(directory, rel, opened)
    for entry in entries:
        child = _join(rel, entry.name)
        st = entry.stat(follow_symlinks=False)
        if links and st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            raise HardLinked(child)
        ident = _identity(entry.path, st)
        before = baseline.entries.get(child) if compare else None
        if before is None:
            yield Change(ChangeKind.ADD, child)
            if stat.S_ISDIR(st.st_mode):
                yield from _diff_dir(
                    entry.path, child, baseline, compare=False, opened=opened, links=links
                )
            continue
        if not stat.S_ISDIR(st.st_mode):
            if ident != before:
                yield Change(ChangeKind.MODIFY, child)
            continue
        if before[0] != stat.S_IFDIR:
            # A file replaced by a directory: the new directory hides nothing below it.
            yield Change(ChangeKind.MODIFY, child)
            yield from _diff_dir(entry.path, child, baseline, compare=False, opened=opened)
            continue
        # Same inode: compare children one by one. A new inode is a directory removed and
        # made again, which overlayfs turns into an opaque directory: all children are new.
        recreated = ident[1] != before[1] or ident[4] != before[4]
        inner = list(_diff_dir(entry.path, child, baseline, compare=not recreated, opened=opened))
        present = {e.name for e in _scandir(entry.path)}
        gone = sorted(baseline.children.get(child, set()) - present)
        inner.extend(Change(ChangeKind.DELETE, _join(child, name)) for name in gone)
        if inner or ident != before:
            yield Change(ChangeKind.MODIFY, child)
            yield from inner
    if rel == "" and compare:
        present = {e.name for e in entries}
        for name in sorted(baseline.children.get("", set()) - present):
            yield Change(ChangeKind.DELETE, name)


def _scandir(path: str) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return list(it)


def opaque_dirs(root: Path, baseline: Baseline, changes: Sequence[Change]) -> set[str]:
    """Directories among *changes* that overlayfs would mark opaque (made over a deletion)."""
    result = set()
    for change in changes:
        if change.kind is not ChangeKind.MODIFY:
            continue
        path = os.fspath(root / change.path)
        st = os.lstat(path)
        before = baseline.entries.get(change.path)
        now = _identity(path, st)
        recreated = before is not None and (
            before[0] != stat.S_IFDIR or before[1] != now[1] or before[4] != now[4]
        )
        if stat.S_ISDIR(st.st_mode) and recreated:
            result.add(change.path)
    return result


def _opaque_xattr() -> str:
    # The name overlayfs itself reads for the mounts pytest-overlay makes as this user.
    return "trusted.overlay.opaque" if os.geteuid() == 0 else "user.overlay.opaque"


def write_upper(
    root: Path,
    baseline: Baseline,
    changes: Sequence[Change],
    upper: Path,
    *,
    move: bool = True,
    opened: dict[str, int] | None = None,
) -> None:
    """Put *changes* of the tree at *root* into the empty *upper*, as an overlayfs upper layer.

    With *move* (at unmount), entries are renamed, not copied: the tree at *root* is
    discarded afterwards, and a copy could run out of space exactly when a test has filled
    the disk. Without it (a live stack's upper, brought up to date), they are copied and
    *root* is left as it was. *opened* holds the modes of directories that were opened up
    to be read (see :func:`diff_baseline`); with *move*, directories opened here to move
    entries out of them are added to it.
    """
    opened = {} if opened is None else opened
    opaque = opaque_dirs(root, baseline, changes)
    dirs: list[tuple[Path, int, os.stat_result]] = []
    moved: list[str] = []
    for change in changes:
        if any(change.path.startswith(prefix) for prefix in moved):
            continue  # inside a new directory that was moved whole
        dest = upper / change.path
        if change.kind is ChangeKind.DELETE:
            if _inside(change.path, opaque):
                continue  # an opaque directory above hides it already, as in overlayfs
            try:
                os.mknod(dest, stat.S_IFCHR, os.makedev(0, 0))
            except PermissionError as exc:
                raise OverlayError(
                    f"cannot record the deletion of {change.path} as a whiteout (char device "
                    "0/0) in the copy backend's upper layer: this system does not let an "
                    "ordinary user create one; run as root or use a kernel backend"
                ) from exc
            continue
        src = root / change.path
        st = os.lstat(src)
        mode = opened.get(change.path, stat.S_IMODE(st.st_mode))
        if stat.S_ISDIR(st.st_mode) and change.kind is ChangeKind.MODIFY:
            os.mkdir(dest, 0o700)
            if change.path in opaque:
                os.setxattr(dest, _opaque_xattr(), b"y")
            dirs.append((dest, mode, st))
            continue
        if not move:
            _copy_entry(os.fspath(src), os.fspath(dest), st)
            if stat.S_ISDIR(st.st_mode):
                moved.append(change.path + "/")
            continue
        # Renaming out of a directory needs write permission on it, which a test may
        # have taken away; the tree at *root* is ours to change now.
        _writable_parent(root, change.path, opened)
        if stat.S_ISDIR(st.st_mode):
            # Moving a directory to another parent rewrites its '..': an ordinary user
            # needs write permission on it for that, even when the test took it away.
            os.chmod(src, mode | stat.S_IRWXU)
            os.rename(src, dest)
            moved.append(change.path + "/")
            dirs.append((dest, mode, st))
        else:
            os.rename(src, dest)
    if move:
        # Modes of directories inside moved ones that were opened up to be read: deepest
        # first, so that closing a parent does not block its children.
        for rel in sorted(opened, key=lambda r: r.count("/"), reverse=True):
            if rel and any(rel.startswith(prefix) for prefix in moved):
                os.chmod(upper / rel, opened[rel])
    # Directory modes and times last: making a read-only directory first would block
    # writing its children, and writing children would move its mtime.
    for dest, mode, st in reversed(dirs):
        os.chmod(dest, mode)
        with contextlib.suppress(OSError):
            os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))


def _writable_parent(root: Path, rel: str, opened: dict[str, int]) -> None:
    if os.geteuid() == 0:
        return  # root needs no permission bits
    parent_rel = rel.rpartition("/")[0]
    parent = root / parent_rel
    mode = stat.S_IMODE(os.lstat(parent).st_mode)
    if mode & stat.S_IRWXU != stat.S_IRWXU:
        opened.setdefault(parent_rel, mode)
        os.chmod(parent, mode | stat.S_IRWXU)


def _copy_entry(src: str, dest: str, st: os.stat_result) -> None:
    """Copy the entry *src* (a whole tree for a directory) to *dest*, keeping what a layer
    records: type, data, mode, owner (as root), symlink target, device number, user xattrs
    and mtime. Special files are made anew, never opened: opening a FIFO would block."""
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        os.mkdir(dest, 0o700)
        for entry in _scandir(src):
            _copy_entry(
                entry.path, os.path.join(dest, entry.name), entry.stat(follow_symlinks=False)
            )
    elif stat.S_ISREG(mode):
        with open(src, "rb") as fsrc, open(dest, "wb") as fdst:
            copy_data(fsrc.fileno(), fdst.fileno())
    elif stat.S_ISLNK(mode):
        os.symlink(os.readlink(src), dest)
    else:
        os.mknod(dest, mode, st.st_rdev)
    if os.geteuid() == 0:
        os.lchown(dest, st.st_uid, st.st_gid)
    follow = not stat.S_ISLNK(mode)
    with contextlib.suppress(OSError):
        for name in os.listxattr(src, follow_symlinks=False):
            if name.startswith("user."):
                value = os.getxattr(src, name, follow_symlinks=False)
                os.setxattr(dest, name, value, follow_symlinks=False)
    if follow:
        os.chmod(dest, stat.S_IMODE(mode))
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _inside(path: str, directories: set[str]) -> bool:
    """Whether one of *directories* is a proper ancestor of *path*."""
    parent = path
    while "/" in parent:
        parent = parent.rsplit("/", 1)[0]
        if parent in directories:
            return True
    return False
