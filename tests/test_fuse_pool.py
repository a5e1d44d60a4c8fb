"""The fuse backend's pool: the next test's mount is started while the previous test runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_overlay._backends.fuse import FUSE
from tests.helpers import make_tree
from tests.test_crash import _mounts_under

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _needs_fuse() -> None:
    reason = FUSE.probe()
    if reason:
        pytest.skip(f"fuse does not work here: {reason}")


# Each test counts the ready mounts (pool-* workspaces beside its own whose merged
# directory is, or within 5 s becomes, a mount point) while it runs, and checks what
# it sees.
SUITE = """
import os, pathlib, time, pytest

def pooled(root):
    spares = list(root.glob("pool-*"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if all(os.path.ismount(p / "merged") for p in spares):
            break
        time.sleep(0.01)
    return [p for p in spares if os.path.ismount(p / "merged")]

@pytest.mark.overlay("base")
@pytest.mark.parametrize("i", range(4))
def test_union(overlay_stack, i):
    m = overlay_stack.merged
    assert (m / "f").read_text() == "base"
    assert not (m / "leak").exists()  # nothing of the test before
    assert os.listdir(overlay_stack.upper) == []
    (m / "leak").write_text(str(i))
    (m / "f").write_text("changed")
    assert (overlay_stack.upper / "leak").read_text() == str(i)
    print(f"POOLED {len(pooled(overlay_stack.workspace.parent))}")
"""


def _pooled_counts(output: str) -> list[int]:
    return [int(line.split()[-1]) for line in output.splitlines() if "POOLED" in line]


def test_next_mount_is_ready_while_a_test_runs(pytester: pytest.Pytester) -> None:
    base = make_tree(pytester.path / "base", {"f": "base"})
    before = sorted(p.name for p in base.iterdir())
    pytester.makepyfile(test_pool=SUITE)
    basetemp = pytester.path / "bt"
    result = pytester.runpytest_subprocess(
        "--overlay-backend=fuse", f"--basetemp={basetemp}", "-s", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=4)
    # The first test has no pool yet (one use of a base is no sign of a next); from the
    # second on, a ready mount for the next test waits beside the running one.
    assert _pooled_counts(result.stdout.str()) == [0, 1, 1, 1]
    # Reclaimed at the end of the session: no mount, no workspace, the base untouched.
    assert _mounts_under(basetemp) == []
    assert not list((basetemp / "overlay").glob("*-*"))
    assert sorted(p.name for p in base.iterdir()) == before
    assert (base / "f").read_text() == "base"


def test_a_replaced_base_is_not_served_from_the_pool(pytester: pytest.Pytester) -> None:
    make_tree(pytester.path / "base", {"f": "old"})
    pytester.makepyfile(
        test_replace="""
        import os, pathlib, pytest

        @pytest.mark.overlay("base")
        @pytest.mark.parametrize("i", range(3))
        def test_union(overlay_stack, i):
            here = pathlib.Path(__file__).parent
            if i == 1:  # after the pool was filled for test 2: a new base at the path
                os.rename(here / "base", here / "base.old")
                (here / "base").mkdir()
                (here / "base" / "f").write_text("new")
            elif i == 2:
                assert (overlay_stack.merged / "f").read_text() == "new"
        """
    )
    result = pytester.runpytest_subprocess("--overlay-backend=fuse", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_pool_is_only_for_the_plugins_session(tmp_path: Path) -> None:
    # OverlayStack outside pytest: no ready mount is started behind the user's back.
    from pytest_overlay import OverlayStack

    base = make_tree(tmp_path / "base", {"f": "f"})
    for _ in range(3):
        with OverlayStack([base], backend="fuse", workspace=tmp_path / "ws") as stack:
            assert (stack.merged / "f").read_text() == "f"
    assert os.listdir(tmp_path / "ws") == []
