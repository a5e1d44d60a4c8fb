"""Where the per-test time of ``overlay_stack`` goes: cProfile over 1,000 tests, CPU clock.

Runs pytest in this process on a generated project (a 100-file base, 1,000 parametrized
tests that each append one byte to one base file through ``overlay_stack``), under
``cProfile.Profile(time.process_time)``, and prints a Markdown table of the cumulative
CPU time per test of the plugin's steps and of pytest's own. cProfile roughly doubles the
cost of Python calls: read the shares, not the absolute figures. Root (kernel backend)
or an ordinary user (``--backend userns``).

    python benchmarks/profile_overhead.py
    python benchmarks/profile_overhead.py --tests 2000 --backend userns
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path

#: (file name, function name) -> the row's label, in the order printed.
ROWS = {
    ("plugin.py", "overlay_stack"): "overlay_stack fixture (setup + teardown)",
    ("factory.py", "mount"): "factory.mount",
    ("stack.py", "__init__"): "OverlayStack() (layer checks, cached)",
    ("stack.py", "mount"): "OverlayStack.mount",
    ("workspace.py", "create_workspace"): "create_workspace (4 mkdir, stat, owner and mode)",
    ("kernel.py", "mount"): "KernelBackend.mount",
    ("kernel.py", "check_upper_filesystem"): "  upper filesystem check",
    ("mount.py", "_mount_new_api"): "  fsopen/fsconfig/fsmount/move_mount",
    ("stack.py", "close"): "OverlayStack.close",
    ("kernel.py", "unmount"): "  umount2",
    ("workspace.py", "remove_workspace"): "  workspace removal",
    ("plugin.py", "pytest_runtest_makereport"): "per-test report hook (3 reports a test)",
    ("plugin.py", "pytest_runtest_call"): "per-test call hook",
    ("fixtures.py", "execute"): "pytest fixture machinery, all fixtures (cumulative)",
    ("runner.py", "pytest_runtest_protocol"): "pytest per-test protocol (cumulative)",
}

TEST = """\
import pytest


@pytest.mark.parametrize("i", range({tests}))
def test_write(i, overlay_stack):
    with open(overlay_stack.merged / "f1", "ab") as f:
        f.write(b"x")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--backend", default="kernel")
    args = parser.parse_args()
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    import pytest

    with tempfile.TemporaryDirectory(prefix="overlay-profile-") as scratch:
        root = Path(scratch)
        base = root / "base"
        base.mkdir()
        for n in range(100):
            (base / f"f{n}").write_bytes(b"x" * 10240)
        project = root / "project"
        project.mkdir()
        (project / "test_profile.py").write_text(TEST.format(tests=args.tests))
        (project / "pytest.ini").write_text(f"[pytest]\noverlay_base = {base}\n")
        profile = cProfile.Profile(time.process_time)
        cwd = os.getcwd()
        os.chdir(project)
        try:
            profile.enable()
            code = pytest.main(
                [
                    "-q",
                    "-p",
                    "pytest_overlay.plugin",
                    "-p",
                    "no:cacheprovider",
                    f"--overlay-backend={args.backend}",
                    f"--basetemp={root / 'tmp'}",
                ]
            )
            profile.disable()
        finally:
            os.chdir(cwd)
        if code != 0:
            raise SystemExit(f"pytest exited with {code}")
    found: dict[tuple[str, str], tuple[int, float]] = {}
    # Stats.stats is the raw table, (file, line, function) -> (calls, ..., cumulative, ...).
    table = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for (filename, _, name), (_, calls, _, cumulative, _) in table.items():
        key = (os.path.basename(filename), name)
        if key in ROWS and (key not in found or cumulative > found[key][1]):
            found[key] = (calls, cumulative)
    print("| where | calls | CPU, cumulative, per test |")
    print("|---|---|---|")
    for key, label in ROWS.items():
        if key in found:
            calls, cumulative = found[key]
            print(f"| {label} | {calls} | {cumulative * 1000 / args.tests:.3f} ms |")


if __name__ == "__main__":
    main()
