"""Cost of ``OverlayStack.changes()`` (and snapshot, restore, diff when they exist).

Run by ``run.py`` in a subprocess (it moves the process into a mount or user namespace):

    python benchmarks/changes_cost.py --base DIR --files N --workspace DIR --changed 0 1 10 --out F

For each number k of changed files, a fresh stack is mounted and k files of the base get one
byte appended; ``changes()`` is timed a few times on it, and snapshot, diff and restore once
per fresh stack (see _snapshot_ops), a few stacks per k; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bases import relpaths

from pytest_overlay import OverlayStack
from pytest_overlay._linux import namespace as _namespace


def _median_time(func: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _touch(merged: Path, files: list[str], count: int) -> None:
    # The first *count* files in base order (100 per directory), so the same count
    # changes the same entries whatever the size of the base.
    for rel in files[:count]:
        with open(merged / rel, "ab") as f:
            f.write(b"x")


def _snapshot_ops(stack: Any, files: list[str], count: int) -> dict[str, float]:
    """One pass of snapshot, diff and restore over *count* changed files, each timed once.

    On a stack whose upper holds *count* changed files: ``stack.diff()`` (content-level,
    live view against the base), ``stack.snapshot()`` (freezes them into a layer),
    ``stack.base.diff(snapshot)`` (base against the frozen state), then *count* more
    changes and ``stack.restore(snapshot)`` (throws them away).
    """
    clock = time.perf_counter
    out: dict[str, float] = {}
    start = clock()
    stack.diff()
    out["diff"] = clock() - start
    start = clock()
    snap = stack.snapshot()
    out["snapshot"] = clock() - start
    start = clock()
    stack.base.diff(snap)
    out["snapshot diff"] = clock() - start
    _touch(stack.merged, files, count)
    start = clock()
    stack.restore(snap)
    out["restore"] = clock() - start
    return out


def measure(
    base: Path, files_in_base: int, workspace: Path, changed: list[int], repeat: int
) -> dict[str, Any]:
    _namespace.enter()
    files = relpaths(files_in_base)
    rows: list[dict[str, Any]] = []
    has_snapshot = all(hasattr(OverlayStack, a) for a in ("snapshot", "restore", "diff"))
    error = ""
    for count in changed:
        if count > len(files):
            continue
        row: dict[str, Any] = {"changed_files": count}
        passes: list[dict[str, float]] = []
        # Snapshot and restore change the stack, so each pass needs a fresh one.
        for attempt in range(repeat if count <= 1000 else 1):
            with OverlayStack([base], workspace=workspace) as stack:
                _touch(stack.merged, files, count)
                if attempt == 0:
                    seconds, result = _median_time(stack.changes, repeat)
                    assert isinstance(result, list)
                    row.update(entries=len(result), changes=seconds)
                if has_snapshot and not error:
                    try:
                        passes.append(_snapshot_ops(stack, files, count))
                    except Exception as exc:  # an API this script does not know
                        error = f"{type(exc).__name__}: {exc}"
        for key in passes[0] if passes else ():
            row[key] = statistics.median(p[key] for p in passes)
        rows.append(row)
    if not has_snapshot:
        note = "OverlayStack.snapshot, restore and diff do not exist in this version"
    else:
        note = f"snapshot, diff and restore failed: {error}" if error else ""
    return {"base_files": len(files), "rows": rows, "snapshot_note": note}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--files", type=int, required=True, help="files in the base")
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--changed", type=int, nargs="+", required=True)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    data = measure(args.base, args.files, args.workspace, args.changed, args.repeat)
    args.out.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
