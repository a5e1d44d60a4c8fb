"""The copy backend's union copy, change detection and upper-layer writer."""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import pytest

from pytest_overlay import OverlayWarning
from pytest_overlay._backends.materialize import diff_baseline, materialize, write_upper
from pytest_overlay.changes import Change, ChangeKind, diff_upper
from tests.helpers import make_tree

A, M, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE


def test_copy_preserves_content_modes_times_and_links(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"f": "data", "d": {"g": "g"}, "l": ("symlink", "f")})
    os.chmod(base / "f", 0o604)
    os.utime(base / "d" / "g", ns=(1_000_000_000, 2_000_000_000))
    target = make_tree(tmp_path / "copy", {})
    baseline = materialize([base], target)
    assert (target / "f").read_text() == "data"
    assert stat.S_IMODE(os.stat(target / "f").st_mode) == 0o604
    assert os.stat(target / "d" / "g").st_mtime_ns == 2_000_000_000
    assert os.readlink(target / "l") == "f"
    assert os.stat(target / "f").st_ino != os.stat(base / "f").st_ino  # never a hard link
    assert set(baseline.entries) == {"f", "d", "d/g", "l"}
    assert diff_baseline(target, baseline) == []


def test_sockets_are_copied_as_new_socket_inodes(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"f": "f"})
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.fspath(base / "sock"))
        target = make_tree(tmp_path / "copy", {})
        baseline = materialize([base], target)
    assert sorted(os.listdir(target)) == ["f", "sock"]
    assert stat.S_ISSOCK(os.lstat(target / "sock").st_mode)
    assert diff_baseline(target, baseline) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make a base with a device")
def test_a_device_node_the_user_may_not_create_is_left_out_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = make_tree(tmp_path / "base", {"f": "f"})
    os.mknod(base / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    target = make_tree(tmp_path / "copy", {})
    real_mknod = os.mknod

    def mknod_as_ordinary_user(path: str, mode: int = 0o600, device: int = 0) -> None:
        if stat.S_ISCHR(mode) and device:
            raise PermissionError(1, "Operation not permitted", path)
        real_mknod(path, mode, device)

    monkeypatch.setattr(os, "mknod", mknod_as_ordinary_user)
    with pytest.warns(OverlayWarning, match="leaves out the device node 'null'"):
        baseline = materialize([base], target)
    assert os.listdir(target) == ["f"]
    assert diff_baseline(target, baseline) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can make a base with a device")
def test_root_copies_device_nodes(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {})
    os.mknod(base / "null", 0o640 | stat.S_IFCHR, os.makedev(1, 3))
    target = make_tree(tmp_path / "copy", {})
    materialize([base], target)
    st = os.lstat(target / "null")
    assert stat.S_ISCHR(st.st_mode)
    assert st.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(st.st_mode) == 0o640


def test_writes_through_a_hard_link_do_not_reach_the_base(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"a": "shared"})
    os.link(base / "a", base / "b")
    target = make_tree(tmp_path / "copy", {})
    materialize([base], target)
    (target / "b").write_text("changed")
    assert (base / "a").read_text() == "shared"


def test_recreated_directory_is_opaque_even_with_the_same_inode(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"d": {"x": "x", "y": "y"}})
    target = make_tree(tmp_path / "copy", {})
    baseline = materialize([base], target)
    shutil.rmtree(target / "d")
    (target / "d").mkdir()
    (target / "d" / "x").write_text("new x")
    changes = diff_baseline(target, baseline)
    assert changes == [Change(M, "d"), Change(A, "d/x"), Change(D, "d/y")]
    upper = make_tree(tmp_path / "upper", {})
    write_upper(target, baseline, changes, upper)
    assert diff_upper(upper, [base]) == changes


def test_emptied_directory_is_not_opaque(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"d": {"x": "x", "y": "y"}})
    target = make_tree(tmp_path / "copy", {})
    baseline = materialize([base], target)
    (target / "d" / "x").unlink()
    (target / "d" / "x").write_text("again")
    assert diff_baseline(target, baseline) == [Change(M, "d"), Change(M, "d/x")]


def test_type_changes(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"was_dir": {"child": "c"}, "was_file": "f"})
    target = make_tree(tmp_path / "copy", {})
    baseline = materialize([base], target)
    shutil.rmtree(target / "was_dir")
    (target / "was_dir").write_text("now a file")
    (target / "was_file").unlink()
    make_tree(target / "was_file", {"inner": "i"})
    changes = diff_baseline(target, baseline)
    assert changes == [Change(M, "was_dir"), Change(M, "was_file"), Change(A, "was_file/inner")]
    upper = make_tree(tmp_path / "upper", {})
    write_upper(target, baseline, changes, upper)
    assert diff_upper(upper, [base]) == changes


def test_upper_layer_keeps_modes_of_read_only_directories(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {})
    target = make_tree(tmp_path / "copy", {})
    baseline = materialize([base], target)
    make_tree(target / "ro", {"f": "f"})
    os.chmod(target / "ro", 0o555)
    upper = make_tree(tmp_path / "upper", {})
    write_upper(target, baseline, diff_baseline(target, baseline), upper)
    assert (upper / "ro" / "f").read_text() == "f"
    assert stat.S_IMODE(os.stat(upper / "ro").st_mode) == 0o555
    assert not (target / "ro").exists()  # moved, not copied
    os.chmod(upper / "ro", 0o755)


def test_absolute_links_into_the_base_point_into_the_copy(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"t": "t", "d": {}})
    (base / "d" / "abs").symlink_to(base / "t")
    (base / "outside").symlink_to("/etc/hostname")
    target = make_tree(tmp_path / "copy", {})
    materialize([base.resolve()], target)
    assert os.readlink(target / "d" / "abs") == os.fspath(target / "t")
    assert os.readlink(target / "outside") == "/etc/hostname"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_copy_backend_names_an_unreadable_entry(tmp_path: Path) -> None:
    from pytest_overlay import OverlayError, OverlayStack

    base = make_tree(tmp_path / "base", {"secret": "s", "ok": "o"})
    os.chmod(base / "secret", 0)
    try:
        with pytest.raises(OverlayError, match=r"cannot read .*secret in the base"):
            OverlayStack([base], workspace=tmp_path / "ws", backend="copy").mount()
        assert list((tmp_path / "ws").iterdir()) == []
    finally:
        os.chmod(base / "secret", 0o600)


def test_no_whiteout_inside_a_directory_made_again(tmp_path: Path) -> None:
    # Found by the copy machine: overlayfs leaves no whiteout under an opaque directory,
    # which hides everything below it already.
    base = make_tree(tmp_path / "base", {" ": {"a": "x"}})
    target = make_tree(tmp_path / "copy", {})
    baseline = materialize([base], target)
    os.rename(target / " " / "a", target / "a")
    (target / " ").rmdir()
    (target / " ").mkdir()
    upper = tmp_path / "upper"
    upper.mkdir()
    write_upper(target, baseline, diff_baseline(target, baseline), upper)
    assert os.listdir(upper / " ") == []
    assert sorted(os.listdir(upper)) == [" ", "a"]
