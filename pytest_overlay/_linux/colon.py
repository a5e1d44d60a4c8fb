"""A colon-free home for the workspaces when the basetemp's path holds a ':'.

fuse-overlayfs resolves its ``upperdir`` with realpath(3) and then splits the result on
':' with no escape, so a workspace under ``--basetemp=/tmp/a:b`` cannot be mounted. A
symlink or ``/proc/self/fd/N`` does not help: realpath sees through both. The workspaces
then live in a directory of their own under the system's temporary directory, made by
mkdtemp (mode 0700, created exclusively, so nobody can plant it in advance), and
``<basetemp>/overlay`` becomes a symlink to it, so they are still found from the basetemp.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from pytest_overlay._errors import OverlayError

#: The name every such directory starts with; the start-up sweep removes only these.
PREFIX = "pytest-overlay-colon-"


def has_colon(path: Path) -> bool:
    return ":" in os.path.realpath(path)


def move_out(root: Path) -> Path:
    """Replace the empty directory *root* by a symlink to a new colon-free directory.

    Returns the new directory, where the workspaces are to be made.
    """
    parent = os.path.realpath(tempfile.gettempdir())
    if ":" in parent:
        parent = "/tmp"
    if ":" in os.path.realpath(parent) or not os.path.isdir(parent):
        raise OverlayError(
            f"fuse-overlayfs cannot use the workspace directory {root}: its path holds a ':' "
            f"and so does the temporary directory {parent}: use a --basetemp without ':', "
            "or set TMPDIR to a directory without one"
        )
    home = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
    os.rmdir(root)
    os.symlink(home, root)
    return Path(home)


def owned_home(link: Path) -> Path | None:
    """The directory *link* points to, if it is one :func:`move_out` made for this user."""
    try:
        if not stat.S_ISLNK(os.lstat(link).st_mode):
            return None
        target = Path(os.readlink(link))
        st = os.lstat(target)
    except OSError:
        return None
    if not target.is_absolute() or not target.name.startswith(PREFIX):
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return None
    return target


def remove_home(home: Path) -> None:
    """Delete a directory :func:`move_out` made; what cannot be removed stays."""
    with contextlib.suppress(OSError):
        shutil.rmtree(home)
