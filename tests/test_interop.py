"""Other pytest plugins in the same session: each line of docs/interop.rst, tested.

Each test skips when its plugin is not installed; the ``interop`` extra (``tox -e
interop``, a step of ``.ci/run``) installs them all. syrupy and pytest-snapshot both
define ``--snapshot-update`` and so cannot be loaded together: that run passes
``-p no:snapshot``, and the pytest-snapshot test loads it back with ``-p no:syrupy``.
"""

from __future__ import annotations

import os
import time

import pytest

from tests.helpers import make_tree

pytest_plugins = ["pytester"]


def needs(module: str) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed (the interop extra)")


@pytest.fixture(autouse=True)
def no_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test is about one plugin, whatever else the interop extra installed: the
    sessions it runs load only pytest-overlay and the plugins they name."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def run(pytester: pytest.Pytester, *plugins: str, args: tuple[str, ...] = ()) -> pytest.RunResult:
    """A pytest session with pytest-overlay and *plugins* (entry point names) loaded."""
    loaded = [arg for name in ("overlay", *plugins) for arg in ("-p", name)]
    if "-n" in args:
        # An xdist controller hands its workers the user namespace's capabilities
        # (ambient, for every program it starts from then on): run in this process, it
        # would hand them to every later test's subprocesses too.
        return pytester.runpytest_subprocess(*loaded, *args)
    return pytester.runpytest(*loaded, *args)


FAKEFS = """
import pytest

pytestmark = pytest.mark.overlay("base")

def test_fs_first(fs, overlay_stack):
    pass

def test_later_test_without_fs(overlay_stack):
    assert (overlay_stack.merged / "f.txt").read_text() == "f"

def test_fs_after_overlay_stack(overlay_stack, fs):
    fs.add_real_directory(overlay_stack.merged, read_only=False)
    assert (overlay_stack.merged / "f.txt").read_text() == "f"
    (overlay_stack.merged / "f.txt").write_text("fake")
    fs.pause()  # writes went to the fake, not to the union
    assert (overlay_stack.merged / "f.txt").read_text() == "f"
    assert overlay_stack.changes() == []
    fs.resume()

def test_fails_with_fs(overlay_stack, fs):
    assert False
"""


def test_pyfakefs_set_up_first_is_named_and_spoils_nothing(pytester: pytest.Pytester) -> None:
    needs("pyfakefs")
    make_tree(pytester.path / "base", {"f.txt": "f"})
    pytester.makepyfile(test_fakefs=FAKEFS)
    result = run(pytester, "fakefs")
    result.assert_outcomes(errors=1, passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_fs_first*",
            "overlay_stack: pyfakefs's fake filesystem is active *"
            "Request overlay_stack before fs*",
            "*test_fails_with_fs*",
            "*overlay changes*",
            "not listed: pyfakefs's fake filesystem hides the upper layer",
        ]
    )
    result.stdout.no_fnmatch_line("*does not exist*")


#: A test that fails if it sees another test's (or attempt's, or example's) changes.
FRESH = """
import pytest

pytestmark = pytest.mark.overlay("base")

def check_fresh(stack):
    mark = stack.merged / "mark"
    assert not mark.exists(), "this test sees an earlier test's changes"
    mark.write_text("x")
    (stack.merged / "f.txt").unlink()
"""


def fresh_project(pytester: pytest.Pytester, body: str) -> None:
    make_tree(pytester.path / "base", {"f.txt": "f"})
    pytester.makepyfile(test_fresh=FRESH + body)


def assert_base_untouched(pytester: pytest.Pytester) -> None:
    assert sorted(p.name for p in (pytester.path / "base").iterdir()) == ["f.txt"]


def test_xdist_each_worker_mounts_its_own(pytester: pytest.Pytester) -> None:
    needs("xdist")
    body = "".join(
        f"\ndef test_{i}(overlay_stack):\n    check_fresh(overlay_stack)\n" for i in range(6)
    )
    fresh_project(pytester, body)
    result = run(pytester, "xdist", args=("-n", "2"))
    result.assert_outcomes(passed=6)
    assert_base_untouched(pytester)


def test_rerunfailures_each_attempt_starts_from_the_base(pytester: pytest.Pytester) -> None:
    needs("pytest_rerunfailures")
    body = """
ATTEMPTS = []

@pytest.mark.flaky(reruns=2)
def test_flaky(overlay_stack):
    ATTEMPTS.append(1)
    check_fresh(overlay_stack)
    assert len(ATTEMPTS) == 3
"""
    fresh_project(pytester, body)
    outcomes = run(pytester, "rerunfailures").parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("rerun"), outcomes.get("failed")) == (1, 2, None)
    assert_base_untouched(pytester)


