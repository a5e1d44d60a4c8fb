"""Golden files no test checks any more: reported, deleted with --overlay-update-golden,
and never reported when the session cannot vouch for it (selection, skips, early stop)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_overlay._plugin import golden_unused as _golden_unused
from tests.helpers import make_tree

TWO_TESTS = """
import pytest

def test_a(overlay_snapshot):
    (overlay_snapshot.stack.merged / "a").write_text("a")
    overlay_snapshot.assert_golden()

def test_b(overlay_snapshot):
    (overlay_snapshot.stack.merged / "b").write_text("b")
    overlay_snapshot.assert_golden()
    overlay_snapshot.assert_golden()
"""

ONLY_A = TWO_TESTS[: TWO_TESTS.index("def test_b")]
# test_b keeps its name but makes one golden assertion instead of two.
B_ONCE = TWO_TESTS.replace(
    "    overlay_snapshot.assert_golden()\n    overlay_snapshot.assert_golden()\n",
    "    overlay_snapshot.assert_golden()\n",
)
B_SKIPPED = ONLY_A + "\ndef test_b():\n    pytest.skip('not today')\n"


pytestmark = pytest.mark.usefixtures("fixed_umask")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    make_tree(pytester.path / "data" / "base", {"keep": "k"})
    pytester.makeini("[pytest]\noverlay_base = data/base\n")
    pytester.makepyfile(test_g=TWO_TESTS)
    pytester.runpytest("--overlay-update-golden").assert_outcomes(passed=2)
    return pytester


def golden(project: pytest.Pytester, name: str) -> Path:
    return project.path / "__overlay_golden__" / "test_g" / name


def test_a_deleted_test_leaves_an_unused_file_that_update_deletes(
    project: pytest.Pytester,
) -> None:
    assert golden(project, "test_b.2.txt").exists()
    project.makepyfile(test_g=ONLY_A)
    result = project.runpytest()
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK  # reported, not a failure
    result.stdout.fnmatch_lines(
        [
            "*pytest-overlay golden files*",
            "unused: __overlay_golden__/test_g/test_b.2.txt",
            "unused: __overlay_golden__/test_g/test_b.txt",
            "2 golden file(s) no test checks any more; run pytest with "
            "--overlay-update-golden to delete them",
        ]
    )
    assert golden(project, "test_b.txt").exists()  # only reported

    deleted = project.runpytest("--overlay-update-golden")
    deleted.stdout.fnmatch_lines(["deleted: __overlay_golden__/test_g/test_b.txt"])
    assert not golden(project, "test_b.txt").exists()
    assert not golden(project, "test_b.2.txt").exists()
    assert golden(project, "test_a.txt").exists()
    assert "unused:" not in project.runpytest().stdout.str()


def test_fewer_assertions_leave_the_numbered_file_unused(project: pytest.Pytester) -> None:
    project.makepyfile(test_g=B_ONCE)
    result = project.runpytest()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["unused: __overlay_golden__/test_g/test_b.2.txt"])
    assert "test_b.txt" not in result.stdout.str()


def test_the_last_file_deleted_takes_its_directories(project: pytest.Pytester) -> None:
    project.makepyfile(test_g="def test_nothing():\n    pass\n")
    project.runpytest("--overlay-update-golden").assert_outcomes(passed=1)
    assert not (project.path / "__overlay_golden__").exists()


@pytest.mark.parametrize(
    "args",
    [["-k", "test_a"], ["test_g.py::test_a"], ["--deselect", "test_g.py::test_b"]],
    ids=["keyword", "node-id", "deselect"],
)
def test_a_partial_selection_vouches_for_nothing_it_left_out(
    project: pytest.Pytester, args: list[str]
) -> None:
    result = project.runpytest(*args)
    result.assert_outcomes(passed=1)
    assert "unused:" not in result.stdout.str()
    assert golden(project, "test_b.txt").exists()


def test_a_skipped_test_keeps_its_files(project: pytest.Pytester) -> None:
    project.makepyfile(test_g=B_SKIPPED)
    result = project.runpytest("--overlay-update-golden")
    result.assert_outcomes(passed=1, skipped=1)
    assert "unused:" not in result.stdout.str()
    assert "deleted:" not in result.stdout.str()
    assert golden(project, "test_b.txt").exists()


def test_an_early_stop_reports_nothing(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_g=ONLY_A.replace("overlay_snapshot.assert_golden()", "assert False"),
        test_h="def test_h():\n    pass\n",
    )
    result = project.runpytest("-x", "--overlay-update-golden")
    result.assert_outcomes(failed=1)
    assert golden(project, "test_b.txt").exists()


def test_xdist_workers_report_what_they_checked(project: pytest.Pytester) -> None:
    project.makepyfile(test_g=ONLY_A + "\ndef test_c():\n    pass\n")
    result = project.runpytest("-n", "2")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["unused: __overlay_golden__/test_g/test_b.txt"])
    assert "test_a.txt" not in result.stdout.str()


def test_unused_files_needs_every_owner_to_have_passed(tmp_path: Path) -> None:
    directory = tmp_path / "__overlay_golden__" / "test_m"
    directory.mkdir(parents=True)
    for name in ("test_x.txt", "test_x.after.txt", "test_y[1.5].txt", "gone.txt"):
        (directory / name).write_text("")
    module = tmp_path / "test_m.py"
    outcomes = {"test_m.py::test_x": True, "test_m.py::test_y[1.5]": False}
    checked = [os.fspath(directory / "test_x.txt")]
    found = _golden_unused.unused_files(outcomes, checked, tmp_path, lambda m: m != module)
    assert found == [directory / "gone.txt", directory / "test_x.after.txt"]
    partial = _golden_unused.unused_files(outcomes, checked, tmp_path, lambda m: m == module)
    assert partial == [directory / "test_x.after.txt"]
