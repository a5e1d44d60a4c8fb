"""Creating and removing the directories one mount needs: upper, work and merged."""

from __future__ import annotations

import contextlib
import errno
import os
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


def create_workspace(parent: Path | None, base_root: Path, prefix: str = "stack") -> Workspace:
    """Make a fresh workspace under *parent* (a new temporary directory when None).

    The upper root takes *base_root*'s mode and owner, because overlayfs shows the upper
    root's attributes as the merged root's: a bare mkdir would make the merged root
    look different from the base.
    """
    if parent is None:
        root = Path(tempfile.mkdtemp(prefix="pytest-overlay-"))
    else:
        parent.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=parent))
    root = root.resolve()
    space = Workspace(root, root / "upper", root / "work", root / "merged")
    for path in (space.upper, space.work, space.merged):
        path.mkdir()
    st = base_root.stat()
    if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
        # Only root may give a directory away; an ordinary user's upper stays theirs.
        with contextlib.suppress(PermissionError):
            os.chown(space.upper, st.st_uid, st.st_gid)
    os.chmod(space.upper, stat.S_IMODE(st.st_mode))
    return space


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


def clear_directory(path: Path) -> None:
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
    for sub in ("work", "work/work", "work/index"):
        _make_writable(str(root / sub))
    _rmtree(root)
