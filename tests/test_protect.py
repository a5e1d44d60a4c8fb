"""--overlay-protect: a directory copy-on-write for the whole session, writes listed per test."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_overlay._linux import namespace as _namespace
from tests.helpers import auto_backend, mount_points_anywhere, tree_digest, wait_until_written

pytest_plugins = ["pytester"]


@pytest.fixture
def checkout(pytester: pytest.Pytester) -> Path:
    """A checkout with a test that writes build/out.txt, one that rewrites a data file and
    one that writes nothing; skipped where nothing can mount over a path (copy)."""
    if auto_backend() == "copy":
        pytest.skip("the copy backend cannot protect a path (tested in test_copy_refuses)")
    (pytester.path / "tests" / "data").mkdir(parents=True)
    (pytester.path / "tests" / "data" / "expected.json").write_text("{}\n")
    (pytester.path / "helper.py").write_text("VALUE = 42\n")
    (pytester.path / "tests" / "test_suite.py").write_text(
        "import os, helper\n"
        "\n"
        "def test_build():\n"
        "    os.makedirs('build', exist_ok=True)\n"
        "    with open('build/out.txt', 'w') as f:\n"
        "        f.write('out')\n"
        "    assert open('build/out.txt').read() == 'out'\n"
        "\n"
        "def test_regenerate():\n"
        "    with open('tests/data/expected.json', 'w') as f:\n"
        "        f.write('[]')\n"
        "\n"
        "def test_reads_only():\n"
        "    assert helper.VALUE == 42  # imported from the protected path\n"
        "    with open('tests/data/expected.json') as f:\n"
        "        assert f.read() == '[]'\n"
    )
    return pytester.path


def _run(pytester: pytest.Pytester, tmp_path: Path, *args: str) -> pytest.RunResult:
    # A basetemp outside the checkout: one inside the protected path is refused.
    return pytester.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:rerunfailures", f"--basetemp={tmp_path / 'bt'}", *args
    )


#: What pytester itself makes in its directory around a subprocess run.
_PYTESTER = ("runpytest-", "stdout", "stderr", ".pytest_cache")


def _digest(checkout: Path) -> dict[str, tuple[object, ...]]:
    """tree_digest of the checkout, without pytester's own files and the cache directory
    (which pytest writes for real)."""
    return {
        k: v for k, v in tree_digest(checkout).items() if k != "." and not k.startswith(_PYTESTER)
    }


def _git(path: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", *args],
        cwd=path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_writes_are_listed_per_test_and_the_checkout_stays_clean(
    pytester: pytest.Pytester, checkout: Path, tmp_path: Path
) -> None:
    git = shutil.which("git") is not None
    if git:
        _git(checkout, "init", "-q")
        (checkout / ".gitignore").write_text("\n".join(["runpytest-*", *_PYTESTER[1:]]))
        _git(checkout, "add", "-A")
        _git(checkout, "commit", "-qm", "base")
    before = _digest(checkout)
    result = _run(pytester, tmp_path, "--overlay-protect", ".", "tests")
    result.assert_outcomes(passed=3)
    assert result.ret == 0
    result.stdout.fnmatch_lines(
        [
            f"overlay: protected for this session*{checkout}*",
            "*= overlay: written into protected paths =*",
            f"{checkout}: 3 changes (not on disk)",
            "  tests/test_suite.py::test_build",
            "    A build/",
            "    A build/out.txt",
            "  tests/test_suite.py::test_regenerate",
            "    M tests/data/expected.json",
        ]
    )
    assert "test_reads_only" not in result.stdout.str().split("written into protected")[1]
    assert _digest(checkout) == before
    assert (checkout / ".pytest_cache").is_dir()
    if git:
        assert _git(checkout, "status", "--porcelain") == ""
    assert str(checkout) not in mount_points_anywhere()


def test_strict_fails_the_session(
    pytester: pytest.Pytester, checkout: Path, tmp_path: Path
) -> None:
    pytester.makeini("[pytest]\noverlay_protect = .\noverlay_protect_strict = true\n")
    result = _run(pytester, tmp_path, "tests")
    result.assert_outcomes(passed=3)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*    A build/out.txt", "overlay_protect_strict: the suite wrote into protected paths*"]
    )
    assert not (checkout / "build").exists()


def test_strict_passes_a_suite_that_writes_nothing(
    pytester: pytest.Pytester, checkout: Path, tmp_path: Path
) -> None:
    pytester.makeini("[pytest]\noverlay_protect = .\noverlay_protect_strict = true\n")
    result = _run(pytester, tmp_path, "tests", "-k", "reads_only", "-p", "no:cacheprovider")
    # test_reads_only expects test_regenerate's write, which is not there now.
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines([f"{checkout}: nothing written"])
    assert "the suite wrote into protected paths" not in result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # its own failure, no more


def test_junitxml_and_coverage_data_are_written_for_real(
    pytester: pytest.Pytester, checkout: Path, tmp_path: Path
) -> None:
    (checkout / "tests" / "test_cov.py").write_text(
        "def test_coverage_file():\n    open('.coverage.host.1', 'w').write('data')\n"
    )
    result = _run(
        pytester, tmp_path, "--overlay-protect", ".", "--junitxml=out/report.xml", "tests"
    )
    result.assert_outcomes(passed=4)
    assert "<testsuite" in (checkout / "out" / "report.xml").read_text()
    assert (checkout / ".coverage.host.1").read_text() == "data"
    summary = result.stdout.str().split("written into protected")[1]
    assert "report.xml" not in summary
    assert ".coverage" not in summary
    assert "__pycache__" not in summary
    assert not (checkout / "build").exists()


def test_xdist_workers_report_to_the_controller(
    pytester: pytest.Pytester, checkout: Path, tmp_path: Path
) -> None:
    pytest.importorskip("xdist")
    before = _digest(checkout)
    if os.geteuid() != 0 and _namespace.cached_probe():
        # fuse-overlayfs through fusermount3: the workers would share one mount namespace.
        result = _run(pytester, tmp_path, "-n", "2", "--overlay-protect", ".", "tests")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["*--overlay-protect under pytest-xdist: the * backend*"])
        assert _digest(checkout) == before
        return
    result = _run(
        pytester, tmp_path, "-n", "2", "--overlay-protect", ".", "tests", "-p", "no:cacheprovider"
    )
    # Each worker has its own union: a test on the other worker does not see the write.
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] >= 2
    result.stdout.fnmatch_lines(
        ["  tests/test_suite.py::test_build", "    A build/out.txt"], consecutive=False
    )
    result.stdout.fnmatch_lines(["  tests/test_suite.py::test_regenerate"])
    assert _digest(checkout) == before
    assert str(checkout) not in mount_points_anywhere()


def test_a_missing_path_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest_subprocess("--overlay-protect", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*--overlay-protect nope: {pytester.path / 'nope'} does not exist; name an existing*"]
    )


def test_a_basetemp_inside_the_path_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(): pass")
    result = pytester.runpytest_subprocess("--overlay-protect", ".", "--basetemp=bt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--basetemp=bt lies inside the protected*choose a basetemp*"])


def test_copy_refuses(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile("def test_it(): pass")
    result = _run(pytester, tmp_path, "--overlay-protect", ".", "--overlay-backend=copy")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--overlay-protect *: the copy backend cannot show a union over*use the kernel*"]
    )


def test_sigkill_leaves_the_checkout_and_no_mount(
    pytester: pytest.Pytester, checkout: Path, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    (checkout / "tests" / "test_slow.py").write_text(
        "import os, time\n"
        "def test_slow():\n"
        "    os.makedirs('build')\n"
        "    open('build/out.txt', 'w').write('x')\n"
        "    open('tests/data/expected.json', 'a').write('dirty')\n"
        f"    open({str(ready)!r}, 'w').close()\n"
        "    time.sleep(60)\n"
    )
    before = _digest(checkout)
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:rerunfailures",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={tmp_path / 'bt'}",
            "--overlay-protect",
            ".",
            "tests/test_slow.py",
        ],
        cwd=checkout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_written(run, ready)
    assert str(checkout) in mount_points_anywhere()
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 10
    while str(checkout) in mount_points_anywhere():
        assert time.monotonic() < deadline, "a mount outlived the killed pytest"
        time.sleep(0.05)
    assert _digest(checkout) == before
