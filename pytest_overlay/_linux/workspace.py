"""Creating and removing the directories one mount needs: upper, work and merged."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    root: Path
    upper: Path
    work: Path
    merged: Path


def safe_name(name: str, limit: int, fallback: str) -> str:
    """*name* (a test id, say) as a short directory name: other characters become '_'."""
    return re.sub(r"[^\w.-]", "_", name)[:limit] or fallback


def create_workspace(parent: Path | None, base_root: Path, prefix: str = "stack") -> Workspace:
    """Make a fresh workspace under *parent* (a new temporary directory when None).

    The upper root takes *base_root*'s mode and owner, because overlayfs shows the upper
    root's attributes as the merged root's: a bare mkdir would make the merged root
    look different from the base.
    """
    # One call per test: plain os calls on str paths, no pathlib round trips.
    if parent is None:
        root = os.path.realpath(tempfile.mkdtemp(prefix="pytest-overlay-"))
    else:
        root = _numbered_dir(_resolved_parent(parent), prefix)
    upper, work, merged = root + "/upper", root + "/work", root + "/merged"
    os.mkdir(upper)
    os.mkdir(work)
    os.mkdir(merged)
    st = os.stat(base_root)
    copy_owner(upper, st)
    os.chmod(upper, stat.S_IMODE(st.st_mode))
    return Workspace(Path(root), Path(upper), Path(work), Path(merged))


# Numbers for workspace names, in this process. tempfile.mkdtemp draws 8 random letters
# through its own generator per call, which costs more than the mkdir itself here.
_numbers = itertools.count()


def _numbered_dir(parent: str, prefix: str) -> str:
    """A new directory ``<prefix>-<pid>-<n>`` under *parent*, mode 0700 like mkdtemp's."""
    while True:
        path = f"{parent}/{prefix}-{os.getpid()}-{next(_numbers)}"
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:  # left by an earlier process that had this pid
            continue
        return path


# chown refuses with EPERM when this process may not give the file away, and with EINVAL
# when the id is not mapped in its user namespace (it shows as 65534 there).
_CANNOT_CHOWN = (errno.EPERM, errno.EINVAL)


def copy_owner(path: str | Path, st: os.stat_result) -> None:
    """Give *path* the owner and group of *st* as far as this process may.

    Root may give it away. An ordinary user may still give it one of their own groups
    (outside a user namespace). Inside one, ids other than the user's own are not mapped
    and nobody can chown to them: *path* keeps the user's ids then.
    """
    uid, gid = os.geteuid(), os.getegid()
    if (st.st_uid, st.st_gid) == (uid, gid):
        return
    try:
        os.chown(path, st.st_uid, st.st_gid)
    except OSError as exc:
        if exc.errno not in _CANNOT_CHOWN:
            raise
        if st.st_uid == uid or st.st_gid == gid:
            return  # what was asked for was the one change left to try
        try:
            os.chown(path, -1, st.st_gid)
        except OSError as again:
            if again.errno not in _CANNOT_CHOWN:
                raise


# parent as given -> (its real path, (st_dev, st_ino)): resolving a deep basetemp costs
# one lstat per component, every test; a stat of the parent confirms the cached answer.
_parents: dict[str, tuple[str, tuple[int, int]]] = {}


def _resolved_parent(parent: Path) -> str:
    key = os.fspath(parent)
    try:
        st = os.stat(key)
    except FileNotFoundError:
        os.makedirs(key, exist_ok=True)
        st = os.stat(key)
    cached = _parents.get(key)
    if cached is not None and cached[1] == (st.st_dev, st.st_ino):
        return cached[0]
    real = os.path.realpath(key)
    _parents[key] = (real, (st.st_dev, st.st_ino))
    return real


def _make_writable(path: str) -> None:
    with contextlib.suppress(OSError):
        mode = os.lstat(path).st_mode
        if stat.S_ISDIR(mode):
            os.chmod(path, stat.S_IMODE(mode) | stat.S_IRWXU)


def _on_error(func: object, path: str, exc: BaseException) -> None:
    # overlayfs leaves work/work at mode 000 after unmount, and tests may leave read-only
    # directories in the upper layer: open the parent and the entry up, then retry once.
    if not isinstance(exc, PermissionError) and getattr(exc, "errno", None) != errno.EACCES:
        if isinstance(exc, FileNotFoundError):
            return
        raise exc
    _make_writable(os.path.dirname(path))
    _make_writable(path)
    if os.path.isdir(path) and not os.path.islink(path):
        _rmtree(path)
    else:
        os.unlink(path)


def _rmtree(path: str | Path) -> None:
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_on_error)
    else:
        shutil.rmtree(path, onerror=lambda f, p, e: _on_error(f, p, e[1]))


def clear_directory(path: str | Path) -> None:
    """Delete everything inside *path*, keeping the directory itself."""
    with os.scandir(path) as it:
        entries = list(it)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _rmtree(entry.path)
        else:
            try:
                os.unlink(entry.path)
            except PermissionError as exc:
                _on_error(os.unlink, entry.path, exc)


def remove_workspace(root: Path) -> None:
    """Delete a workspace tree, whatever modes the kernel or the test left in it."""
    text = os.fspath(root)
    try:
        _remove_unmounted_workspace(text)
    except OSError:
        # Anything but the usual layout (a missing piece, frozen layers, leftovers in the
        # work directory, a read-only directory from the test): the general way below.
        pass
    else:
        return
    for sub in ("work", "work/work", "work/index"):
        _make_writable(os.path.join(text, sub))
    _rmtree(text)


#: What overlayfs leaves in a work directory after unmount, deepest first: ``work/work``
#: (mode 000), and for a ``volatile`` mount ``incompat/volatile/dirty`` (fs/overlayfs/
#: super.c, ovl_create_volatile_dirty). A volatile mount also leaves its temporary
#: ``#<hex>`` entries in ``work/work`` (the next mount would have cleaned them up).
_WORK_DIRS = ("work/incompat/volatile", "work/incompat", "work")
_WORK_FILES = ("work/incompat/volatile/dirty",)


def _remove_unmounted_workspace(root: str) -> None:
    """The fast path: exactly what :func:`create_workspace` made plus what the kernel adds.

    Names the entries instead of walking the tree, so a workspace costs its rmdir calls
    and little more. Raises OSError at the first surprise, leaving the rest to rmtree.
    """
    os.rmdir(root + "/merged")
    work = root + "/work/"
    if os.geteuid() != 0:
        # An ordinary user needs write and search permission on the mode-000 directories.
        for name in reversed(_WORK_DIRS):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(work + name, stat.S_IRWXU)
    for name in _WORK_FILES:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(work + name)
    for name in _WORK_DIRS:
        try:
            os.rmdir(work + name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY or name != "work":
                raise
            clear_directory(work + name)
            os.rmdir(work + name)
    os.rmdir(work)
    upper = root + "/upper"
    clear_directory(upper)
    os.rmdir(upper)
    os.rmdir(root)
