"""The portable copy backend: no mount at all, a private copy of the base per stack.

Used where nothing can mount (macOS, locked-down containers, kernels without unprivileged
overlayfs). Setup copies the union of the lowers (reflinks where the filesystem can
clone); :meth:`changes`, reading ``upper`` and teardown compare the copy with what was
copied. It is never a
hardlink farm: in-place writes and chmod through a hard link would reach the base.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import final

from pytest_overlay._backends import tracking
from pytest_overlay._backends.materialize import (
    Baseline,
    HardLinked,
    diff_baseline,
    materialize,
    write_upper,
)
from pytest_overlay._backends.revert import revert
from pytest_overlay._errors import OverlayError
from pytest_overlay._layers.changes import Change
from pytest_overlay._layers.statediff import touched, touched_by_changes
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
            "setup-copies-base",
        }
    )

    def __init__(self) -> None:
        self._baselines: dict[Path, Baseline] = {}
        self._trackers: dict[Path, tracking.Tracker] = {}

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
        self._trackers[space.root] = tracking.start(os.fspath(space.merged), baseline)

    def _changes(self, space: Workspace) -> list[Change]:
        """What the copy changes: only the touched paths are compared, while the change
        tracker can vouch for them; else the whole copy."""
        baseline = self._baseline(space)
        tracker = tracking.poll(self._trackers[space.root])
        if not tracker.lost:
            try:
                return tracking.diff_touched(os.fspath(space.merged), baseline, tracker.touched)
            except HardLinked:
                tracker.lost = True
        return diff_baseline(space.merged, baseline)

    def sync_upper(self, lowers: Sequence[Path], space: Workspace) -> None:
        """Make ``space.upper`` hold what the copy changes now, as overlayfs's would.

        Rewritten from scratch: the changes (see :meth:`changes`) plus a copy of each
        changed entry, so the cost grows with what changed.
        """
        baseline = self._baseline(space)
        clear_directory(space.upper)
        changes = self._changes(space)
        write_upper(space.merged, baseline, changes, space.upper, move=False)
        space.upper.chmod(space.merged.stat().st_mode & 0o7777)

    def restore_in_place(
        self, current: Sequence[Path], target: Sequence[Path], space: Workspace
    ) -> None:
        """Make the copy of *current* (as the test left it) a fresh copy of *target*.

        Only the paths the test changed and those held by the layers the two chains do
        not share are copied again or removed.
        """
        baseline = self._baseline(space)
        tree = touched_by_changes(self._changes(space))
        common = 0
        while (
            common < min(len(current), len(target)) and current[-1 - common] == target[-1 - common]
        ):
            common += 1
        touched(current[: len(current) - common], tree)
        touched(target[: len(target) - common], tree)
        made = revert(space.merged, target, baseline, tree)
        # The merged root looks like the new upper root, which copies the top layer.
        top = os.stat(target[0])
        space.merged.chmod(top.st_mode & 0o7777)
        os.utime(space.merged, ns=(top.st_atime_ns, top.st_mtime_ns))
        tracking.rebase(self._trackers[space.root], os.fspath(space.merged), made)

    def unmount(self, space: Workspace) -> bool:
        baseline = self._baseline(space)
        tracking.stop(self._trackers.pop(space.root))
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
        return self._changes(space)


COPY = CopyBackend()
