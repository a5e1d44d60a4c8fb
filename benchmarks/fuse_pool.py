"""Per-test cost of the fuse backend, with and without its pool of ready mounts, next to
the kernel backend: whole process, CPU and wall, N tests minus ``--collect-only``.

    python benchmarks/fuse_pool.py [--tests 200] [--rounds 3] [--sleep-ms 0] [--out DIR]
                                   [--before PYTHON]
    python benchmarks/fuse_pool.py --phases [--tests 200]

Each configuration is a generated pytest project whose N tests each append to one file of
a 100-file base, delete one, add one and read one through ``overlay_stack`` (then sleep
``--sleep-ms``, a test that waits on something, during which the pool's next mount can
get ready). Every run is
timed from the outside (wall, and user+system CPU of pytest and every child it reaped,
fuse-overlayfs daemons included); the same project with ``--collect-only`` is subtracted
and the difference divided by N. Rounds are interleaved; the median round is reported.
"Pool off" loads a conftest that turns ``FuseBackend.enable_pool`` into a no-op, which is
the fuse backend as it was before the pool. The kernel row needs root (as an ordinary
user the ``userns`` backend takes its place). ``--before`` names the Python of another
checkout (its venv, say one of ``git worktree add /tmp/old main~1``): the fuse rows are
then also run with it, interleaved in the same rounds, as "(before)" rows. Results go to a
scratch directory (printed) unless ``--out`` names one.

``--phases`` profiles instead, in this process (root, or an ordinary user in a user
namespace): N cycles of workspace, mount (pool on), the same file operations, unmount
and workspace removal through the fuse backend directly; the median wall time of each
phase, and CPU per cycle of this process and of its reaped children (the starter, its
daemons, the watcher).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST = """
import time
import pytest

@pytest.mark.overlay("base")
@pytest.mark.parametrize("i", range({n}))
def test_work(overlay_stack, i):
    m = overlay_stack.merged
    with open(m / "d0" / "f0", "a") as f:
        f.write("x")
    (m / "d0" / "f1").unlink()
    (m / "new").write_text("new")
    (m / "d0" / "f2").read_bytes()
    time.sleep({sleep})
"""

POOL_OFF = """
from pytest_overlay._backends.fuse import FuseBackend

FuseBackend.enable_pool = lambda self: None
"""


def make_project(root: Path, n: int, pool: bool, sleep: float) -> Path:
    root.mkdir(parents=True)
    base = root / "base"
    for d in range(10):
        (base / f"d{d}").mkdir(parents=True)
        for f in range(10):
            (base / f"d{d}" / f"f{f}").write_bytes(os.urandom(1024))
    (root / "test_bench.py").write_text(TEST.format(n=n, sleep=sleep))
    if not pool:
        (root / "conftest.py").write_text(POOL_OFF)
    return root


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user+system of the child and all it reaped) of *cmd*."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode not in (0, 5):
        raise SystemExit(f"{cmd} failed:\n{result.stdout}\n{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def phases(n: int) -> None:
    """Where one fuse stack's life goes, phase by phase, outside pytest."""
    from pytest_overlay._backends.fuse import FUSE
    from pytest_overlay._linux.workspace import create_workspace, remove_workspace

    reason = FUSE.probe()
    if reason:
        raise SystemExit(f"fuse does not work here: {reason}")
    root = Path(tempfile.mkdtemp(prefix="fuse-phases-", dir="/dev/shm"))
    base = make_project(root / "p", 0, True, 0) / "base"
    FUSE.enable_pool()
    names = ("workspace", "mount", "file ops", "unmount", "remove")
    times: dict[str, list[float]] = {name: [] for name in names}

    def cpu(who: int) -> float:
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    me, kids = cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN)
    for _ in range(n):
        marks = [time.perf_counter()]
        space = create_workspace(root, base)
        marks.append(time.perf_counter())
        FUSE.mount([base], space)
        marks.append(time.perf_counter())
        m = space.merged
        with open(m / "d0" / "f0", "a") as f:
            f.write("x")
        (m / "d0" / "f1").unlink()
        (m / "new").write_text("new")
        (m / "d0" / "f2").read_bytes()
        marks.append(time.perf_counter())
        FUSE.unmount(space)
        marks.append(time.perf_counter())
        remove_workspace(space.root)
        marks.append(time.perf_counter())
        for name, start, end in zip(names, marks[:-1], marks[1:], strict=True):
            times[name].append((end - start) * 1e3)
    FUSE.drain_pool()  # reaps the starter: its daemons' CPU counts from here
    me, kids = cpu(resource.RUSAGE_SELF) - me, cpu(resource.RUSAGE_CHILDREN) - kids
    print(
        f"{n} cycles, per cycle: CPU {me / n * 1e3:.2f} ms here, {kids / n * 1e3:.2f} ms children"
    )
    print("median ms: " + ", ".join(f"{k} {statistics.median(v):.3f}" for k, v in times.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sleep-ms", type=float, default=0.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--before", default=None, help="the Python of the code to compare")
    parser.add_argument("--phases", action="store_true", help="profile phases in-process")
    args = parser.parse_args()
    if args.phases:
        phases(args.tests)
        return
    out = args.out or Path(tempfile.mkdtemp(prefix="fuse-pool-bench-"))
    mounting = "kernel" if os.geteuid() == 0 else "userns"
    configs = {
        mounting: (mounting, True, sys.executable),
        "fuse, pool": ("fuse", True, sys.executable),
        "fuse, no pool": ("fuse", False, sys.executable),
    }
    if args.before:
        configs["fuse, pool (before)"] = ("fuse", True, args.before)
        configs["fuse, no pool (before)"] = ("fuse", False, args.before)
    scratch = Path(tempfile.mkdtemp(prefix="fuse-pool-projects-"))
    projects = {
        key: make_project(scratch / str(i), args.tests, pool, args.sleep_ms / 1e3)
        for i, (key, (_, pool, _)) in enumerate(configs.items())
    }
    per_test: dict[str, list[tuple[float, float]]] = {key: [] for key in configs}
    for _ in range(args.rounds):
        for key, (backend, _, python) in configs.items():
            cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
            cmd.append(f"--overlay-backend={backend}")
            wall_n, cpu_n = timed(cmd, projects[key])
            wall_0, cpu_0 = timed([*cmd, "--collect-only"], projects[key])
            per_test[key].append(((wall_n - wall_0) / args.tests, (cpu_n - cpu_0) / args.tests))
    rows = []
    kernel_wall = statistics.median(w for w, _ in per_test[mounting])
    kernel_cpu = statistics.median(c for _, c in per_test[mounting])
    print(f"{args.tests} tests sleeping {args.sleep_ms} ms, {args.rounds} rounds, per test:")
    print(f"{'':24} {'CPU ms':>8} {'x':>6} {'wall ms':>8} {'x':>6}")
    for key, samples in per_test.items():
        wall = statistics.median(w for w, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        rows.append({"config": key, "cpu_ms": cpu * 1e3, "wall_ms": wall * 1e3, "rounds": samples})
        print(
            f"{key:24} {cpu * 1e3:8.2f} {cpu / kernel_cpu:6.2f} "
            f"{wall * 1e3:8.2f} {wall / kernel_wall:6.2f}"
        )
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    result = {"tests": args.tests, "rows": rows, "loadavg": load}
    (out / "fuse_pool.json").write_text(json.dumps(result, indent=1))
    print(f"results: {out / 'fuse_pool.json'}")


if __name__ == "__main__":
    main()
