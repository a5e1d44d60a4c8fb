"""The same behaviour on every backend that works here; deliberate differences are declared.

Each backend is probed; one that cannot work on this machine is skipped with its reason.
A difference from kernel overlayfs is expected only where the backend lists the key in
``deviations`` (see ``pytest_overlay._backends.protocol.DEVIATIONS``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_overlay import Change, ChangeKind, OverlayStack
from pytest_overlay._backends.ladder import builtin_backends
from pytest_overlay._backends.materialize import _opaque_xattr
from pytest_overlay._backends.protocol import DEVIATIONS, Backend
from pytest_overlay.changes import diff_upper
from pytest_overlay.layers import Dir, read_layer
from tests.helpers import make_tree, overlay_mounts, tree_digest

A, M, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE
BACKENDS: dict[str, Backend] = {b.name: b for b in builtin_backends()}


@pytest.fixture
def base(tmp_path: Path) -> Path:
    base = make_tree(
        tmp_path / "base",
        {
            "file.txt": "original\n",
            "empty": "",
            "dir": {"inner.txt": "inner\n", "sub": {"deep": "d"}},
            "link": ("symlink", "file.txt"),
        },
    )
    os.chmod(base / "file.txt", 0o640)
    return base


@pytest.fixture
def stack(backend: Backend, base: Path, tmp_path: Path) -> Iterator[OverlayStack]:
    with OverlayStack([base], workspace=tmp_path / "ws", backend=backend) as s:
        yield s


def deviates(backend: Backend, key: str) -> bool:
    assert key in DEVIATIONS, key
    return key in backend.deviations


def upper_after_unmount(stack: OverlayStack) -> list[Change]:
    """Unmount and read back the upper layer the backend left, as a list of changes."""
    assert stack._backend is not None
    assert stack._space is not None
    stack._backend.unmount(stack._space)
    changes = diff_upper(stack._space.upper, stack.lowers)
    # Hand the stack a mount again so its own close() has something to take down.
    stack._space.merged.rmdir()
    stack._space.merged.mkdir()
    stack._space.work.rename(stack._space.root / "old-work")
    stack._space.work.mkdir()
    stack._space.upper.rename(stack._space.root / "old-upper")
    stack._space.upper.mkdir()
    stack._backend.mount(stack.lowers, stack._space)
    return changes


def test_reads_see_the_base(stack: OverlayStack) -> None:
    m = stack.merged
    assert sorted(os.listdir(m)) == ["dir", "empty", "file.txt", "link"]
    assert (m / "dir" / "sub" / "deep").read_text() == "d"
    assert os.readlink(m / "link") == "file.txt"
    assert stat.S_IMODE(os.stat(m / "file.txt").st_mode) == 0o640
    assert stack.changes() == []


def test_write_is_a_modify_and_leaves_the_base(stack: OverlayStack, base: Path) -> None:
    (stack.merged / "dir" / "inner.txt").write_text("changed\n")
    expected = [Change(M, "dir"), Change(M, "dir/inner.txt")]
    assert stack.changes() == expected
    assert (base / "dir" / "inner.txt").read_text() == "inner\n"
    assert upper_after_unmount(stack) == expected


def test_upper_shows_changes_while_mounted(stack: OverlayStack) -> None:
    (stack.merged / "file.txt").write_text("changed\n")
    assert (stack.upper / "file.txt").read_text() == "changed\n"
    # Later changes show on the next look, and undone ones go away again.
    (stack.merged / "dir" / "new.txt").write_text("new\n")
    assert (stack.upper / "dir" / "new.txt").read_text() == "new\n"
    (stack.merged / "dir" / "new.txt").unlink()
    assert not (stack.upper / "dir" / "new.txt").exists()
    # What the test reads never touches the merged view.
    assert (stack.merged / "file.txt").read_text() == "changed\n"


def test_names_that_look_like_oci_whiteouts(stack: OverlayStack, backend: Backend) -> None:
    target = stack.merged / ".wh.file.txt"
    if deviates(backend, "wh-names-reserved"):
        with contextlib.suppress(OSError):  # EINVAL, or accepted and hidden
            target.write_text("x")
        assert ".wh.file.txt" not in os.listdir(stack.merged)
        return
    target.write_text("x")
    assert ".wh.file.txt" in os.listdir(stack.merged)
    assert (stack.merged / "file.txt").read_text() == "original\n"
    assert stack.changes() == [Change(A, ".wh.file.txt")]


def test_same_size_rewrite_with_restored_mtime_is_seen(stack: OverlayStack) -> None:
    target = stack.merged / "file.txt"
    before = os.stat(target)
    target.write_text("ORIGINAL\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert stack.changes() == [Change(M, "file.txt")]


def test_delete_is_a_whiteout(stack: OverlayStack) -> None:
    (stack.merged / "file.txt").unlink()
    shutil.rmtree(stack.merged / "dir" / "sub")
    expected = [Change(M, "dir"), Change(D, "dir/sub"), Change(D, "file.txt")]
    assert stack.changes() == expected
    assert upper_after_unmount(stack) == expected
    st = os.lstat(stack.upper.parent / "old-upper" / "file.txt")
    assert stat.S_ISCHR(st.st_mode)
    assert st.st_rdev == 0


def test_rm_rf_then_mkdir_is_opaque(stack: OverlayStack) -> None:
    shutil.rmtree(stack.merged / "dir")
    (stack.merged / "dir").mkdir()
    (stack.merged / "dir" / "inner.txt").write_text("new\n")
    assert sorted(os.listdir(stack.merged / "dir")) == ["inner.txt"]
    expected = [
        Change(M, "dir"),
        Change(A, "dir/inner.txt"),
        Change(D, "dir/sub"),
    ]
    assert stack.changes() == expected
    assert upper_after_unmount(stack) == expected


def test_new_tree_and_symlink_are_adds(stack: OverlayStack) -> None:
    make_tree(stack.merged / "new", {"a": "a", "b": {"c": "c"}})
    (stack.merged / "new" / "l").symlink_to("/nowhere")
    expected = [
        Change(A, "new"),
        Change(A, "new/a"),
        Change(A, "new/b"),
        Change(A, "new/b/c"),
        Change(A, "new/l"),
    ]
    assert stack.changes() == expected
    assert upper_after_unmount(stack) == expected


def test_rename_of_a_base_file(stack: OverlayStack) -> None:
    os.rename(stack.merged / "file.txt", stack.merged / "moved.txt")
    assert (stack.merged / "moved.txt").read_text() == "original\n"
    assert stack.changes() == [Change(D, "file.txt"), Change(A, "moved.txt")]


def test_chmod_is_a_modify(stack: OverlayStack) -> None:
    os.chmod(stack.merged / "empty", 0o600)
    assert stack.changes() == [Change(M, "empty")]
    assert stat.S_IMODE(os.stat(stack.merged / "empty").st_mode) == 0o600


def test_directory_rename_of_base_dir(stack: OverlayStack, backend: Backend) -> None:
    if deviates(backend, "dir-rename-allowed"):
        os.rename(stack.merged / "dir", stack.merged / "moved")
        assert (stack.merged / "moved" / "sub" / "deep").read_text() == "d"
        return
    with pytest.raises(OSError) as info:
        os.rename(stack.merged / "dir", stack.merged / "moved")
    assert info.value.errno == errno.EXDEV


def test_open_for_write_without_writing(stack: OverlayStack, backend: Backend) -> None:
    with open(stack.merged / "file.txt", "r+"):
        pass
    os.truncate(stack.merged / "empty", 0)  # tmpfs skips this; ext4 still sets ctime
    if deviates(backend, "open-without-write-unchanged"):
        assert stack.changes() in ([], [Change(M, "empty")])
    else:
        assert stack.changes() == [Change(M, "empty"), Change(M, "file.txt")]


def test_merged_is_a_mount_point(stack: OverlayStack, backend: Backend) -> None:
    is_mount = os.path.ismount(stack.merged)
    assert is_mount is not deviates(backend, "not-a-mount-point")
    if is_mount:
        assert str(stack.merged) in overlay_mounts()


def test_subprocess_sees_the_union(stack: OverlayStack, backend: Backend) -> None:
    (stack.merged / "made-here").write_text("x")
    listing = subprocess.run(
        ["ls", "-a"], cwd=stack.merged, check=True, capture_output=True, text=True
    ).stdout.split()
    dots = [".", ".."] if not deviates(backend, "no-dotdot-at-root") else ["."]
    assert sorted(listing) == [*dots, "dir", "empty", "file.txt", "link", "made-here"]


def test_layers_merge_top_most_first(backend: Backend, tmp_path: Path) -> None:
    top = make_tree(tmp_path / "top", {"shared": "top", "d": {"t": "t"}, "x": "file"})
    bottom = make_tree(
        tmp_path / "bottom", {"shared": "bottom", "d": {"b": "b"}, "x": {"hidden": "h"}}
    )
    with OverlayStack([top, bottom], workspace=tmp_path / "ws", backend=backend) as s:
        assert (s.merged / "shared").read_text() == "top"
        assert sorted(os.listdir(s.merged / "d")) == ["b", "t"]
        assert (s.merged / "x").read_text() == "file"


def test_lowers_with_whiteouts_and_opaque_dirs(backend: Backend, tmp_path: Path) -> None:
    # The layers of a multi-layer image: the top one deleted and replaced things below.
    top = make_tree(tmp_path / "top", {"d": {"new": "n"}, "o": {"mine": "m"}})
    os.mknod(top / "gone", stat.S_IFCHR, os.makedev(0, 0))
    os.mknod(top / "d" / "old", stat.S_IFCHR, os.makedev(0, 0))
    os.setxattr(top / "o", _opaque_xattr(), b"y")
    bottom = make_tree(
        tmp_path / "bottom",
        {"gone": "g", "d": {"old": "o", "kept": "k"}, "o": {"theirs": "t"}, "plain": "p"},
    )
    with OverlayStack([top, bottom], workspace=tmp_path / "ws", backend=backend) as s:
        assert sorted(os.listdir(s.merged)) == ["d", "o", "plain"]
        assert sorted(os.listdir(s.merged / "d")) == ["kept", "new"]
        assert sorted(os.listdir(s.merged / "o")) == ["mine"]
        (s.merged / "d" / "kept").unlink()
        assert s.changes() == [Change(M, "d"), Change(D, "d/kept")]


@pytest.mark.parametrize("made_by", ["a higher layer", "the test"])
def test_directory_over_a_looping_symlink(backend: Backend, tmp_path: Path, made_by: str) -> None:
    # The base's "a" is a symlink to itself; a directory replaced it, in a layer above or
    # in the test (rm a; mkdir a).
    bottom = make_tree(tmp_path / "bottom", {"a": ("symlink", "a")})
    lowers = [bottom]
    if made_by == "a higher layer":
        lowers.insert(0, make_tree(tmp_path / "top", {"a": {}}))
    with OverlayStack(lowers, workspace=tmp_path / "ws", backend=backend) as s:
        if made_by == "the test":
            (s.merged / "a").unlink()
            (s.merged / "a").mkdir()
        assert os.listdir(s.merged / "a") == []  # fuse-overlayfs looks below only now
        if deviates(backend, "dir-over-looping-symlink"):
            with pytest.raises(OSError) as caught:
                (s.merged / "a" / "new").mkdir()
            assert caught.value.errno == errno.ENOMEM
            return
        (s.merged / "a" / "new").mkdir()
        assert s.changes() == [Change(M, "a"), Change(A, "a/new")]


def test_rename_of_a_directory_made_over_a_deleted_file(
    stack: OverlayStack, backend: Backend
) -> None:
    m = stack.merged
    (m / "file.txt").unlink()
    (m / "file.txt").mkdir()
    os.rename(m / "file.txt", m / "moved")
    if deviates(backend, "dir-rename-uncovers"):
        assert (m / "file.txt").read_text() == "original\n"  # the deleted file is back
        return
    assert not (m / "file.txt").exists()
    assert (m / "moved").is_dir()
    assert stack.changes() == [Change(D, "file.txt"), Change(A, "moved")]


def test_write_through_one_hard_link_of_the_base(
    backend: Backend, base: Path, tmp_path: Path
) -> None:
    os.link(base / "file.txt", base / "twin.txt")
    before = tree_digest(base)
    with OverlayStack([base], workspace=tmp_path / "ws", backend=backend) as s:
        with open(s.merged / "file.txt", "a") as f:
            f.write("more\n")
        twin = (s.merged / "twin.txt").read_text()
        if deviates(backend, "lower-hardlinks-shared"):
            assert twin == "original\nmore\n"
            assert s.changes() in ([Change(M, "file.txt")], [Change(M, "twin.txt")])
        else:
            assert twin == "original\n"
            assert s.changes() == [Change(M, "file.txt")]
    assert tree_digest(base) == before


def test_base_is_byte_identical_afterwards(backend: Backend, base: Path, tmp_path: Path) -> None:
    before = tree_digest(base)
    with OverlayStack([base], workspace=tmp_path / "ws", backend=backend) as s:
        m = s.merged
        (m / "file.txt").write_text("x" * 100)
        with open(m / "dir" / "inner.txt", "r+") as f:
            f.truncate(2)
        os.chmod(m / "dir", 0o700)
        os.utime(m / "empty", (1, 1))
        shutil.rmtree(m / "dir" / "sub")
        (m / "link").unlink()
    assert tree_digest(base) == before


def test_absolute_symlink_into_the_base_does_not_leak_writes(
    backend: Backend, tmp_path: Path
) -> None:
    base = make_tree(tmp_path / "base", {"target": "safe"})
    (base / "abs").symlink_to(base / "target")
    with OverlayStack([base], workspace=tmp_path / "ws", backend=backend) as s:
        if backend.name != "copy":
            # A kernel union keeps the link as it is: it points at the base itself.
            assert os.readlink(s.merged / "abs") == str(base / "target")
            return
        # The copy backend points such links into the copy instead.
        (s.merged / "abs").write_text("written through the link")
    assert (base / "target").read_text() == "safe"


def test_merged_root_takes_the_base_root_mode(backend: Backend, tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"f": "f"})
    os.chmod(base, 0o750)
    with OverlayStack([base], workspace=tmp_path / "ws", backend=backend) as s:
        assert stat.S_IMODE(os.stat(s.merged).st_mode) == 0o750


def test_a_new_directory_renamed_into_place(stack: OverlayStack, backend: Backend) -> None:
    # Overlayfs marks a pure-upper directory opaque when it moves into a merged directory.
    (stack.merged / "new").mkdir()
    os.rename(stack.merged / "new", stack.merged / "moved")
    entry = read_layer(stack.upper)["moved"]
    assert isinstance(entry, Dir)
    assert entry.opaque is not deviates(backend, "added-dirs-not-opaque")
    assert stack.changes() == [Change(A, "moved")]


def test_a_failed_directory_rename_changes_nothing(backend: Backend, tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"d": {"e": {"f": "x"}}, "g": {}})
    with OverlayStack([base], workspace=tmp_path / "ws", backend=backend) as stack:
        (stack.merged / "g" / "b").mkdir()
        with pytest.raises(OSError, match="Directory not empty") as failure:
            os.rename(stack.merged / "g" / "b", stack.merged / "d" / "e")
        assert failure.value.errno == errno.ENOTEMPTY
        expected = [Change(M, "g"), Change(A, "g/b")]
        if deviates(backend, "failed-rename-copies-up"):
            expected.insert(0, Change(M, "d"))
        assert stack.changes() == expected


def test_renaming_a_base_directory_onto_a_non_empty_one(backend: Backend, tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"d": {}, "e": {"f": "x"}})
    with OverlayStack([base], workspace=tmp_path / "ws", backend=backend) as stack:
        with pytest.raises(OSError) as failure:
            os.rename(stack.merged / "d", stack.merged / "e")
        wanted = errno.ENOTEMPTY if deviates(backend, "dir-rename-allowed") else errno.EXDEV
        assert failure.value.errno == wanted
        assert sorted(os.listdir(stack.merged)) == ["d", "e"]


def _socket_at(path: Path) -> None:
    # A bound unix socket leaves a socket inode behind; its path is relative to the cwd
    # because socket paths are limited to 108 bytes.
    import socket

    cwd = os.getcwd()
    os.chdir(path.parent)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(path.name)
    finally:
        os.chdir(cwd)


def test_special_files_of_the_base_show_in_merged(backend: Backend, tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"file": "x"})
    os.mkfifo(base / "fifo")
    _socket_at(base / "sock")
    kinds = {"fifo": stat.S_ISFIFO, "sock": stat.S_ISSOCK, "file": stat.S_ISREG}
    if os.geteuid() == 0:
        os.mknod(base / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        kinds["null"] = stat.S_ISCHR
    with OverlayStack([base], workspace=tmp_path / "ws", backend=backend) as stack:
        shown = {name: os.lstat(stack.merged / name).st_mode for name in os.listdir(stack.merged)}
        assert sorted(shown) == sorted(kinds)
        for name, is_kind in kinds.items():
            assert is_kind(shown[name]), name
        if "null" in kinds:
            assert os.lstat(stack.merged / "null").st_rdev == os.makedev(1, 3)
        assert stack.changes() == []
        if deviates(backend, "special-file-chmod-fails"):
            with pytest.raises(OSError) as failure:
                os.chmod(stack.merged / "fifo", 0o600)
            assert failure.value.errno == errno.EIO
            return
        os.chmod(stack.merged / "fifo", 0o600)
        assert stat.S_IMODE(os.lstat(stack.merged / "fifo").st_mode) == 0o600
        assert stack.changes() == [Change(M, "fifo")]
