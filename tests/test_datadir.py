"""The pytest-datadir drop-in: the same fixtures as unions, switched on by configuration."""

from __future__ import annotations

import pytest

ON = "[pytest]\noverlay_datadir = true\n"

MODULE = """
import os
from pathlib import Path

def test_datadir_is_a_union_at_the_datadir_path(datadir, original_datadir, tmp_path):
    assert datadir == tmp_path / "test_it"
    assert original_datadir == Path(__file__).with_suffix("")
    assert sorted(os.listdir(datadir)) == ["big", "hello.txt"]
    assert not datadir.is_symlink()
    (datadir / "hello.txt").write_text("changed")
    (datadir / "big" / "f0").unlink()
    (datadir / "new.txt").write_text("new")
    assert (original_datadir / "hello.txt").read_text() == "hello"
    assert (original_datadir / "big" / "f0").exists()

def test_each_test_starts_from_the_original(datadir):
    assert (datadir / "hello.txt").read_text() == "hello"
    assert not (datadir / "new.txt").exists()

def test_shared_datadir(shared_datadir, tmp_path):
    assert shared_datadir == tmp_path / "data"
    assert (shared_datadir / "spam.txt").read_text() == "eggs"
    (shared_datadir / "spam.txt").write_text("ham")

def test_lazy_datadir(lazy_datadir):
    assert list(lazy_datadir.tmp_path.iterdir()) == []
    assert (lazy_datadir / "hello.txt").read_text() == "hello"
    big = lazy_datadir / "big"
    assert len(os.listdir(big)) == 50
    (big / "f1").write_text("changed")
    missing = lazy_datadir / "absent.txt"
    assert not missing.exists()
    assert sorted(p.name for p in lazy_datadir.tmp_path.iterdir()) == ["big", "hello.txt"]

def test_lazy_shared_datadir(lazy_shared_datadir, tmp_path):
    assert lazy_shared_datadir.tmp_path == tmp_path / "data"
    assert (lazy_shared_datadir / "spam.txt").read_text() == "eggs"
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_it=MODULE)
    data = pytester.path / "test_it"
    (data / "big").mkdir(parents=True)
    (data / "hello.txt").write_text("hello")
    for i in range(50):
        (data / "big" / f"f{i}").write_text(str(i))
    (pytester.path / "data").mkdir()
    (pytester.path / "data" / "spam.txt").write_text("eggs")
    return pytester


def _untouched(project: pytest.Pytester) -> None:
    assert (project.path / "test_it" / "hello.txt").read_text() == "hello"
    assert len(list((project.path / "test_it" / "big").iterdir())) == 50
    assert (project.path / "test_it" / "big" / "f1").read_text() == "1"
    assert (project.path / "data" / "spam.txt").read_text() == "eggs"


@pytest.mark.parametrize("backend", ["auto", "copy"])
def test_the_fixtures_serve_unions_and_leave_the_data_alone(
    project: pytest.Pytester, backend: str
) -> None:
    project.makeini(ON)
    result = project.runpytest_subprocess(f"--overlay-backend={backend}")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["overlay: *; datadir fixtures: pytest-overlay*"])
    _untouched(project)


def test_the_command_line_flag_switches_it_on(project: pytest.Pytester) -> None:
    project.runpytest_subprocess("--overlay-datadir").assert_outcomes(passed=5)
    _untouched(project)


def test_off_by_default_pytest_overlay_defines_none_of_the_names(
    project: pytest.Pytester,
) -> None:
    result = project.runpytest_subprocess("-p", "no:pytest-datadir")
    result.assert_outcomes(errors=5)
    result.stdout.fnmatch_lines(["*fixture 'datadir' not found*"])
    assert "datadir fixtures" not in result.stdout.str()


def test_a_missing_data_directory_gives_an_empty_directory(pytester: pytest.Pytester) -> None:
    pytester.makeini(ON)
    pytester.makepyfile(
        test_none="def test_it(datadir):\n    assert list(datadir.iterdir()) == []\n"
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_a_missing_shared_data_directory_says_so(pytester: pytest.Pytester) -> None:
    pytester.makeini(ON)
    pytester.makepyfile(test_none="def test_it(shared_datadir):\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*shared_datadir: there is no directory *data; create it*"])


def test_ours_replace_pytest_datadirs_whatever_the_order(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for pytest-datadir's plugin module, loaded before ours would register.
    package = project.mkpydir("pytest_datadir")
    (package / "plugin.py").write_text(
        "import pytest\n\n@pytest.fixture\ndef datadir():\n    return 'theirs'\n"
    )
    project.makeini(ON)
    project.syspathinsert()
    # Only these two plugins, so that an installed pytest-datadir cannot clash with it.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = project.runpytest_subprocess(
        "-p", "pytest_datadir.plugin", "-p", "pytest_overlay.plugin"
    )
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*datadir fixtures: pytest-overlay (not pytest_datadir.plugin)"])
