"""Workspaces on a tmpfs private to pytest (--overlay-workspace)."""

from __future__ import annotations

import pytest

from tests.helpers import make_tree, tmpfs_workspaces_possible

pytest_plugins = ["pytester"]

TMPFS_MAGIC = 0x01021994

PROBE = """
import pytest
from pytest_overlay._linux import syscalls as _syscalls

@pytest.mark.overlay("base")
def test_where(overlay_stack):
    (overlay_stack.merged / "f").write_text("changed")
    kind = _syscalls.statfs_type(overlay_stack.upper)
    print("BACKEND", overlay_stack.backend, "TMPFS" if kind == 0x01021994 else "DISK")
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    make_tree(pytester.path / "base", {"f": "f"})
    pytester.makepyfile(test_where=PROBE)
    return pytester


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "TMPFS"),
        (["--overlay-workspace=tmpfs"], "TMPFS"),
        (["--overlay-workspace=disk"], "DISK"),
        (["--overlay-backend=copy"], "DISK"),
    ],
)
def test_where_the_upper_lives(project: pytest.Pytester, args: list[str], expected: str) -> None:
    result = project.runpytest("-s", *args)
    if expected == "TMPFS" and not tmpfs_workspaces_possible():
        # An ordinary user without user namespaces: fuse mounts in the host namespace,
        # where no tmpfs can be mounted. auto falls back to disk; demanding tmpfs fails.
        if args:
            result.assert_outcomes(errors=1)
            result.stdout.fnmatch_lines(["*cannot put the workspaces on tmpfs: the process*"])
            return
        expected = "DISK"
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*BACKEND * {expected}*"])
    assert (project.path / "base" / "f").read_text() == "f"


def test_tmpfs_demanded_where_it_cannot_be(project: pytest.Pytester) -> None:
    result = project.runpytest("--overlay-workspace=tmpfs", "--overlay-backend=copy")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*cannot put the workspaces on tmpfs: the copy backend*"])


def test_unknown_setting_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--overlay-workspace=ram")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown value 'ram'; choose one of: auto, tmpfs, disk*"])


def test_kept_layer_survives_the_tmpfs(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_where="""
        import pytest

        @pytest.mark.overlay("base")
        def test_fails(overlay_stack):
            (overlay_stack.merged / "f").unlink()
            (overlay_stack.merged / "new").write_text("n")
            assert False
        """
    )
    result = project.runpytest(f"--basetemp={project.path / 'bt'}")
    result.assert_outcomes(failed=1)
    kept = project.path / "bt" / "overlay-kept" / "test_fails"
    assert (kept / "new").read_text() == "n"
    assert (kept / "f").is_char_device()  # the whiteout came along
    assert list((project.path / "bt" / "overlay").iterdir()) == []
