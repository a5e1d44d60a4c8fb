"""Deep stacks: many base layers, and long chains of snapshots.

Run by ``run.py`` in a subprocess (it moves the process into a mount or user namespace):

    python benchmarks/depth_cost.py --workspace DIR --out F [--layers 100] [--depth 300]

- **many layers**: one mount + close cycle of an ``OverlayStack`` over *layers* small
  directories, against the raw mount of the same layers (``_linux.mount.mount_overlay``:
  the fsopen/fsconfig/fsmount calls, three mkdirs, umount, rmdirs), interleaved, CPU
  and wall per cycle, medians;
- **snapshot depth**: one stack; each step writes a file and takes a snapshot, so the
  chain grows by one layer a step. ``snapshot()`` and ``restore()`` (of the snapshot
  just taken, after one more write) are timed at depth ~15 and at depth ~*depth*, CPU
  and wall: each step of a window of 9 around each depth is taken again from the
  snapshot before it, the two windows in turn for *rounds* rounds, medians, and the
  number of layers the mount then stands on; and the mean of every ``snapshot()`` of
  the first pass over the first 30 steps and over the last 64 (the amortized cost:
  squashes included, which the medians of a window may leave out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_overlay import OverlayStack
from pytest_overlay._linux import mount as _mount
from pytest_overlay._linux import namespace as _namespace

#: Steps timed at each depth (the median is reported).
WINDOW = 9
#: Steps whose snapshot() the means cover: the first ones, and the last ones (one full
#: round of squashes into the bottom layer, 4 ** 3 snapshots).
FIRST, LAST = 30, 64


def _clock(func: Callable[[], object]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    func()
    return time.process_time() - cpu, time.perf_counter() - wall


def _median(pairs: list[tuple[float, float]]) -> dict[str, float]:
    return {
        "cpu": statistics.median(c for c, _ in pairs),
        "wall": statistics.median(w for _, w in pairs),
    }


def many_layers(root: Path, workspace: Path, layers: int, cycles: int) -> dict[str, Any]:
    dirs = []
    for i in range(layers):
        d = root / f"layer{i:03d}"
        d.mkdir(parents=True)
        (d / f"f{i}").write_text(str(i))
        dirs.append(d)
    raw_parent = workspace / "raw"
    raw_parent.mkdir(parents=True)
    flags = ("volatile",) if os.geteuid() == 0 else ("userxattr", "volatile")

    def raw() -> None:
        ws = raw_parent / "ws"
        upper, work, merged = ws / "upper", ws / "work", ws / "merged"
        for d in (ws, upper, work, merged):
            d.mkdir()
        with _namespace.mount_privileges():
            _mount.mount_overlay(dirs, upper, work, merged, flags=flags)
            _mount.unmount(merged)
        shutil.rmtree(ws, onerror=lambda *a: (os.chmod(work / "work", 0o700), shutil.rmtree(ws)))

    def stack() -> None:
        OverlayStack(dirs, workspace=workspace / "stacks").mount().close()

    stack()  # the first mount checks the layers: once per session, as in a pytest run
    times: dict[str, list[tuple[float, float]]] = {"raw": [], "stack": []}
    for _ in range(cycles):
        times["raw"].append(_clock(raw))
        times["stack"].append(_clock(stack))
    return {"layers": layers, **{k: _median(v) for k, v in times.items()}}


def snapshot_depth(base: Path, workspace: Path, depth: int, rounds: int) -> dict[str, Any]:
    base.mkdir(parents=True)
    for i in range(100):
        (base / f"b{i}").write_text("base")
    windows = {
        "shallow": range(15 - WINDOW // 2, 15 + WINDOW // 2 + 1),
        "deep": range(depth - WINDOW + 1, depth + 1),
    }
    # The state before each timed step, to step again from: the same chain, so the same
    # squashes, each time.
    keep = {step - 1 for window in windows.values() for step in window} | {depth}
    timed: dict[str, list[tuple[float, float]]] = {
        f"{op}_{where}": [] for op in ("snapshot", "restore") for where in windows
    }
    layers_at = {}
    every: list[tuple[float, float]] = []
    with OverlayStack([base], workspace=workspace) as stack:
        kept = {0: stack.base}
        for step in range(1, depth + 1):
            (stack.merged / f"s{step}").write_text(str(step))
            cpu, wall = time.process_time(), time.perf_counter()
            snap = stack.snapshot()
            every.append((time.process_time() - cpu, time.perf_counter() - wall))
            if step in keep:
                kept[step] = snap
        # The windows again and again, shallow and deep in turn, so that bursts of load
        # from other processes fall on both alike.
        for _ in range(rounds):
            for where, window in windows.items():
                for step in window:
                    stack.restore(kept[step - 1])
                    (stack.merged / f"s{step}").write_text(str(step))
                    cpu, wall = time.process_time(), time.perf_counter()
                    snap = stack.snapshot()
                    timed[f"snapshot_{where}"].append(
                        (time.process_time() - cpu, time.perf_counter() - wall)
                    )
                    (stack.merged / "scratch").write_text("thrown away")
                    cpu, wall = time.process_time(), time.perf_counter()
                    stack.restore(snap)
                    timed[f"restore_{where}"].append(
                        (time.process_time() - cpu, time.perf_counter() - wall)
                    )
                    layers_at[where] = len(stack.lowers)
        stack.restore(kept[depth])
        final = {p.name for p in stack.merged.iterdir()}
        expected = {f"b{i}" for i in range(100)} | {f"s{i}" for i in range(1, depth + 1)}
        if final != expected:
            raise SystemExit("the merged view after the snapshots is not what was written")
    result: dict[str, Any] = {"depth": depth, "rounds": rounds, "layers_at": layers_at}
    for key, pairs in timed.items():
        result[key] = _median(pairs)
    for key, pairs in (
        ("snapshot_mean_first", every[:FIRST]),
        ("snapshot_mean_last", every[-LAST:]),
    ):
        result[key] = {
            "cpu": statistics.fmean(c for c, _ in pairs),
            "wall": statistics.fmean(w for _, w in pairs),
            "steps": len(pairs),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--layers", type=int, default=100)
    parser.add_argument("--cycles", type=int, default=61)
    parser.add_argument("--depth", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    _namespace.enter()
    ws = args.workspace
    shutil.rmtree(ws, ignore_errors=True)
    ws.mkdir(parents=True)
    try:
        out = {
            "many_layers": many_layers(ws / "layers", ws / "ml", args.layers, args.cycles),
            "snapshots": snapshot_depth(ws / "base", ws / "snap", args.depth, args.rounds),
        }
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
