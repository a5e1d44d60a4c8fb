"""Which test wrote what into a protected path: per-test deltas of the session's upper layer.

``--overlay-protect`` keeps one union per path for the whole session (no remount per test).
After each test, the upper layer's change list is compared with the one seen after the
previous test; what is new or different since is what this test wrote. A file written
again is told apart by its upper-layer inode, ctime and size (any write or chmod changes
the ctime). The cost is one walk of the upper layer per test, which holds only what the
suite wrote, not the size of the protected tree.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pytest_overlay._layers.changes import Change, ChangeKind

#: What identifies one state of an upper-layer entry: its kind of change and its stat.
_Signature = tuple[str, tuple[int, ...] | None]


class Scanner:
    """The changes of one upper layer seen so far, to tell what each test added to them.

    *ignored* says of a path relative to the protected directory whether to leave it out
    (byte-code caches, and the files pytest itself writes for real).
    """

    def __init__(self, ignored: Callable[[str], bool]) -> None:
        self._ignored = ignored
        self._seen: dict[str, _Signature] = {}
        self._dirs: set[str] = set()

    def delta(self, changes: Sequence[Change], upper: Path) -> list[str]:
        """Lines (``A build/``, ``M data.json``, ``D old``) for what changed since last time."""
        now: dict[str, _Signature] = {}
        dirs: set[str] = set()
        for change in changes:
            if self._ignored(change.path):
                continue
            try:
                st = os.lstat(upper / change.path)
            except OSError:
                st = None
            is_dir = st is not None and stat.S_ISDIR(st.st_mode)
            if is_dir and change.kind is ChangeKind.MODIFY:
                # A lower directory copied up because something inside it changed: its
                # own contents are listed, the directory itself is no change of the test.
                continue
            if is_dir:
                dirs.add(change.path)
            signature: tuple[int, ...] | None = None
            if st is not None:
                # A directory's ctime moves whenever an entry is added to it: only its
                # mode counts, or every later write inside would be listed against it.
                signature = (
                    (st.st_mode,)
                    if is_dir
                    else (st.st_ino, st.st_ctime_ns, st.st_size, st.st_mode)
                )
            now[change.path] = (change.kind.value, signature)
        lines = [
            _line(kind, path, path in dirs)
            for path, (kind, signature) in now.items()
            if self._seen.get(path) != (kind, signature)
        ]
        # Gone from the upper layer altogether: something an earlier test added, removed.
        lines.extend(
            _line("D", path, path in self._dirs) for path in self._seen if path not in now
        )
        self._seen, self._dirs = now, dirs
        return lines


def _line(kind: str, path: str, is_dir: bool) -> str:
    return f"{kind} {path}{'/' if is_dir else ''}"


#: Byte-code caches: the interpreter writes them wherever it imports from.
_BYTECODE = ("__pycache__", "*.pyc")
#: Coverage.py's data files (``.coverage``, and ``.coverage.<host>.<pid>...`` in parallel).
_COVERAGE = (".coverage", ".coverage.*")


def is_bytecode(path: str) -> bool:
    return any(fnmatch.fnmatch(part, p) for part in path.split("/") for p in _BYTECODE)


def is_coverage_data(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name, p) for p in _COVERAGE)


def under(path: str, prefixes: Iterable[str]) -> bool:
    """Whether *path* is one of *prefixes* or lies inside one (all relative, POSIX)."""
    return any(path == p or path.startswith(p + "/") for p in prefixes)


#: Lines listed per test and path in the summary; the rest are counted.
LISTED = 30


def summary(entries: Sequence[tuple[str, str, str]], protected: Sequence[str]) -> list[str]:
    """The terminal summary's lines from *entries* ``(path, test, line)``, grouped by
    protected path, then by test in the order they ran."""
    out: list[str] = []
    for root in protected:
        by_test: dict[str, list[str]] = {}
        for path, test, line in entries:
            if path == root:
                by_test.setdefault(test, []).append(line)
        if not by_test:
            out.append(f"{root}: nothing written")
            continue
        count = sum(len(lines) for lines in by_test.values())
        out.append(f"{root}: {count} change{'s' if count != 1 else ''} (not on disk)")
        for test, lines in by_test.items():
            out.append(f"  {test}")
            out.extend(f"    {line}" for line in lines[:LISTED])
            if len(lines) > LISTED:
                out.append(f"    ... and {len(lines) - LISTED} more")
    return out