@pytest.mark.parametrize("seed", ["1", "2"])
def test_randomly_any_order(pytester: pytest.Pytester, seed: str) -> None:
    needs("pytest_randomly")
    body = "".join(
        f"\ndef test_{i}(overlay_stack):\n    check_fresh(overlay_stack)\n" for i in range(4)
    )
    body += """
@pytest.fixture(scope="module")
def shared(overlay_stack_factory):
    stack = overlay_stack_factory.mount(["base"])
    yield stack
    stack.close()

def test_shared_a(shared):
    (shared.merged / "a").write_text("a")

def test_shared_b(shared):
    (shared.merged / "b").write_text("b")
"""
    fresh_project(pytester, body)
    result = run(pytester, "randomly", args=(f"--randomly-seed={seed}",))
    result.assert_outcomes(passed=6)
    assert_base_untouched(pytester)


def test_repeat_each_repetition_starts_from_the_base(pytester: pytest.Pytester) -> None:
    needs("pytest_repeat")
    fresh_project(pytester, "\ndef test_it(overlay_stack):\n    check_fresh(overlay_stack)\n")
    run(pytester, "repeat", args=("--count=3",)).assert_outcomes(passed=3)
    assert_base_untouched(pytester)


def test_timeout_unmounts_after_a_timed_out_test(pytester: pytest.Pytester) -> None:
    needs("pytest_timeout")
    body = """
import os, time

def test_hangs(overlay_stack):
    (overlay_stack.merged / "written").write_text("x")
    os.chdir(overlay_stack.merged)  # and keeps the union busy
    time.sleep(60)
"""
    fresh_project(pytester, body)
    basetemp = pytester.path / "bt"
    result = run(
        pytester, "timeout", args=("--timeout=1", "--overlay-keep=none", f"--basetemp={basetemp}")
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Timeout*"])
    assert list((basetemp / "overlay").iterdir()) == []
    with open("/proc/self/mountinfo") as mounts:
        assert str(basetemp) not in mounts.read()
    assert_base_untouched(pytester)


def same_user_namespace_as_parent() -> bool:
    try:
        return os.readlink("/proc/self/ns/user") == os.readlink(f"/proc/{os.getppid()}/ns/user")
    except PermissionError:  # the parent is outside this process's user namespace
        return False


def test_timeout_thread_method_leaves_no_mount(pytester: pytest.Pytester) -> None:
    needs("pytest_timeout")
    if not same_user_namespace_as_parent():
        # The pytest started below joins the user namespace this process entered, and
        # its mounts live on in it, seen from here (tests/test_crash.py covers this case
        # from outside the namespace).
        pytest.skip("this process is in a user namespace of its own, which the run shares")
    body = """
import time

def test_hangs(overlay_stack):
    (overlay_stack.merged / "written").write_text("x")
    time.sleep(60)
"""
    fresh_project(pytester, body)
    basetemp = pytester.path / "bt"
    # The thread method ends the process with os._exit: no teardown runs at all.
    result = pytester.runpytest_subprocess(
        "-p", "overlay", "-p", "timeout", "--timeout=1", "--timeout-method=thread",
        f"--basetemp={basetemp}",
    )  # fmt: skip
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*+ Timeout +*"])
    # A fuse-overlayfs mount in this namespace (no user namespaces here) is unmounted by
    # the watcher that outlives the run, moments after it ends.
    deadline = time.monotonic() + 10
    while True:
        with open("/proc/self/mountinfo") as mounts:
            left = [line for line in mounts if str(basetemp) in line]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert left == []
    assert_base_untouched(pytester)


def test_asyncio_async_tests_and_fixtures(pytester: pytest.Pytester) -> None:
    needs("pytest_asyncio")
    body = """
import asyncio
import pytest_asyncio

@pytest_asyncio.fixture
async def prepared(overlay_stack):
    await asyncio.sleep(0)
    (overlay_stack.merged / "prepared").write_text("p")
    return overlay_stack

@pytest.mark.asyncio
async def test_async(prepared):
    proc = await asyncio.create_subprocess_exec("ls", str(prepared.merged), stdout=-1)
    out, _ = await proc.communicate()
    assert out.split() == [b"f.txt", b"prepared"]
    check_fresh(prepared)
"""
    fresh_project(pytester, body)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    run(pytester, "asyncio").assert_outcomes(passed=1)
    assert_base_untouched(pytester)


def test_mock_patches_do_not_reach_the_union(pytester: pytest.Pytester) -> None:
    needs("pytest_mock")
    body = """
import shutil, subprocess

def test_patched(overlay_stack, mocker):
    # mocker after overlay_stack: its patches are undone before the stack's teardown.
    mocker.patch("shutil.rmtree")
    mocker.patch("os.path.exists", return_value=False)
    out = subprocess.run(["cat", str(overlay_stack.merged / "f.txt")], capture_output=True)
    assert out.stdout == b"f"
"""
    fresh_project(pytester, body)
    basetemp = pytester.path / "bt"
    args = (f"--basetemp={basetemp}", "--overlay-workspace=disk")
    result = run(pytester, "pytest_mock", args=args)
    result.assert_outcomes(passed=1)
    assert list((basetemp / "overlay").iterdir()) == []


SNAPSHOT_NAME = """
import pytest

@pytest.mark.overlay("base")
def test_both(overlay_stack, overlay_snapshot, snapshot):
    assert type(snapshot).__module__.split(".")[0] == {owner!r}
    (overlay_stack.merged / "new").write_text("n")
    overlay_snapshot.assert_changed("new")
"""


@pytest.mark.parametrize(
    ("module", "plugins", "owner"),
    [
        ("syrupy", ("syrupy",), "syrupy"),
        ("pytest_snapshot", ("snapshot",), "pytest_snapshot"),
    ],
)
def test_snapshot_plugins_keep_their_fixture_name(
    pytester: pytest.Pytester, module: str, plugins: tuple[str, ...], owner: str
) -> None:
    needs(module)
    make_tree(pytester.path / "base", {"f.txt": "f"})
    pytester.makepyfile(test_snap=SNAPSHOT_NAME.format(owner=owner))
    result = run(pytester, *plugins)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["overlay: *; fixture 'snapshot' belongs to *; pytest-overlay's is 'overlay_snapshot'"]
    )


