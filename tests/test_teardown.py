"""A union still in use at teardown is a warning naming who holds it; a working directory
left inside merged is moved back out."""

from __future__ import annotations

import os
import re

import pytest

from tests.helpers import PLUGIN_BACKENDS, make_tree

pytest_plugins = ["pytester"]

#: Tests that leave the union in use, or the working directory inside it.
BUSY = """
import os, subprocess, pytest

pytestmark = pytest.mark.overlay("base")
START = os.getcwd()
HELD = []

def test_leaves_a_process_and_a_file(overlay_stack):
    HELD.append(subprocess.Popen(["sleep", "60"], cwd=overlay_stack.merged))
    HELD.append(open(overlay_stack.merged / "f.txt"))

def test_next_test_is_unaffected(overlay_stack):
    HELD[0].kill()
    HELD[0].wait()
    HELD[1].close()
    assert os.getcwd() == START
"""

#: Tests that leave the working directory inside merged; no warning, nothing busy.
CWD = """
import os, pytest

pytestmark = pytest.mark.overlay("base")
START = os.getcwd()

def test_chdir_and_stay(overlay_stack):
    os.chdir(overlay_stack.merged / "d")

def test_cwd_was_restored(overlay_stack):
    assert os.getcwd() == START

def test_monkeypatch_set_up_before_the_stack(monkeypatch, overlay_stack):
    monkeypatch.chdir(overlay_stack.merged / "d")

def test_cwd_was_restored_again(overlay_stack):
    assert os.getcwd() == START
"""


# This session's filterwarnings=error would reach the inner session too.
@pytest.mark.filterwarnings("default::pytest_overlay.OverlayWarning")
def test_a_busy_union_at_teardown_is_a_warning_naming_the_holders(
    pytester: pytest.Pytester,
) -> None:
    make_tree(pytester.path / "base", {"f.txt": "f"})
    pytester.makepyfile(test_busy=BUSY)
    result = pytester.runpytest(f"--basetemp={pytester.path / 'bt'}")
    if "copy" in result.stdout.str().split("overlay backend:")[-1].split("\n")[0]:
        pytest.skip("the copy backend mounts nothing, so nothing can keep it busy")
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        ["*OverlayWarning: */merged was still in use at teardown (*), so it was detached lazily*"]
    )
    text = result.stdout.str()
    assert re.search(r"pid \d+ \(sleep\) has its working directory in \S+/merged[;)]", text)
    assert re.search(rf"pid {os.getpid()} \(\S+\) has open \(fd \d+\) \S+/merged/f.txt", text)


def test_the_busy_warning_can_be_made_an_error(pytester: pytest.Pytester) -> None:
    make_tree(pytester.path / "base", {"f.txt": "f"})
    pytester.makepyfile(test_busy=BUSY)
    result = pytester.runpytest(
        f"--basetemp={pytester.path / 'bt'}", "-W", "error::pytest_overlay.OverlayWarning"
    )
    if "copy" in result.stdout.str().split("overlay backend:")[-1].split("\n")[0]:
        pytest.skip("the copy backend mounts nothing, so nothing can keep it busy")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaves_a_process_and_a_file*"])


@pytest.mark.parametrize("backend", PLUGIN_BACKENDS)
def test_a_working_directory_left_in_merged_is_restored(
    pytester: pytest.Pytester, backend: str
) -> None:
    make_tree(pytester.path / "base", {"d": {"g": "g"}})
    pytester.makepyfile(test_cwd=CWD)
    result = pytester.runpytest(
        f"--basetemp={pytester.path / 'bt'}",
        f"--overlay-backend={backend}",
        "-W",
        "error::pytest_overlay.OverlayWarning",
    )
    result.assert_outcomes(passed=4)
