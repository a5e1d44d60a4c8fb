"""Content-level diffs between layer chains and directories, without mounting anything.

Layers are built by hand: whiteouts and opaque markers in the form this process may write
(char 0/0 and trusted.* as root, xattr whiteouts and user.* otherwise), which the readers
accept in every form.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_overlay._chain import common_suffix
from pytest_overlay._layers import statediff as _statediff
from pytest_overlay._layers.statediff import ChainState, DirState, Touched, diff_states, touched
from pytest_overlay.changes import Change, ChangeKind
from tests.helpers import make_tree

ROOT = os.geteuid() == 0
XATTR = "trusted.overlay." if ROOT else "user.overlay."


def whiteout(path: Path) -> None:
    """A whiteout as this process can make one: char 0/0, else an xattr whiteout."""
    if ROOT:
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    else:
        path.touch()
        os.setxattr(path, XATTR + "whiteout", b"")
        # Kernels >= 6.7 only look for xattr whiteouts in directories marked this way.
        if XATTR + "opaque" not in os.listxattr(path.parent):
            os.setxattr(path.parent, XATTR + "opaque", b"x")


def opaque(path: Path) -> None:
    os.setxattr(path, XATTR + "opaque", b"y")


def diff(old: list[Path], new: list[Path]) -> list[str]:
    common = common_suffix(old, new)
    tree = touched(old[: len(old) - common])
    touched(new[: len(new) - common], tree)
    return [str(d.change) for d in diff_states(ChainState(old), ChainState(new), tree)]


def full_diff(old: list[Path], new: list[Path]) -> list[str]:
    """The same diff, comparing every path instead of only the touched ones."""
    everything = Touched(complete=True)
    return [str(d.change) for d in diff_states(ChainState(old), ChainState(new), everything)]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return make_tree(
        tmp_path / "base",
        {
            "keep.txt": "keep\n",
            "file.txt": "original\n",
            "dir": {"inner.txt": "inner\n", "sub": {"deep": "d"}},
            "dash-sibling": "x",
            "link": ("symlink", "file.txt"),
        },
    )


def layer(tmp_path: Path, name: str, spec: Mapping[str, object] | None = None) -> Path:
    return make_tree(tmp_path / name, dict(spec or {}))


def test_identical_chains_have_no_diff(base: Path) -> None:
    assert diff([base], [base]) == []


def test_add_modify_delete(tmp_path: Path, base: Path) -> None:
    top = layer(tmp_path, "top", {"file.txt": "changed\n", "new": {"a": "a"}})
    whiteout(top / "keep.txt")
    assert diff([base], [top, base]) == ["M file.txt", "D keep.txt", "A new", "A new/a"]
    # The reverse direction swaps adds and deletes.
    assert diff([top, base], [base]) == ["M file.txt", "A keep.txt", "D new"]


def test_copy_up_that_changed_nothing_is_no_change(tmp_path: Path, base: Path) -> None:
    top = layer(tmp_path, "top", {"file.txt": "original\n", "dir": {"sub": {"deep": "d"}}})
    assert diff([base], [top, base]) == []


def test_parent_directory_is_not_modified_by_a_change_inside(tmp_path: Path, base: Path) -> None:
    top = layer(tmp_path, "top", {"dir": {"sub": {"deep": "changed"}}})
    assert diff([base], [top, base]) == ["M dir/sub/deep"]


def test_mode_change_is_a_modification(tmp_path: Path, base: Path) -> None:
    top = layer(tmp_path, "top", {"file.txt": "original\n", "dir": {}})
    os.chmod(top / "file.txt", 0o600)
    os.chmod(top / "dir", 0o700)
    assert diff([base], [top, base]) == ["M dir", "M file.txt"]


def test_symlink_target_change(tmp_path: Path, base: Path) -> None:
    top = layer(tmp_path, "top", {"link": ("symlink", "keep.txt")})
    assert diff([base], [top, base]) == ["M link"]
    same = layer(tmp_path, "same", {"link": ("symlink", "file.txt")})
    assert diff([base], [same, base]) == []


def test_deleted_tree_reported_once(tmp_path: Path, base: Path) -> None:
    top = layer(tmp_path, "top")
    whiteout(top / "dir")
    assert diff([base], [top, base]) == ["D dir"]


def test_opaque_directory_hides_everything_below(tmp_path: Path, base: Path) -> None:
    # rm -rf dir; mkdir -p dir/sub; echo y > dir/sub/y: the fresh dir/sub hides deep.
    top = layer(tmp_path, "top", {"dir": {"sub": {"y": "y"}}})
    opaque(top / "dir")
    assert diff([base], [top, base]) == ["D dir/inner.txt", "D dir/sub/deep", "A dir/sub/y"]


def test_non_opaque_dir_over_a_whiteout_in_a_lower_layer(tmp_path: Path, base: Path) -> None:
    # Layer 1 deleted dir; layer 2 made a new dir with the same name.
    deleted = layer(tmp_path, "l1")
    whiteout(deleted / "dir")
    fresh = layer(tmp_path, "l2", {"dir": {"n": "n"}})
    assert diff([base], [fresh, deleted, base]) == [
        "D dir/inner.txt",
        "A dir/n",
        "D dir/sub",
    ]


def test_directory_replaced_by_a_file_and_back(tmp_path: Path, base: Path) -> None:
    top = layer(tmp_path, "top", {"dir": "now a file"})
    assert diff([base], [top, base]) == ["M dir"]
    assert diff([top, base], [base]) == [
        "M dir",
        "A dir/inner.txt",
        "A dir/sub",
        "A dir/sub/deep",
    ]


def test_file_in_a_middle_layer_cuts_the_merge(tmp_path: Path, base: Path) -> None:
    # dir became a file in l1 and a directory again in l2: nothing of base's dir shows.
    middle = layer(tmp_path, "l1", {"dir": "file"})
    top = layer(tmp_path, "l2", {"dir": {"only": "o"}})
    assert diff([base], [top, middle, base]) == [
        "D dir/inner.txt",
        "A dir/only",
        "D dir/sub",
    ]


def test_dash_sibling_order_is_parents_first(tmp_path: Path, base: Path) -> None:
    top = layer(tmp_path, "top", {"dash-sibling": "y", "dir": {"inner.txt": "z"}})
    (top / "dir-a").mkdir()
    assert diff([base], [top, base]) == ["M dash-sibling", "M dir/inner.txt", "A dir-a"]


def test_two_snapshots_diverging_from_a_common_layer(tmp_path: Path, base: Path) -> None:
    common = layer(tmp_path, "common", {"shared": "s"})
    left = layer(tmp_path, "left", {"shared": "left", "l": "l"})
    right = layer(tmp_path, "right", {"r": "r"})
    whiteout(right / "shared")
    assert diff([left, common, base], [right, common, base]) == ["D l", "A r", "D shared"]


def test_only_touched_layers_are_read(
    tmp_path: Path, base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(200):
        (base / f"bulk{i}").write_text(str(i))
    top = layer(tmp_path, "top", {"file.txt": "x"})
    calls: list[str] = []
    real_lstat, real_scandir = os.lstat, os.scandir

    def counting_lstat(path: object, *args: object, **kwargs: object) -> os.stat_result:
        calls.append(str(path))
        return real_lstat(path, *args, **kwargs)  # type: ignore[arg-type]

    def counting_scandir(path: object) -> object:
        calls.append(f"scandir {path}")
        return real_scandir(path)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "lstat", counting_lstat)
    monkeypatch.setattr(os, "scandir", counting_scandir)
    assert diff([base], [top, base]) == ["M file.txt"]
    # One scan of the top layer, lookups of one path in two layers and the roots: a
    # handful of calls, none of them about the 200 untouched files.
    assert len(calls) < 12
    assert not any("bulk" in c for c in calls)


def test_dir_state_against_a_chain(tmp_path: Path, base: Path) -> None:
    live = layer(tmp_path, "live", {"file.txt": "edited\n", "keep.txt": "keep\n"})
    tree = _statediff.touched_by_changes([Change(ChangeKind.MODIFY, "file.txt")])
    deltas = diff_states(ChainState([base]), DirState(live), tree)
    assert [str(d.change) for d in deltas] == ["M file.txt"]
    (delta,) = deltas
    assert delta.before is not None
    assert delta.after is not None
    assert delta.before.source == base / "file.txt"
    assert delta.after.source == live / "file.txt"


def test_same_size_rewrite_is_seen(tmp_path: Path, base: Path) -> None:
    top = layer(tmp_path, "top", {"file.txt": "ORIGINAL\n"})
    st = os.stat(base / "file.txt")
    os.utime(top / "file.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert diff([base], [top, base]) == ["M file.txt"]


# --- property: looking only at touched paths finds what a full comparison finds --------

PATHS = ("a", "b", "a/a", "a/b", "b/a", "a/a/a")
Kind = str  # "file:<data>", "dir", "opaque", "whiteout"

entry_kinds = st.sampled_from(["file:1", "file:2", "dir", "opaque", "whiteout", "none"])


@st.composite
def layer_specs(draw: Callable[..., object], *, plain: bool = False) -> dict[str, Kind]:
    spec: dict[str, Kind] = {}
    for path in PATHS:
        parent = path.rpartition("/")[0]
        if parent and spec.get(parent) not in ("dir", "opaque"):
            continue
        kind = draw(entry_kinds)
        assert isinstance(kind, str)
        if plain and kind in ("opaque", "whiteout"):
            kind = "dir" if kind == "opaque" else "none"
        if kind != "none":
            spec[path] = kind
    return spec


def write_layer(root: Path, spec: dict[str, Kind]) -> Path:
    root.mkdir()
    for path in PATHS:
        kind = spec.get(path)
        target = root / path
        if kind is None:
            continue
        if kind.startswith("file:"):
            target.write_text(kind[5:])
        elif kind == "whiteout":
            whiteout(target)
        else:
            target.mkdir()
            if kind == "opaque":
                opaque(target)
    return root


@given(
    base=layer_specs(plain=True),
    shared=st.lists(layer_specs(), max_size=2),
    left=st.lists(layer_specs(), max_size=2),
    right=st.lists(layer_specs(), max_size=2),
)
def test_touched_paths_are_enough(
    base: dict[str, Kind],
    shared: list[dict[str, Kind]],
    left: list[dict[str, Kind]],
    right: list[dict[str, Kind]],
) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        common = [write_layer(root / f"c{i}", s) for i, s in enumerate([*shared, base])]
        old = [write_layer(root / f"l{i}", s) for i, s in enumerate(left)] + common
        new = [write_layer(root / f"r{i}", s) for i, s in enumerate(right)] + common
        assert diff(old, new) == full_diff(old, new)
