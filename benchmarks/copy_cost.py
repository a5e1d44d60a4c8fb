"""The copy backend's own costs: setting up a stack against ``shutil.copytree``, and the
per-example reset against the size of the base.

1. **Setup.** ``OverlayStack(..., backend="copy").mount()`` (the copy of the base) against
   ``shutil.copytree(base, dest, symlinks=True)`` of the same base into the same
   directory, interleaved, over bases of 10,000 and 50,000 files (10 KB each, 100 to a
   directory). Wall and CPU time (of this process, all threads) per copy; the copies are
   deleted between rounds, outside the timing.
2. **Reset.** A mounted copy stack appends one byte to one file and resets, over bases of
   100 and 10,000 files: the cost of ``reset()`` (which on the copy backend brings back
   what the example changed) per example.

    python benchmarks/copy_cost.py                  # 3 rounds; both parts
    python benchmarks/copy_cost.py --rounds 5 --files 10000 50000
    python benchmarks/copy_cost.py --workspace /dev/shm/x   # where copies and bases go

Medians over the rounds are reported; CPU time is ``time.process_time()``, which counts
the copy threads too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bases import PROBE_FILE, BaseSpec, ensure_base

from pytest_overlay import OverlayStack


def _timed(action: object) -> tuple[float, float]:
    assert callable(action)
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def setup_cost(base: Path, scratch: Path, rounds: int) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {"copytree": [], "copy backend": []}
    for _ in range(rounds):
        dest = scratch / "copytree"
        results["copytree"].append(
            _timed(lambda: shutil.copytree(base, dest, symlinks=True))  # noqa: B023
        )
        shutil.rmtree(dest)
        stack = OverlayStack([base], workspace=scratch, backend="copy")
        results["copy backend"].append(_timed(stack.mount))
        stack.close()
    return results


def reset_cost(base: Path, scratch: Path, examples: int) -> tuple[float, float]:
    with OverlayStack([base], workspace=scratch, backend="copy") as stack:
        probe = stack.merged / PROBE_FILE
        wall = cpu = 0.0
        for _ in range(examples):
            with probe.open("ab") as f:
                f.write(b"x")
            w, c = _timed(stack.reset)
            wall += w
            cpu += c
        assert probe.stat().st_size == (base / PROBE_FILE).stat().st_size
    return wall / examples, cpu / examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--files", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--reset-files", type=int, nargs="+", default=[100, 10_000])
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--workspace", type=Path, default=None)
    args = parser.parse_args()
    parent = args.workspace or Path(tempfile.gettempdir()) / "pytest-overlay-copy-cost"
    parent.mkdir(parents=True, exist_ok=True)
    print(f"cores: {os.cpu_count()}, workspace: {parent}")
    print("setup, median of rounds   wall s   cpu s")
    for files in args.files:
        base = ensure_base(BaseSpec(f"copy{files}", files), parent)
        with tempfile.TemporaryDirectory(dir=parent) as scratch:
            results = setup_cost(base, Path(scratch), args.rounds)
        for name, runs in results.items():
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(f"  {files:>6} files  {name:<13} {wall:7.3f}  {cpu:7.3f}")
        ratio = statistics.median(r[0] for r in results["copy backend"]) / statistics.median(
            r[0] for r in results["copytree"]
        )
        print(f"  {files:>6} files  copy/copytree wall ratio {ratio:.2f}")
    print("reset per example (append 1 byte to one file)   wall ms   cpu ms")
    for files in args.reset_files:
        base = ensure_base(BaseSpec(f"copy{files}", files), parent)
        with tempfile.TemporaryDirectory(dir=parent) as scratch:
            wall, cpu = reset_cost(base, Path(scratch), args.examples)
        print(f"  {files:>6} files  {wall * 1000:9.2f}  {cpu * 1000:8.2f}")


if __name__ == "__main__":
    main()
