"""The Backend protocol every way of mounting a union implements, and the names it uses.

Its own module so that the backends, the probe and the ladder can all name it without
importing one another.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    # Names in signatures only: the plugin imports this module at start-up, and a
    # session that never mounts should not load the change and workspace code.
    from pytest_overlay._layers.changes import Change
    from pytest_overlay._linux.workspace import Workspace

#: The value of ``--overlay-backend`` that walks the ladder.
AUTO = "auto"

#: Every way a backend may knowingly differ from kernel overlayfs, in one place. A backend
#: lists the keys that apply to it in ``deviations``; the conformance tests read this table
#: to expect the difference, and docs/backends.rst shows it.
DEVIATIONS: dict[str, str] = {
    "dir-rename-allowed": "renaming a directory that comes from the base behaves as on a "
    "plain filesystem (it succeeds, or fails with ENOTEMPTY onto a non-empty directory) "
    "instead of failing with EXDEV",
    "failed-rename-copies-up": "a directory rename that fails (ENOTEMPTY) still copies up "
    "the parent of the destination, so changes() lists that directory as modified "
    "(measured with fuse-overlayfs 1.10)",
    "special-file-chmod-fails": "chmod of a FIFO or socket that comes from the base fails "
    "with EIO (measured with fuse-overlayfs 1.10)",
    "device-nodes-need-root": "device nodes in the base are left out of the merged view, "
    "with an OverlayWarning, unless the process may create them (root)",
    "open-without-write-unchanged": "opening a base file for writing without writing to "
    "it is not a change, nor (on tmpfs) is truncating an empty one to length 0; overlayfs "
    "copies it up and reports MODIFY",
    "added-dirs-not-opaque": "a new directory renamed into place is not marked opaque in "
    "the upper layer, where overlayfs marks it; no base layer holds its path, so nothing "
    "that a reader or a later stack sees differs",
    "not-a-mount-point": "merged is an ordinary directory, not a mount point",
    "no-dotdot-at-root": "reading the merged root directory lists no '..' entry (ls -a); "
    "os.listdir and os.scandir never show it anyway",
    "wh-names-reserved": "names starting with '.wh.' are reserved: creating one fails "
    "(EINVAL) or the entry does not show, as fuse-overlayfs takes such files for whiteouts; "
    "one made by link() or symlink() shows until snapshot() and is gone after it",
    "dir-over-looping-symlink": "a directory over a symlink that loops (ELOOP) in a base "
    "layer, put there by a higher layer or by the test after deleting the symlink, fails "
    "with ENOMEM, and so does listing its parent: a stack whose base holds such a symlink "
    "under a directory may have an unlistable root from the start (measured with "
    "fuse-overlayfs 1.10)",
    "dir-rename-uncovers": "renaming a directory made where a base entry was deleted "
    "brings the deleted entry back at the old name, or fails with EXDEV (measured with "
    "fuse-overlayfs 1.10)",
    "lower-hardlinks-shared": "names hard-linked to each other in a base layer stay one "
    "file: a write or chmod through one name shows under the others, and the upper layer "
    "may record it under another of the names; unlinking or renaming one name makes "
    "changes() report the others as modified, and renaming one linked name onto another "
    "does nothing (the base is untouched; overlayfs breaks the link on copy-up)",
    "setup-copies-base": "setting up copies the base, so its cost grows with the size of "
    "the base (reflinks make it cheaper where the filesystem supports them)",
}


@runtime_checkable
class Backend(Protocol):
    """Mounts and unmounts unions of lower layers over a workspace.

    ``mount`` must show the lowers (top-most first, possibly holding whiteouts and opaque
    directories themselves) under ``space.upper`` at ``space.merged``; after ``unmount``,
    ``space.upper`` must hold the changes as an overlayfs upper layer (char 0/0 whiteouts,
    opaque xattrs), so it can serve as a lower layer of a later mount.
    """

    #: Short name: the value of ``--overlay-backend`` and of ``OverlayStack.backend``.
    name: str
    #: Position on the ladder: lower is preferred by ``auto``.
    rank: int
    #: One line for ``--overlay-info`` and the report header.
    description: str
    #: Keys of :data:`DEVIATIONS` that apply to this backend.
    deviations: frozenset[str]

    def probe(self) -> str:
        """Return "" if this backend works here, else why not and how to enable it."""

    def activate(self) -> None:
        """Prepare the process, early and single-threaded, when the session will mount."""

    def mount(self, lowers: Sequence[Path], space: Workspace) -> None:
        """Show *lowers* under ``space.upper`` at ``space.merged``."""

    def unmount(self, space: Workspace) -> bool:
        """Take the union down; return False if it was busy and was detached lazily."""

    def changes(self, lowers: Sequence[Path], space: Workspace) -> list[Change]:
        """What the mounted union changes relative to *lowers*."""


@runtime_checkable
class SyncsUpper(Protocol):
    """A backend whose upper layer is written on request, not by a filesystem as it goes.

    :attr:`OverlayStack.upper <pytest_overlay.OverlayStack.upper>` calls ``sync_upper``
    before handing the path out, so a test sees the same upper layer on every backend.
    """

    def sync_upper(self, lowers: Sequence[Path], space: Workspace) -> None:
        """Bring ``space.upper`` up to date with the mounted union of *lowers*."""


@runtime_checkable
class RestoresInPlace(Protocol):
    """A backend that can turn its mounted union into a fresh one of other layers without
    taking it down (the copy: redoing only what differs beats copying the base again).

    :meth:`OverlayStack.restore <pytest_overlay.OverlayStack.restore>` (and ``reset``)
    calls ``restore_in_place`` instead of unmounting and mounting; on ``OSError`` or
    ``OverlayError`` it unmounts and mounts as for any backend.
    """

    def restore_in_place(
        self, current: Sequence[Path], target: Sequence[Path], space: Workspace
    ) -> None:
        """Make the union of *current* at ``space.merged`` show *target* on an empty upper."""
