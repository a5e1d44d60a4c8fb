"""Knowing what a copy-backend test changed without walking the copy.

Each copy is watched with inotify, one watch per directory of the base (one instance for
the whole process, shared by every copy). An event names the entry it concerns, so the
paths a test created, deleted, renamed, wrote, opened or changed the attributes of are
known; :func:`diff_touched` compares only those (and the directories above them) with
the :class:`~pytest_overlay._backends.materialize.Baseline`, by the same rules as a full
:func:`~pytest_overlay._backends.materialize.diff_baseline`. Its cost grows with what the
test touched, not with the base.

What inotify cannot tell, and what is done then (the tracker is *lost* and the next look
is a full walk, as before): the event queue overflowed; a watch could not be added
(``max_user_watches``); a watched directory was renamed or the copy's root removed (the
watch then stands for another path); a file with a second hard link is met (a write
through a link made elsewhere reaches only that link's directory). Not seen at all: a
hard link made to a base file, written through and removed again between two looks.
Writes through a shared mapping send no event, but the file was opened for them, and
opened files are looked at on every later look.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable, Iterator

from pytest_overlay._backends.materialize import Baseline, HardLinked, _diff_dir, _identity
from pytest_overlay._layers.changes import Change, ChangeKind, sort_changes
from pytest_overlay._linux import inotify


class Tracker:
    """The paths touched under one copy since its baseline was taken."""

    def __init__(self) -> None:
        self.touched: set[str] = set()
        self.lost = False
        #: Set for good when a directory could not be watched.
        self.blind = False
        self.wds: dict[int, str] = {}


class _Hub:
    """The process's one inotify instance and the trackers its watches belong to."""

    def __init__(self) -> None:
        self._inotify: inotify.Inotify | None = None
        self._failed = False
        self._owners: dict[int, Tracker] = {}
        # Stacks of several threads share the instance. A poll must hold it from read to
        # dispatch: otherwise another thread could have taken this thread's events off the
        # queue and not yet filed them, and a changes() would miss a write made before it.
        self.lock = threading.Lock()

    def _instance(self) -> inotify.Inotify | None:
        if self._inotify is None and not self._failed:
            try:
                self._inotify = inotify.Inotify()
            except OSError:
                self._failed = True  # EMFILE: max_user_instances; full walks then
        return self._inotify

    def watch(self, tracker: Tracker, root: str, rels: Iterable[str]) -> None:
        instance = self._instance()
        if instance is None:
            tracker.lost = tracker.blind = True
            return
        for rel in rels:
            try:
                wd = instance.watch(f"{root}/{rel}" if rel else root)
            except OSError:
                tracker.lost = tracker.blind = True  # ENOSPC: max_user_watches
                return
            tracker.wds[wd] = rel
            self._owners[wd] = tracker

    def poll(self) -> None:
        if self._inotify is None:
            return
        for wd, mask, name in self._inotify.read():
            if mask & inotify.IN_Q_OVERFLOW:
                for each in set(self._owners.values()):
                    each.lost = True
                continue
            tracker = self._owners.get(wd)
            if tracker is None:
                continue
            if mask & inotify.IN_IGNORED:
                del self._owners[wd]
                tracker.wds.pop(wd, None)
                continue
            rel = tracker.wds.get(wd)
            if rel is None:
                continue
            if mask & inotify.IN_MOVE_SELF or (mask & inotify.IN_DELETE_SELF and not rel):
                tracker.lost = True  # the watch no longer stands for rel
            if name:
                tracker.touched.add(f"{rel}/{name}" if rel else name)
            elif rel:
                tracker.touched.add(rel)

    def drop(self, tracker: Tracker) -> None:
        for wd in tracker.wds:
            self._owners.pop(wd, None)
            if self._inotify is not None:
                self._inotify.unwatch(wd)
        tracker.wds.clear()
        if not self._owners and self._inotify is not None:
            # No copy is watched any more: no descriptor stays open behind the last stack.
            self._inotify.close()
            self._inotify = None


_HUB = _Hub()

#: Touched paths as a tree of names.
_Tree = dict[str, "_Tree"]


def start(root: str, baseline: Baseline) -> Tracker:
    """Watch every directory of the fresh copy at *root*."""
    tracker = Tracker()
    with _HUB.lock:
        _HUB.watch(tracker, root, baseline.children)
    return tracker


def poll(tracker: Tracker) -> Tracker:
    """*tracker*, with every event queued until now taken in."""
    with _HUB.lock:
        _HUB.poll()
    return tracker


def rebase(tracker: Tracker, root: str, new_dirs: Iterable[str]) -> None:
    """Forget what was touched (the copy matches its baseline again); watch *new_dirs*."""
    with _HUB.lock:
        _HUB.poll()  # our own events, from bringing the copy back
        tracker.touched.clear()
        tracker.lost = tracker.blind
        _HUB.watch(tracker, root, new_dirs)


def stop(tracker: Tracker) -> None:
    with _HUB.lock:
        _HUB.drop(tracker)


def diff_touched(root: str, baseline: Baseline, paths: Iterable[str]) -> list[Change]:
    """What :func:`diff_baseline` would say, if only *paths* (and whatever lies under the
    new or recreated directories among them) can differ from *baseline*.

    Raises :class:`HardLinked` on a file with more than one link (see the module's doc).
    """
    tree: _Tree = {}
    for path in paths:
        node = tree
        for name in path.split("/"):
            node = node.setdefault(name, {})
    return sort_changes(_walk(root, "", baseline, tree))


def _walk(directory: str, rel: str, baseline: Baseline, tree: _Tree) -> Iterator[Change]:
    for name, sub in tree.items():
        child = f"{rel}/{name}" if rel else name
        path = f"{directory}/{name}"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            if child in baseline.entries:
                yield Change(ChangeKind.DELETE, child)
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        if not is_dir and st.st_nlink > 1:
            raise HardLinked(child)
        before = baseline.entries.get(child)
        if before is None:
            yield Change(ChangeKind.ADD, child)
            if is_dir:
                yield from _diff_dir(path, child, baseline, compare=False, links=True)
            continue
        ident = _identity(path, st)
        if not is_dir:
            if ident != before:
                yield Change(ChangeKind.MODIFY, child)
            continue
        if before[0] != stat.S_IFDIR:
            yield Change(ChangeKind.MODIFY, child)
            yield from _diff_dir(path, child, baseline, compare=False, links=True)
            continue
        if ident[1] != before[1] or ident[4] != before[4]:
            # Removed and made again: opaque, every child is new (as in diff_baseline).
            inner = list(_diff_dir(path, child, baseline, compare=False, links=True))
            present = set(os.listdir(path))
            gone = sorted(baseline.children.get(child, set()) - present)
            inner.extend(Change(ChangeKind.DELETE, f"{child}/{n}") for n in gone)
        else:
            inner = list(_walk(path, child, baseline, sub))
        if inner or ident != before:
            yield Change(ChangeKind.MODIFY, child)
            yield from inner
