"""The portable copy backend: no mount at all, a private copy of the base per stack.

Used where nothing can mount (macOS, locked-down containers, kernels without unprivileged
overlayfs). Setup copies the union of the lowers (reflinks where the filesystem can
clone); :meth:`changes`, reading ``upper`` and teardown compare the copy with what was
copied. It is never a
hardlink farm: in-place writes and chmod through a hard link would reach the base.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import final

from pytest_overlay._backends.materialize import Baseline, diff_baseline, materialize, write_upper
from pytest_overlay._errors import OverlayError
from pytest_overlay._layers.changes import Change
from pytest_overlay._linux.workspace import Workspace, clear_directory


@final
class CopyBackend:
    name = "copy"
    rank = 90
    description = "a private copy of the base per stack (works everywhere, costs a copy)"
    deviations = frozenset(
        {
            "dir-rename-allowed",
            "added-dirs-not-opaque",
            "device-nodes-need-root",
            "open-without-write-unchanged",
            "not-a-mount-point",
            "changes-scan-whole-tree",
            "setup-copies-base",
        }
    )

    def __init__(self) -> None:
        self._baselines: dict[Path, Baseline] = {}

    def __repr__(self) -> str:
        return "<CopyBackend>"

    def probe(self) -> str:
        return ""

    def activate(self) -> None:
        return None

    def _baseline(self, space: Workspace) -> Baseline:
        try:
            return self._baselines[space.root]
        except KeyError:
            raise OverlayError(f"no copy is mounted at {space.merged}") from None

    def mount(self, lowers: Sequence[Path], space: Workspace) -> None:
        try:
            baseline = materialize(lowers, space.merged)
        except BaseException as exc:
            clear_directory(space.merged)
            if isinstance(exc, PermissionError):
                raise OverlayError(
                    f"the copy backend cannot read {exc.filename} in the base "
                    f"({exc.strerror}): it copies every entry, so make the base readable "
                    "to this user, or use a mounting backend, which shows unreadable "
                    "entries as they are"
                ) from exc
            raise
        # The merged root looks like the upper root, as on a real overlay mount.
        space.merged.chmod(space.upper.stat().st_mode & 0o7777)
        self._baselines[space.root] = baseline

    def sync_upper(self, lowers: Sequence[Path], space: Workspace) -> None:
        """Make ``space.upper`` hold what the copy changes now, as overlayfs's would.

        Rewritten from scratch: a scan of the copy (like :meth:`changes`) plus a copy of
        each changed entry, so the cost grows with the tree and with what changed.
        """
        baseline = self._baseline(space)
        clear_directory(space.upper)
        changes = diff_baseline(space.merged, baseline)
        write_upper(space.merged, baseline, changes, space.upper, move=False)
        space.upper.chmod(space.merged.stat().st_mode & 0o7777)

    def unmount(self, space: Workspace) -> bool:
        baseline = self._baseline(space)
        # The copy is discarded after this: directories the test made unreadable are
        # opened up to be compared, and keep their modes in the upper layer.
        opened: dict[str, int] = {}
        changes = diff_baseline(space.merged, baseline, opened=opened)
        # Leave a real upper layer behind, so the result stacks like a kernel one. A
        # sync_upper may have filled it with copies since: start again from empty.
        clear_directory(space.upper)
        write_upper(space.merged, baseline, changes, space.upper, opened=opened)
        del self._baselines[space.root]
        try:
            mode = opened.get("", space.merged.stat().st_mode & 0o7777)
        except FileNotFoundError:
            # The test deleted merged itself (on a mount only its contents would go):
            # the upper records that, and the workspace gets its mount point back.
            space.merged.mkdir()
        else:
            # The root is never a change in the list; its mode lives on the upper root,
            # as overlayfs keeps it after a chmod of the merged root.
            space.upper.chmod(mode)
            clear_directory(space.merged)
        return True

    def changes(self, lowers: Sequence[Path], space: Workspace) -> list[Change]:
        return diff_baseline(space.merged, self._baseline(space))


COPY = CopyBackend()