def test_hypothesis_each_example_starts_from_the_base(pytester: pytest.Pytester) -> None:
    needs("hypothesis")
    body = """
from hypothesis import given, settings, strategies as st

@settings(max_examples=20, database=None)
@given(st.integers())
def test_examples(overlay_stack, n):
    check_fresh(overlay_stack)
"""
    fresh_project(pytester, body)
    run(pytester, "hypothesispytest").assert_outcomes(passed=1)
    assert_base_untouched(pytester)


COVERED = """
import runpy, subprocess, sys
import pytest

@pytest.mark.overlay("base")
def test_runs_the_script(overlay_stack):
    script = overlay_stack.merged / "script.py"
    runpy.run_path(str(script))  # in this process
    subprocess.run([sys.executable, str(script)], check=True)  # and in a child
"""

SCRIPT = "def f(x):\n    if x:\n        return 1\n    return 2\n\n\nprint(f(1))\n"

#: The recipe of docs/interop.rst: measure files under any union (no ``source``, which
#: would leave them out), then map every ``merged`` directory back to the base.
COVERAGERC = """
[run]
patch = subprocess
include =
    ./*
    */overlay/*/merged/*
[paths]
base =
    base/
    */overlay/*/merged/
"""


@pytest.mark.parametrize("recipe", [False, True], ids=["plain", "recipe"])
def test_coverage_of_code_run_from_the_union(pytester: pytest.Pytester, recipe: bool) -> None:
    needs("pytest_cov")
    make_tree(pytester.path / "base", {"script.py": SCRIPT})
    pytester.makepyfile(test_cov=COVERED)
    if recipe:
        (pytester.path / ".coveragerc").write_text(COVERAGERC)
    # coverage in a pytest of its own: pytester's in-process run would share its tracer.
    result = pytester.runpytest_subprocess(
        "-p", "overlay", "-p", "pytest_cov", "--cov", "--cov-report=term-missing"
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    if recipe:
        # Line 4 (return 2) never ran, in either process; every other line did.
        result.stdout.fnmatch_lines(["base/script.py * 5 * 1 * 80% * 4"])
        result.stdout.no_fnmatch_line("*merged*")
    else:
        # What the recipe fixes: the union is gone when coverage reports.
        output = pytest.LineMatcher(result.outlines + result.errlines)
        output.fnmatch_lines(["*Couldn't parse '*/merged/script.py'*"])
        result.stdout.no_fnmatch_line("base/script.py *")
