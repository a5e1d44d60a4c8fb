"""docs/tutorial.rst works as written: its shell and Python blocks, run in order, give the
results and the failure report the page shows."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.rst"


def code_blocks(language: str) -> list[str]:
    """The *language* code blocks of the tutorial, in order, dedented."""
    text = TUTORIAL.read_text()
    blocks = re.findall(
        rf"^\.\. code-block:: {language}\n\n((?:   .*\n|\n)+)", text, flags=re.MULTILINE
    )
    return [re.sub(r"^   ", "", block, flags=re.MULTILINE).strip() + "\n" for block in blocks]


def test_the_tutorial_runs_as_written(pytester: pytest.Pytester) -> None:
    shell = code_blocks("sh")
    cleanup_py, first_tests, snapshot_test, failing_test = code_blocks("python")
    (pytester.path / "cleanup.py").write_text(cleanup_py)
    # The block that makes the base and pytest.ini; the others install and run pytest.
    (make_base,) = [block for block in shell if "tests/data/project" in block]
    subprocess.run(["bash", "-euc", make_base], cwd=pytester.path, check=True)
    test_file = pytester.path / "tests" / "test_cleanup.py"

    test_file.write_text(first_tests)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)

    test_file.write_text(first_tests + "\n\n" + snapshot_test)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=3)

    test_file.write_text(first_tests + "\n\n" + snapshot_test + "\n\n" + failing_test)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    # The report the page shows, all but the kept layer's path (which differs per run).
    (shown,) = code_blocks("text")
    *changes, kept = shown.splitlines()
    result.stdout.fnmatch_lines([re.sub(r"^-+ | -+$", "*", changes[0]), *changes[1:]])
    assert kept.startswith("upper layer kept at: ")
    result.stdout.fnmatch_lines(["upper layer kept at: */test_cleanup_keeps_sources"])
    # The base is as the tutorial made it: every test's changes went to its own layer.
    base = pytester.path / "tests" / "data" / "project"
    assert sorted(p.relative_to(base).as_posix() for p in base.rglob("*")) == [
        "build",
        "build/app.o",
        "config.toml",
        "src",
        "src/app.py",
    ]
    assert (base / "config.toml").read_text() == 'name = "demo"\nversion = 1\n'
