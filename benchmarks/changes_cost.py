"""Cost of ``OverlayStack.changes()`` (and snapshot, restore, diff when they exist).

Run by ``run.py`` in a subprocess (it moves the process into a mount or user namespace):

    python benchmarks/changes_cost.py --base DIR --files N --workspace DIR --changed 0 1 10 --out F

For each number k of changed files, a fresh stack is mounted, k files of the base get one
byte appended, and each operation is timed a few times; the median is reported.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bases import relpaths

from pytest_overlay import OverlayStack, _namespace


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


def _snapshot_ops(stack: Any, repeat: int) -> dict[str, float | str]:
    """Time snapshot, diff and restore through whatever API the stack offers."""
    out: dict[str, float | str] = {}
    snapshot = stack.snapshot
    seconds, snap = _median_time(snapshot, 1)
    out["snapshot"] = seconds
    diff = getattr(snap, "diff", None)
    if callable(diff):
        params = inspect.signature(diff).parameters
        if params:
            # Compare with the live stack, or with the stack's base, whichever it takes.
            seconds, _ = _median_time(lambda: diff(stack), repeat)
        else:
            seconds, _ = _median_time(diff, repeat)
        out["diff"] = seconds
    restore = getattr(stack, "restore", None) or getattr(snap, "restore", None)
    if callable(restore):
        takes_arg = bool(inspect.signature(restore).parameters)
        seconds, _ = _median_time(lambda: restore(snap) if takes_arg else restore(), 1)
        out["restore"] = seconds
    return out


def measure(
    base: Path, files_in_base: int, workspace: Path, changed: list[int], repeat: int
) -> dict[str, Any]:
    _namespace.enter()
    files = relpaths(files_in_base)
    rows: list[dict[str, Any]] = []
    has_snapshot = hasattr(OverlayStack, "snapshot")
    for count in changed:
        if count > len(files):
            continue
        with OverlayStack([base], workspace=workspace) as stack:
            _touch(stack.merged, files, count)
            seconds, result = _median_time(stack.changes, repeat)
            assert isinstance(result, list)
            row: dict[str, Any] = {
                "changed_files": count,
                "entries": len(result),
                "changes": seconds,
            }
            if has_snapshot:
                try:
                    row.update(_snapshot_ops(stack, repeat))
                except Exception as exc:  # an API this script does not know yet
                    row["snapshot_error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
    note = "" if has_snapshot else "OverlayStack.snapshot does not exist in this version"
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
