"""The build cache on a fixture whose build writes 10,000 files: first run, hit, ``-n 2``.

A generated project has one session-scoped ``overlay_fixture(..., build=fn, cache=True)``
whose build writes 10,000 files of 1 KB (100 directories of 100), and TESTS tests that
each get a fresh union on it (a function-scoped ``overlay_fixture``). Rows:

- **first run**: empty cache; the build runs, its layer is copied into the cache;
- **hit**: the next run; the layer is verified (metadata digest) and mounted;
- **-n 2 first run / hit**: the same with two xdist workers; the builds are counted;
- **per test**: each test records the time as it starts; the span from the first test to
  the last over the tests in between is the per-test cost, on the freshly built layer
  (first run) and on the cached one (hit).

The fixture's setup time is the one ``-v`` prints in the build cache summary; CPU time is
the whole pytest process's (user + system, children included). Rounds are interleaved and
the median is reported.

    python benchmarks/build_cache.py             # 3 rounds
    python benchmarks/build_cache.py --rounds 5 --output results/build_cache.rst

Run it as root for the kernel backend, as an ordinary user for ``userns``.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = 50

CONFTEST = """
import time
from pathlib import Path
from pytest_overlay import overlay_fixture

def build(stack):
    with open(Path(__file__).parent / "builds.log", "a") as log:
        log.write("build\\n")
    data = b"x" * 1024
    for d in range(100):
        directory = stack.merged / "generated" / f"d{d:03}"
        directory.mkdir(parents=True)
        for f in range(100):
            (directory / f"f{f:03}.txt").write_bytes(data)

built = overlay_fixture("./base", scope="session", build=build, cache=True)
app = overlay_fixture("built")
"""

TEST = f"""
import os, time
import pytest

@pytest.mark.parametrize("n", range({TESTS}))
def test_one(app, n):
    with open(os.environ["STARTS"], "a") as f:
        f.write(f"{{time.perf_counter()}}\\n")
    assert (app.merged / "generated" / "d099" / "f099.txt").stat().st_size == 1024
    (app.merged / "generated" / "d000" / "f000.txt").write_text("changed")
"""


def make_project(root: Path) -> None:
    (root / "base").mkdir(parents=True)
    (root / "base" / "README").write_text("base\n")
    (root / "conftest.py").write_text(CONFTEST)
    (root / "test_cached.py").write_text(TEST)
    (root / "pytest.ini").write_text("[pytest]\n")


def run(root: Path, *args: str) -> dict[str, float]:
    starts = root / "starts.txt"
    starts.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:randomly", *args],
        cwd=root,
        env={**os.environ, "STARTS": str(starts)},
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(result.stdout + result.stderr)
    setups = [float(ms) for ms in re.findall(r"built: \w+ in ([0-9.]+) ms", result.stdout)]
    times = sorted(float(line) for line in starts.read_text().split())
    per_test = (times[-1] - times[0]) / (len(times) - 1) * 1000 if len(times) > 1 else 0.0
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "setup_ms": max(setups),
        "cpu_s": cpu,
        "wall_s": wall,
        "per_test_ms": per_test,
        "builds": float(len((root / "builds.log").read_text().split())),
    }


ROWS = ("first run", "hit", "-n 2 first run", "-n 2 hit")


def one_round(work: Path) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for workers in ((), ("-n", "2")):
        root = Path(tempfile.mkdtemp(dir=work))
        make_project(root)
        prefix = "-n 2 " if workers else ""
        found[prefix + "first run"] = run(root, *workers)
        found[prefix + "hit"] = run(root, *workers)
    return found


def table(rounds: list[dict[str, dict[str, float]]]) -> str:
    def med(row: str, field: str) -> float:
        return statistics.median(r[row][field] for r in rounds)

    head = (
        "fixture setup (ms)",
        "pytest CPU (s)",
        "wall (s)",
        "per test (ms)",
        "builds so far",
    )
    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "",
        "   * - run",
        *(f"     - {h}" for h in head),
    ]
    for row in ROWS:
        lines.append(f"   * - {row}")
        for field, fmt in (
            ("setup_ms", "{:.1f}"),
            ("cpu_s", "{:.2f}"),
            ("wall_s", "{:.2f}"),
            ("per_test_ms", "{:.2f}"),
            ("builds", "{:.0f}"),
        ):
            lines.append(f"     - {fmt.format(med(row, field))}")
    first, hit = med("first run", "setup_ms"), med("hit", "setup_ms")
    lines += ["", f"Setup on a hit: {hit:.1f} ms, {first / hit:.0f}x faster than the first run."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="build-cache-bench-") as work:
        rounds = [one_round(Path(work)) for _ in range(args.rounds)]
    text = table(rounds)
    print(text)
    if args.output:
        args.output.write_text(text)


if __name__ == "__main__":
    main()
