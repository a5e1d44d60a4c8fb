"""What a failed or passing test leaves in merged never breaks its report, the kept
upper layer or teardown: unreadable directories, a deleted merged, FIFOs and sockets."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from pytest_overlay import OverlayWarning
from pytest_overlay._layers.copytree import copy_layer
from tests.helpers import PLUGIN_BACKENDS, make_tree, tree_digest

pytest_plugins = ["pytester"]

#: Tests that leave what a failure report and a kept layer must cope with.
LEFTOVERS = """
import os, shutil, stat, pytest

pytestmark = pytest.mark.overlay("base")

def test_unreadable_dir_fails(overlay_stack):
    (overlay_stack.merged / "d" / "new").write_text("n")
    os.chmod(overlay_stack.merged / "d", 0)
    assert False, "boom"

def test_merged_removed_fails(overlay_stack):
    # On a mount only the contents go (the mount point itself is busy); on copy, all.
    shutil.rmtree(overlay_stack.merged, ignore_errors=True)
    assert False, "boom"

def test_fifo_and_socket_fail(overlay_stack):
    os.mkfifo(overlay_stack.merged / "fifo")
    os.mknod(overlay_stack.merged / "sock", stat.S_IFSOCK | 0o600)
    assert False, "boom"

def test_unreadable_dirs_pass(overlay_stack):
    os.mkdir(overlay_stack.merged / "new")
    (overlay_stack.merged / "new" / "x").write_text("x")
    os.chmod(overlay_stack.merged / "new", 0)
    os.chmod(overlay_stack.merged / "d", 0)
    os.chmod(overlay_stack.merged / "ro", 0o555)
"""


@pytest.fixture
def leftovers(pytester: pytest.Pytester) -> pytest.Pytester:
    make_tree(pytester.path / "base", {"f.txt": "f", "d": {"g": "g"}, "ro": {"h": "h"}})
    pytester.makepyfile(test_leftovers=LEFTOVERS)
    return pytester


def _open_up(root: Path) -> None:
    """Make a kept layer readable again, as a user inspecting it would."""
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | stat.S_IRWXU)
    # os.walk could not enter the directories it just opened: walk again.
    for dirpath, dirnames, _ in os.walk(root):
        for name in dirnames:
            path = os.path.join(dirpath, name)
            os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | stat.S_IRWXU)


@pytest.mark.parametrize("backend", PLUGIN_BACKENDS)
def test_failure_reports_and_kept_layers_cope_with_leftovers(
    leftovers: pytest.Pytester, backend: str
) -> None:
    before = tree_digest(leftovers.path / "base")
    basetemp = leftovers.path / "bt"
    result = leftovers.runpytest(f"--basetemp={basetemp}", f"--overlay-backend={backend}")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.assert_outcomes(failed=3, passed=1, errors=0)
    # Every failure has its section, whether or not the changes could be listed.
    assert result.stdout.str().count("- overlay changes -") == 3
    result.stdout.fnmatch_lines(["*upper layer kept at: *test_fifo_and_socket_fail*"])
    assert tree_digest(leftovers.path / "base") == before

    kept = basetemp / "overlay-kept"
    assert sorted(p.name for p in kept.iterdir()) == [
        "test_fifo_and_socket_fail",
        "test_merged_removed_fails",
        "test_unreadable_dir_fails",
    ]
    odd = kept / "test_fifo_and_socket_fail"
    assert stat.S_ISFIFO(os.lstat(odd / "fifo").st_mode)
    assert stat.S_ISSOCK(os.lstat(odd / "sock").st_mode)
    unreadable = kept / "test_unreadable_dir_fails" / "d"
    assert stat.S_IMODE(os.lstat(unreadable).st_mode) == 0
    _open_up(kept)
    assert (unreadable / "new").read_text() == "n"
    # Everything of the base was deleted: whiteouts for the top-level names.
    removed = kept / "test_merged_removed_fails"
    assert sorted(p.name for p in removed.iterdir()) == ["d", "f.txt", "ro"]
    assert all(stat.S_ISCHR(os.lstat(p).st_mode) for p in removed.iterdir())
    # No workspace is left behind, whatever modes the tests left.
    assert list((basetemp / "overlay").iterdir()) == []


def test_a_report_that_cannot_list_the_changes_says_why(
    leftovers: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_overlay.stack import OverlayStack

    def broken(self: OverlayStack) -> list[object]:
        raise ValueError("the upper layer is not what it was")

    monkeypatch.setattr(OverlayStack, "changes", broken)
    result = leftovers.runpytest(f"--basetemp={leftovers.path / 'bt'}", "-k", "fifo")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- overlay changes -*",
            "could not list the changes: ValueError: the upper layer is not what it was",
            "upper layer kept at: *",
        ]
    )


def _no_fifos(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: object, mode: int = 0o666, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "mkfifo", refuse)


def test_copy_layer_keeps_what_it_can_and_names_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = make_tree(tmp_path / "src", {"d": {"f": "x"}, "g": "g"})
    os.mkfifo(src / "fifo")
    os.mknod(src / "sock", stat.S_IFSOCK | 0o640)
    os.mknod(src / "whiteout", stat.S_IFCHR, os.makedev(0, 0))
    os.symlink("d/f", src / "link")
    os.chmod(src / "d" / "f", 0)
    os.chmod(src / "d", 0)
    _no_fifos(monkeypatch)
    dst = tmp_path / "dst"
    assert copy_layer(src, dst) == ["fifo: Operation not permitted"]
    assert sorted(os.listdir(dst)) == ["d", "g", "link", "sock", "whiteout"]
    assert stat.S_ISSOCK(os.lstat(dst / "sock").st_mode)
    assert stat.S_IMODE(os.lstat(dst / "sock").st_mode) == 0o640
    assert os.lstat(dst / "whiteout").st_rdev == os.makedev(0, 0)
    assert os.readlink(dst / "link") == "d/f"
    assert stat.S_IMODE(os.lstat(dst / "d").st_mode) == 0
    _open_up(dst)
    assert stat.S_IMODE(os.lstat(dst / "d" / "f").st_mode) == 0
    os.chmod(dst / "d" / "f", 0o600)
    assert (dst / "d" / "f").read_text() == "x"
    _open_up(src)  # for tmp_path's cleanup


def test_a_kept_layer_missing_entries_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_overlay import OverlayStack

    base = make_tree(tmp_path / "base", {"f.txt": "f"})
    # /dev/shm is a tmpfs: keeping the layer on tmp_path's filesystem means copying it.
    workspace = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="pytest-overlay-test-"))
    try:
        stack = OverlayStack([base], workspace=workspace).mount()
        os.mkfifo(stack.merged / "fifo")
        (stack.merged / "new.txt").write_text("n")
        _no_fifos(monkeypatch)
        with pytest.warns(
            OverlayWarning,
            match=r"the upper layer kept at \S+/kept is missing 1 entry that could not be "
            r"copied \(fifo: Operation not permitted\)",
        ):
            stack.close(keep_upper=tmp_path / "kept")
    finally:
        shutil.rmtree(workspace)
    assert os.listdir(tmp_path / "kept") == ["new.txt"]
