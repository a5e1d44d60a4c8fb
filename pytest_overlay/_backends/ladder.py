"""The mechanisms that can mount a union, behind one small protocol, and the ladder.

The built-in backends, best first: ``kernel`` (root), ``userns`` (an ordinary user in a
user namespace), ``fuse`` (fuse-overlayfs), ``copy`` (a portable copy of the base). Each is
chosen only after a real probe on this machine. Third parties add backends through the
``pytest_overlay_add_backends`` hook (see :mod:`pytest_overlay.hookspecs`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from pytest_overlay._errors import BackendUnavailable, OverlayError
from pytest_overlay._linux.workspace import Workspace
from pytest_overlay.changes import Change

#: The value of ``--overlay-backend`` that walks the ladder.
AUTO = "auto"

#: Every way a backend may knowingly differ from kernel overlayfs, in one place. A backend
#: lists the keys that apply to it in ``deviations``; the conformance tests read this table
#: to expect the difference, and docs/backends.rst shows it.
DEVIATIONS: dict[str, str] = {
    "dir-rename-allowed": "renaming a directory that comes from the base succeeds instead "
    "of failing with EXDEV",
    "open-without-write-unchanged": "opening a base file for writing without writing to "
    "it is not a change, nor (on tmpfs) is truncating an empty one to length 0; overlayfs "
    "copies it up and reports MODIFY",
    "not-a-mount-point": "merged is an ordinary directory, not a mount point",
    "no-dotdot-at-root": "reading the merged root directory lists no '..' entry (ls -a); "
    "os.listdir and os.scandir never show it anyway",
    "upper-filled-at-unmount": "upper stays empty while the stack is mounted and receives "
    "the changes when it is unmounted or a snapshot is taken; use changes() meanwhile",
    "wh-names-reserved": "names starting with '.wh.' are reserved: creating one fails "
    "(EINVAL) or the entry does not show, as fuse-overlayfs takes such files for whiteouts",
    "dir-over-looping-symlink": "a directory over a symlink that loops (ELOOP) in a base "
    "layer, put there by a higher layer or by the test after deleting the symlink, fails "
    "with ENOMEM (measured with fuse-overlayfs 1.10)",
    "dir-rename-uncovers": "renaming a directory made where a base entry was deleted "
    "brings the deleted entry back at the old name, or fails with EXDEV (measured with "
    "fuse-overlayfs 1.10)",
    "lower-hardlinks-shared": "names hard-linked to each other in a base layer stay one "
    "file: a write through one name shows under the others, and the upper layer may "
    "record it under another of the names (the base is untouched; overlayfs breaks the "
    "link on copy-up)",
    "changes-scan-whole-tree": "changes() walks the whole merged tree, so its cost grows "
    "with the size of the base",
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


def builtin_backends() -> list[Backend]:
    """The built-in ladder, best first. Imports lazily: most sessions need one rung."""
    from pytest_overlay._backends.copy import COPY
    from pytest_overlay._backends.fuse import FUSE
    from pytest_overlay._backends.kernel import ROOT_KERNEL, USERNS_KERNEL

    return [ROOT_KERNEL, USERNS_KERNEL, FUSE, COPY]


def backend_names(backends: Iterable[Backend] | None = None) -> list[str]:
    """``auto`` and the name of every backend, for messages and validation."""
    return [AUTO, *(b.name for b in (builtin_backends() if backends is None else backends))]


#: Given a backend, return a reason to refuse it, or None (a conftest's veto).
Veto = Callable[[Backend], "str | None"]
#: Given the candidates in ladder order (not yet probed), return the preferred one or None.
Chooser = Callable[[list[Backend]], "Backend | None"]


def _check(backend: Backend, veto: Veto | None) -> str:
    return (veto(backend) if veto else None) or backend.probe()


def select_backend(
    requested: str | Backend = AUTO,
    backends: Sequence[Backend] | None = None,
    *,
    veto: Veto | None = None,
    choose: Chooser | None = None,
) -> Backend:
    """Return the backend for *requested*, or raise :class:`BackendUnavailable` saying why.

    A name takes that rung or explains why it cannot work here. ``auto`` takes the rung
    *choose* prefers, else the best one that is not vetoed and probes fine; rungs below
    the first that works are never probed.
    """
    if not isinstance(requested, str):
        return requested
    ladder = sorted(builtin_backends() if backends is None else backends, key=lambda b: b.rank)
    if requested != AUTO:
        named = [b for b in ladder if b.name == requested]
        if not named:
            raise OverlayError(
                f"unknown overlay backend {requested!r}: choose one of "
                f"{', '.join(backend_names(ladder))}"
            )
        ladder = named
    elif choose is not None:
        candidates = [b for b in ladder if not (veto and veto(b))]
        preferred = choose(candidates)
        if preferred is not None:
            ladder = [preferred]
    reasons: list[tuple[str, str]] = []
    for backend in ladder:
        reason = _check(backend, veto)
        if not reason:
            return backend
        reasons.append((backend.name, reason))
    if requested != AUTO:
        raise BackendUnavailable(f"the {requested!r} backend cannot work here: {reasons[0][1]}")
    listing = "; ".join(f"{name}: {reason}" for name, reason in reasons)
    raise BackendUnavailable(f"no backend works here ({listing})")
