"""Per-example cost of the reset in a Hypothesis ``@given`` test, against no reset at all.

Each example appends one byte to one file of the base (a copy-up of a 10 KB file). The
same test body runs on two fixtures: ``overlay_stack`` (function-scoped: pytest-overlay
resets it before every example, a remount on a fresh upper layer) and a module-scoped
stack from ``overlay_stack_factory`` (wider scopes are never reset, so every example
shares one union). Both run with workspaces on the private tmpfs and on the disk
(``--overlay-workspace=disk``), over bases of 100 and 10,000 files.

Each example records the process's CPU time (user + system, so the mount and unmount
system calls count) and the wall time as it starts; the cost per example is the span from
the first example to the last divided by the examples in between. That leaves out
pytest's start-up and the fixtures' setup and teardown, which would drown a millisecond
in process-level noise, and keeps everything that happens between two examples: the
reset, Hypothesis drawing the next input, the body. Rounds are interleaved and the
median of all rounds is reported.

    python benchmarks/reset_cost.py                 # 5 rounds of 300 examples
    python benchmarks/reset_cost.py --rounds 9 --examples 1000
    python benchmarks/reset_cost.py --backend copy  # any --overlay-backend value

Run it as root for the kernel backend, as an ordinary user for ``userns``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bases import LARGE, PROBE_FILE, SMALL, BaseSpec, ensure_base

CONFTEST = '''
import pytest

@pytest.fixture(scope="module")
def shared(overlay_stack_factory, request):
    """One union for the whole module: never reset between examples."""
    stack = overlay_stack_factory.mount([request.config.getini("overlay_base")[0]])
    yield stack
    stack.close()
'''

TEST = f'''
import os
import time
from pathlib import Path
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

EXAMPLES = int(os.environ["RESET_COST_EXAMPLES"])
COUNT = Path(os.environ["RESET_COST_COUNT"])
RUN = settings(
    max_examples=EXAMPLES, database=None, deadline=None, phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)

def touch(stack):
    with COUNT.open("a") as f:
        f.write(f"{{time.process_time()}} {{time.perf_counter()}}\\n")
    with open(stack.merged / "{PROBE_FILE}", "ab") as f:
        f.write(b"x")

@RUN
@given(st.integers(0, 10**9))
def test_reset(overlay_stack, n):
    touch(overlay_stack)

@RUN
@given(st.integers(0, 10**9))
def test_no_reset(shared, n):
    touch(shared)
'''


@dataclass(frozen=True)
class Variant:
    label: str
    test: str
    workspace: str


VARIANTS = (
    Variant("reset, tmpfs", "test_reset", "tmpfs"),
    Variant("no reset, tmpfs", "test_no_reset", "tmpfs"),
    Variant("reset, disk", "test_reset", "disk"),
    Variant("no reset, disk", "test_no_reset", "disk"),
)


def run(project: Path, variant: Variant, examples: int, backend: str) -> tuple[float, float]:
    """Run one variant; return the CPU and wall seconds per example."""
    count = project / "count"
    count.write_text("")
    env = dict(os.environ, RESET_COST_EXAMPLES=str(examples), RESET_COST_COUNT=str(count))
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "-p", "no:rerunfailures", "-p", "no:xdist", "-k", variant.test,
        f"--overlay-workspace={variant.workspace}", f"--overlay-backend={backend}",
        f"--basetemp={project / 'basetemp'}",
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout.decode(errors='replace')}")
    marks = [tuple(map(float, line.split())) for line in count.read_text().splitlines()]
    (cpu_first, wall_first), (cpu_last, wall_last) = marks[0], marks[-1]
    between = len(marks) - 1
    return (cpu_last - cpu_first) / between, (wall_last - wall_first) / between


def measure(
    base: Path, examples: int, rounds: int, backend: str, scratch: Path
) -> dict[str, tuple[list[float], list[float]]]:
    """Per variant: the per-example CPU and wall seconds of every round."""
    project = scratch / f"project-{base.name}"
    project.mkdir()
    (project / "pytest.ini").write_text(f"[pytest]\noverlay_base = {base}\n")
    (project / "conftest.py").write_text(CONFTEST)
    (project / "test_reset_cost.py").write_text(TEST)
    # The copy backend keeps a whole copy of the base in its workspace: never on tmpfs.
    variants = [v for v in VARIANTS if backend != "copy" or v.workspace == "disk"]
    slopes: dict[str, tuple[list[float], list[float]]] = {v.label: ([], []) for v in variants}
    for round_no in range(rounds + 1):
        order = variants if round_no % 2 else variants[::-1]
        for variant in order:
            cpu, wall = run(project, variant, examples, backend)
            if round_no:  # the first round only warms the caches
                slopes[variant.label][0].append(cpu)
                slopes[variant.label][1].append(wall)
    return slopes


def report(spec: BaseSpec, slopes: dict[str, tuple[list[float], list[float]]]) -> None:
    rounds = len(next(iter(slopes.values()))[0])
    print(f"\nbase: {spec.label} (per example, median of {rounds} rounds)")
    print(f"  {'':<17} {'CPU':>9} {'wall':>9}   CPU range")
    median = {k: (statistics.median(c), statistics.median(w)) for k, (c, w) in slopes.items()}
    for label, (cpu, _) in slopes.items():
        c, w = median[label]
        spread = f"{min(cpu) * 1e3:.2f}-{max(cpu) * 1e3:.2f} ms"
        print(f"  {label:<17} {c * 1e3:6.2f} ms {w * 1e3:6.2f} ms   {spread}")
    for workspace in ("tmpfs", "disk"):
        if f"reset, {workspace}" not in median:
            continue
        (rc, rw), (nc, nw) = median[f"reset, {workspace}"], median[f"no reset, {workspace}"]
        print(
            f"  reset on {workspace:<5}: x{rc / nc:.2f} CPU, x{rw / nw:.2f} wall; "
            f"the reset itself {(rc - nc) * 1e3:+.2f} ms CPU, {(rw - nw) * 1e3:+.2f} ms wall"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--examples", type=int, default=300, help="examples per run")
    parser.add_argument("--backend", default="auto", help="--overlay-backend value")
    parser.add_argument(
        "--bases",
        default=os.path.join(tempfile.gettempdir(), "overlay-bench-bases"),
        help="where the generated bases are kept between runs",
    )
    args = parser.parse_args()
    Path(args.bases).mkdir(parents=True, exist_ok=True)
    print(f"uid {os.getuid()}, backend {args.backend}, {args.examples} examples per run")
    with tempfile.TemporaryDirectory(prefix="overlay-reset-cost-") as scratch:
        for spec in (SMALL, LARGE):
            base = ensure_base(spec, Path(args.bases))
            slopes = measure(base, args.examples, args.rounds, args.backend, Path(scratch))
            report(spec, slopes)


if __name__ == "__main__":
    main()
