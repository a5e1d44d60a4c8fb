"""Start-up cost of the plugin for a suite that never uses it: CPU time of the whole process.

Runs a one-test project (no overlay fixture, marker, option or ini key) with the plugin
loaded and with ``-p no:overlay``, interleaved, many times, and prints the median CPU
time (user + system, the pytest process and every child it reaped, such as xdist workers
or a forked probe) of each and their ratio. CPU time rather than wall time: on a shared
machine other processes' load shows in wall time, far less in our own CPU time.

    python benchmarks/startup.py              # 41 rounds, plain and -n 2 (if xdist is there)
    python benchmarks/startup.py --repeat 101 --no-xdist
    python benchmarks/startup.py --pytest-args="-p no:rerunfailures"
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TEST = "def test_unrelated():\n    assert True\n"


def cpu_seconds(cmd: list[str], cwd: Path) -> float:
    """Run *cmd*; return the CPU seconds it and the children it waited for used."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    output = proc.stdout.read()
    # wait4 reports this child alone, including the grandchildren it reaped (workers).
    _, status, usage = os.wait4(proc.pid, 0)
    proc.stdout.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{output.decode(errors='replace')}")
    return usage.ru_utime + usage.ru_stime


def measure(project: Path, extra: list[str], repeat: int) -> dict[str, list[float]]:
    # Not -q: the report header is part of a normal run, and it used to probe.
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *extra]
    variants = {"with": base, "-p no:overlay": [*base, "-p", "no:overlay"]}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for round_no in range(repeat + 1):
        # Alternate the order too, so neither variant always runs after the other.
        order = list(variants.items())
        if round_no % 2:
            order.reverse()
        for key, cmd in order:
            seconds = cpu_seconds(cmd, project)
            if round_no:  # the first round only warms the caches
                times[key].append(seconds)
    return times


def report(label: str, times: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{label} ({len(times['with'])} rounds, CPU time of the whole process)")
    for key, values in times.items():
        low, _, high = statistics.quantiles(values, n=4)
        print(
            f"  {key:<15} median {med[key] * 1e3:7.1f} ms   "
            f"IQR {low * 1e3:.1f}-{high * 1e3:.1f} ms"
        )
    ratio = med["with"] / med["-p no:overlay"]
    difference = (med["with"] - med["-p no:overlay"]) * 1e3
    print(f"  ratio with / -p no:overlay: {ratio:.3f} ({difference:+.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=41)
    parser.add_argument("--no-xdist", action="store_true", help="skip the -n 2 runs")
    parser.add_argument("--pytest-args", default="", help="more pytest arguments, one string")
    args = parser.parse_args()
    extra = shlex.split(args.pytest_args)
    with tempfile.TemporaryDirectory(prefix="overlay-startup-") as scratch:
        project = Path(scratch)
        (project / "pytest.ini").write_text("[pytest]\n")
        (project / "test_one.py").write_text(TEST)
        report("one test, no plugin use", measure(project, extra, args.repeat))
        if not args.no_xdist and importlib.util.find_spec("xdist") is not None:
            rounds = max(5, args.repeat // 4)
            report("one test, -n 2", measure(project, [*extra, "-n", "2"], rounds))


if __name__ == "__main__":
    main()
