"""Bringing a copy back to a state of its layers by redoing only what differs.

The copy backend's reset: the paths that can differ between the copy now and the union
of the target layers are those the test changed (from the change tracker) and those the
layers that differ hold (frozen snapshot layers, small). Each such path is copied again
from the target union, or removed; directories that stayed get their attributes back and
are only entered where something below them differs. The cost grows with what changed,
never with the base. The baseline is brought along, so it describes the copy again.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from pytest_overlay._backends.materialize import Baseline, _Copier, _generation
from pytest_overlay._layers import format as _format
from pytest_overlay._layers.statediff import Touched
from pytest_overlay._linux.workspace import remove_workspace


def revert(root: Path, lowers: Sequence[Path], baseline: Baseline, tree: Touched) -> list[str]:
    """Make the copy at *root* show the union of *lowers* again, at the paths in *tree*.

    Returns the directories it made (to be watched).
    """
    copier = _Copier(lowers, root, baseline)
    kept: set[str] = set()
    try:
        _reconcile(copier, kept, "", copier.target, copier.lowers, tree)
    except BaseException:
        copier.files.abandon()
        raise
    made = [rel for rel, _, _ in copier.dirs if rel not in kept]
    copier.finish()
    return made


def _lookup(sources: list[str], name: str) -> tuple[str, os.stat_result, list[str]] | None:
    """The entry *name* in the union of directories *sources*, as ``_Copier.fill`` sees it."""
    found: tuple[str, os.stat_result, list[str]] | None = None
    for source in sources:
        path = f"{source}/{name}"
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if name in _format.marker_names(source):
            continue
        whiteout = _format.is_whiteout(path, st)
        if found is None:
            if whiteout:
                return None
            found = (path, st, [path])
            if not stat.S_ISDIR(st.st_mode) or _format.is_opaque(path):
                return found
            continue
        if whiteout or not stat.S_ISDIR(st.st_mode):
            return found
        found[2].append(path)
        if _format.is_opaque(path):
            return found
    return found


def _purge(baseline: Baseline, rel: str) -> None:
    for name in baseline.children.pop(rel, ()):
        _purge(baseline, f"{rel}/{name}")
    baseline.entries.pop(rel, None)


def _reconcile(
    copier: _Copier, kept: set[str], rel: str, directory: str, sources: list[str], node: Touched
) -> None:
    baseline = copier.baseline
    if not copier.as_root:
        os.chmod(directory, stat.S_IRWXU)  # its own mode comes back in finish()
    names = baseline.children.setdefault(rel, set())
    for name, sub in node.children.items():
        child = f"{rel}/{name}" if rel else name
        path = f"{directory}/{name}"
        try:
            now: os.stat_result | None = os.lstat(path)
        except FileNotFoundError:
            now = None
        found = _lookup(sources, name)
        before = baseline.entries.get(child)
        if (
            not sub.complete
            and now is not None
            and found is not None
            and stat.S_ISDIR(now.st_mode)
            and stat.S_ISDIR(found[1].st_mode)
            and before is not None
            and before[0] == stat.S_IFDIR
            and before[1] == now.st_ino
            and before[4] == _generation(path)
        ):
            # The same directory: only what differs below it is redone.
            kept.add(child)
            copier.dirs.append((child, path, found[1]))
            _reconcile(copier, kept, child, path, found[2], sub)
            continue
        if now is not None:
            if stat.S_ISDIR(now.st_mode):
                remove_workspace(Path(path))
            else:
                os.unlink(path)
        _purge(baseline, child)
        names.discard(name)
        if found is not None and copier._create(child, found[0], found[1], found[2], path):
            names.add(name)
