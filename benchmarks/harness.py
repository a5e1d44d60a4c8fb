"""Running one generated pytest project in a subprocess and reading back what it measured."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from configs import Config, write_project


@dataclass
class Run:
    config: str
    tests: int
    #: setup + call + teardown of each passed test, seconds.
    per_test: list[float]
    #: Wall time of the whole pytest process, seconds.
    wall: float
    #: Peak resident memory of the pytest process, bytes.
    max_rss: int
    outcome: str
    detail: str = ""
    #: Workspace directories left under basetemp after the session (should be 0).
    leftovers: int = 0
    #: CPU time (user + system) of the whole pytest process, seconds.
    cpu: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "passed"

    @property
    def median(self) -> float:
        return statistics.median(self.per_test)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.per_test)


def repo_root() -> Path:
    """The checkout whose pytest_overlay is measured (``BENCH_REPO`` overrides it)."""
    return Path(os.environ.get("BENCH_REPO") or Path(__file__).resolve().parent.parent)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    # Let Python cache bytecode, as after a pip install: otherwise every run compiles the
    # package (and the generated projects) from source again, and start-up looks slower.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTEST_ADDOPTS", None)
    # The benchmark runs from a checkout: let the children import pytest_overlay from it.
    repo = str(repo_root())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH")) if p)
    return env


def run_process(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, float, int]:
    """Run *cmd*; return (exit code, output, wall seconds, peak RSS in bytes)."""
    code, output, wall, rss, _ = run_process_cpu(cmd, cwd, env)
    return code, output, wall, rss


def run_process_cpu(
    cmd: list[str], cwd: Path, env: dict[str, str]
) -> tuple[int, str, float, int, float]:
    """:func:`run_process`, plus the child's CPU time (user + system, seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    output = proc.stdout.read().decode(errors="replace")
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would mix all children).
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    cpu = usage.ru_utime + usage.ru_stime
    return proc.returncode, output, wall, usage.ru_maxrss * 1024, cpu


def _count_leftovers(basetemp: Path) -> int:
    overlay_root = basetemp / "overlay"
    if not overlay_root.is_dir():
        return 0
    return sum(1 for _ in overlay_root.iterdir())


def run_config(
    config: Config, base: Path, tests: int, scratch: Path, *, collect_only: bool = False
) -> Run:
    """Run *tests* tests of *config* over *base* in a fresh project under *scratch*.

    With *collect_only*, pytest collects the same tests and runs none: the process's
    start-up, collection and shutdown, to subtract from a full run's wall and CPU time.
    """
    project = scratch / f"project-{config.key}"
    if project.exists():
        shutil.rmtree(project)
    write_project(config, base, project)
    basetemp = scratch / f"basetemp-{config.key}"
    out = project / "result.json"
    env = child_env()
    env["BENCH_N"] = str(tests)
    env["BENCH_OUT"] = str(out)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    for plugin in config.plugins:
        cmd += ["-p", plugin]
    cmd += [*config.args, f"--basetemp={basetemp}"]
    if collect_only:
        cmd.append("--collect-only")
    code, output, wall, rss, cpu = run_process_cpu(cmd, project, env)
    try:
        data = json.loads(out.read_text())
    except (OSError, ValueError):
        data = {"tests": {}}
    leftovers = _count_leftovers(basetemp)
    shutil.rmtree(basetemp, ignore_errors=True)
    shutil.rmtree(project, ignore_errors=True)
    per_test, outcome, detail = [], "passed", ""
    for entry in data["tests"].values():
        if entry["outcome"] != "passed":
            outcome, detail = entry["outcome"], entry.get("detail", "")
            continue
        per_test.append(sum(entry["phases"].values()))
    if code not in (0, 5) and outcome == "passed":
        outcome, detail = "error", output[-2000:]
    if collect_only:
        if code not in (0, 5):
            outcome, detail = "error", output[-2000:]
        return Run(config.key, tests, [], wall, rss, outcome, detail, leftovers, cpu)
    if tests and not per_test and outcome == "passed":
        outcome, detail = "error", output[-2000:]
    return Run(config.key, tests, per_test, wall, rss, outcome, detail, leftovers, cpu)
