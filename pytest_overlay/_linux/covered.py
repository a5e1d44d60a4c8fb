"""A directory that a mount is about to cover, still reachable underneath the mount.

Once a union is mounted over its own lower directory X, the path X names the union:
reading the lower through it would read the union itself. A descriptor opened on X before
the mount keeps pointing at the covered directory, and ``/proc/self/fd/N`` (a magic link
the kernel follows to that directory, not a path looked up again) names it for the mount
syscalls, for fuse-overlayfs and for the code that reads the lower to list changes.

The process's working directory is the other thing a mount does not move: a process that
works inside X keeps working in the covered directory until it enters X again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import final


@final
class Covered:
    """The directory *path*, held open so that it stays reachable once covered."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # O_PATH: no read permission needed, and nothing is read through it.
        self._fd: int | None = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    @property
    def underneath(self) -> Path:
        """A path to the covered directory itself, valid in this process while open."""
        if self._fd is None:
            raise ValueError(f"{self.path} is no longer held open")
        return Path(f"/proc/self/fd/{self._fd}")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def cwd_inside(self) -> str | None:
        """The working directory relative to :attr:`path` if it lies there, else None."""
        try:
            cwd = os.getcwd()
        except OSError:  # deleted: the kernel still knows where it was
            try:
                cwd = os.readlink("/proc/self/cwd").removesuffix(" (deleted)")
            except OSError:
                return None
        prefix = os.fspath(self.path)
        if cwd == prefix:
            return "."
        if cwd.startswith(prefix + "/"):
            return cwd[len(prefix) + 1 :]
        return None

    def enter(self, relative: str) -> None:
        """Work at *relative* under :attr:`path` as the path now shows (through a mount
        just made, or on the real directory just uncovered), or its nearest existing parent.

        The path string is looked up again, so the process moves onto whatever is mounted
        there now; a directory the test made in the union may not exist underneath.
        """
        _chdir_nearest(self.path, relative)

    def step_under(self, relative: str) -> None:
        """Work at *relative* in the covered directory (or its nearest existing parent),
        so that the mount over it can go without being busy."""
        _chdir_nearest(self.underneath, relative)


def _chdir_nearest(root: Path, relative: str) -> None:
    target = root / relative
    for candidate in (target, *target.parents):
        if candidate != root and not candidate.is_relative_to(root):
            break
        try:
            os.chdir(candidate)
        except OSError:
            continue
        return
