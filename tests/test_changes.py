"""Deriving Change lists from upper layers on disk, including all whiteout formats."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pytest_overlay._layers.changes import LowerView
from pytest_overlay.changes import Change, ChangeKind, diff_upper, sort_changes
from tests.helpers import make_tree

A, M, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE


def whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def xattr_whiteout(path: Path) -> None:
    path.write_bytes(b"")
    os.setxattr(path, "user.overlay.whiteout", b"")


def opaque(path: Path, name: str = "user.overlay.opaque") -> None:
    os.setxattr(path, name, b"y")


def test_pure_upper_entries_are_adds(tmp_path: Path) -> None:
    lower = make_tree(tmp_path / "lower", {"keep": "k"})
    upper = make_tree(tmp_path / "upper", {"new": {"a": "a", "b": {"c": "c"}}, "f": "f"})
    assert diff_upper(upper, [lower]) == [
        Change(A, "f"),
        Change(A, "new"),
        Change(A, "new/a"),
        Change(A, "new/b"),
        Change(A, "new/b/c"),
    ]


def test_copied_up_directories_are_modifies(tmp_path: Path) -> None:
    lower = make_tree(tmp_path / "lower", {"d": {"e": {"f": "old"}, "g": "g"}})
    upper = make_tree(tmp_path / "upper", {"d": {"e": {"f": "new"}}})
    assert diff_upper(upper, [lower]) == [Change(M, "d"), Change(M, "d/e"), Change(M, "d/e/f")]


def test_whiteout_of_a_lower_name_is_a_delete(tmp_path: Path) -> None:
    lower = make_tree(tmp_path / "lower", {"gone": "x", "tree": {"deep": {"x": "x"}}})
    upper = make_tree(tmp_path / "upper", {})
    whiteout(upper / "gone")
    whiteout(upper / "tree")
    assert diff_upper(upper, [lower]) == [Change(D, "gone"), Change(D, "tree")]


def test_stray_whiteout_of_an_unknown_name_is_ignored(tmp_path: Path) -> None:
    lower = make_tree(tmp_path / "lower", {})
    upper = make_tree(tmp_path / "upper", {})
    whiteout(upper / "never-existed")
    assert diff_upper(upper, [lower]) == []


def test_opaque_directory_deletes_hidden_lower_entries(tmp_path: Path) -> None:
    lower = make_tree(tmp_path / "lower", {"d": {"old1": "1", "old2": {"x": "x"}, "kept": "k"}})
    upper = make_tree(tmp_path / "upper", {"d": {"kept": "again", "fresh": "f"}})
    opaque(upper / "d")
    assert diff_upper(upper, [lower]) == [
        Change(M, "d"),
        Change(A, "d/fresh"),
        # Recreated inside an opaque directory: nothing of the lower one shows through.
        Change(A, "d/kept"),
        Change(D, "d/old1"),
        Change(D, "d/old2"),
    ]


@pytest.mark.parametrize(
    "xattr", ["user.overlay.opaque", "user.fuseoverlayfs.opaque"], ids=["userxattr", "fuse"]
)
def test_every_opaque_marker_is_understood(tmp_path: Path, xattr: str) -> None:
    lower = make_tree(tmp_path / "lower", {"d": {"old": "1"}})
    upper = make_tree(tmp_path / "upper", {"d": {}})
    opaque(upper / "d", xattr)
    assert diff_upper(upper, [lower]) == [Change(M, "d"), Change(D, "d/old")]


@pytest.mark.skipif(os.geteuid() != 0, reason="trusted.* xattrs need root")
def test_trusted_opaque_marker(tmp_path: Path) -> None:
    test_every_opaque_marker_is_understood(tmp_path, "trusted.overlay.opaque")


def test_file_replaced_by_directory(tmp_path: Path) -> None:
    lower = make_tree(tmp_path / "lower", {"x": "file"})
    upper = make_tree(tmp_path / "upper", {"x": {"child": "c"}})
    opaque(upper / "x")
    assert diff_upper(upper, [lower]) == [Change(M, "x"), Change(A, "x/child")]


def test_directory_replaced_by_file(tmp_path: Path) -> None:
    lower = make_tree(tmp_path / "lower", {"x": {"child": "c"}})
    upper = make_tree(tmp_path / "upper", {"x": "now a file"})
    assert diff_upper(upper, [lower]) == [Change(M, "x")]


def test_dash_siblings_sort_after_the_parents_children() -> None:
    changes = [Change(A, "a-b"), Change(A, "a/b"), Change(M, "a"), Change(A, "a.b")]
    assert sort_changes(changes) == [
        Change(M, "a"),
        Change(A, "a/b"),
        Change(A, "a-b"),
        Change(A, "a.b"),
    ]


class TestLowerView:
    def test_higher_whiteout_hides_lower_entry(self, tmp_path: Path) -> None:
        top = make_tree(tmp_path / "top", {})
        whiteout(top / "f")
        bottom = make_tree(tmp_path / "bottom", {"f": "f", "g": "g"})
        view = LowerView([top, bottom])
        assert view.kind("f") is None
        assert view.kind("g") == stat.S_IFREG
        assert view.listdir("") == {"g"}

    def test_xattr_whiteout_hides_lower_entry(self, tmp_path: Path) -> None:
        top = make_tree(tmp_path / "top", {})
        xattr_whiteout(top / "f")
        bottom = make_tree(tmp_path / "bottom", {"f": "f"})
        assert LowerView([top, bottom]).kind("f") is None

    def test_opaque_lower_dir_stops_the_merge(self, tmp_path: Path) -> None:
        top = make_tree(tmp_path / "top", {"d": {"mine": "m"}})
        opaque(top / "d")
        bottom = make_tree(tmp_path / "bottom", {"d": {"theirs": "t"}})
        view = LowerView([top, bottom])
        assert view.listdir("d") == {"mine"}
        assert view.kind("d/theirs") is None

    def test_directories_merge_across_layers(self, tmp_path: Path) -> None:
        top = make_tree(tmp_path / "top", {"d": {"a": "a"}})
        bottom = make_tree(tmp_path / "bottom", {"d": {"b": "b", "sub": {"c": "c"}}})
        view = LowerView([top, bottom])
        assert view.listdir("d") == {"a", "b", "sub"}
        assert view.kind("d/sub/c") == stat.S_IFREG

    def test_file_on_top_hides_directory_below(self, tmp_path: Path) -> None:
        top = make_tree(tmp_path / "top", {"x": "file"})
        bottom = make_tree(tmp_path / "bottom", {"x": {"inner": "i"}})
        view = LowerView([top, bottom])
        assert view.kind("x") == stat.S_IFREG
        assert view.kind("x/inner") is None
        assert view.listdir("x") == set()

    def test_symlink_is_not_followed(self, tmp_path: Path) -> None:
        outside = make_tree(tmp_path / "outside", {"secret": "s"})
        top = make_tree(tmp_path / "top", {"link": ("symlink", str(outside))})
        view = LowerView([top])
        assert view.kind("link") == stat.S_IFLNK
        assert view.kind("link/secret") is None


def test_changes_against_lowers_with_whiteouts(tmp_path: Path) -> None:
    # A base made of two image layers, the upper of which deleted "old".
    top = make_tree(tmp_path / "top", {})
    whiteout(top / "old")
    bottom = make_tree(tmp_path / "bottom", {"old": "o"})
    upper = make_tree(tmp_path / "upper", {"old": "recreated"})
    # "old" is invisible through the lowers, so writing it now is an addition.
    assert diff_upper(upper, [top, bottom]) == [Change(A, "old")]
