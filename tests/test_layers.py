"""Layers: the pure representation, the bottom-up applier, and reading/writing on disk."""

from __future__ import annotations

import errno
import os
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_overlay.changes import diff_upper
from pytest_overlay.layers import (
    WHITEOUT,
    Dir,
    Entry,
    File,
    Layer,
    LayerError,
    Symlink,
    apply_layer,
    default_xattr_namespace,
    diff_layer,
    read_layer,
    squash,
    write_layer,
)
from pytest_overlay.model import UnionModel
from pytest_overlay.testing import layer_stacks, layers, name_pools


@contextmanager
def scratch_dir() -> Iterator[Path]:
    # Hypothesis runs many examples per test call: tmp_path would be shared by all of them.
    with tempfile.TemporaryDirectory(prefix="pytest-overlay-layers-") as name:
        yield Path(name)


# -- the representation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["", "/a", "a/", "a//b", "./a", "a/./b", "a/../b", "..", ".", "a\0b"],
)
def test_paths_must_be_normalised(path: str) -> None:
    with pytest.raises(ValueError, match="path"):
        Layer({path: File()})


@pytest.mark.parametrize(
    ("parent", "what"),
    [(None, "missing"), (File(), "a File"), (Symlink("x"), "a Symlink"), (WHITEOUT, "a Whiteout")],
)
def test_every_parent_must_be_a_directory(parent: File | Symlink | None, what: str) -> None:
    entries = {"p/child": File(b"x")} if parent is None else {"p": parent, "p/child": File()}
    with pytest.raises(LayerError, match=f"'p/child' needs its parent 'p' .* {what}"):
        Layer(entries)


def test_build_adds_missing_parents_and_iterates_parents_first() -> None:
    layer = Layer.build({"z": File(), "a/b/c": Symlink("t"), "a/x": WHITEOUT}, dir_mode=0o700)
    assert list(layer) == ["a", "a/b", "a/b/c", "a/x", "z"]
    assert layer["a"] == Dir(0o700)
    assert layer.children("a") == ("b", "x")
    assert layer.children() == ("a", "z")
    assert layer.children("z") == ()


def test_component_order_puts_a_directory_before_similar_names() -> None:
    # Plain string order would put "a b" and "a-b" between "a" and "a/b".
    layer = Layer.build({"a b": File(), "a/b": File(), "a-b": File()})
    assert list(layer) == ["a", "a/b", "a b", "a-b"]


def test_layers_compare_and_hash_by_content() -> None:
    one = Layer.build({"d/f": File(b"x", 0o600)})
    other = Layer({"d/f": File(b"x", 0o600), "d": Dir()})
    assert one == other
    assert hash(one) == hash(other)
    assert one != Layer.build({"d/f": File(b"x", 0o644)})
    assert one != Layer.build({"d/f": File(b"x", 0o600), "d": Dir(opaque=True)})


def test_with_entries_replaces_and_removes_subtrees() -> None:
    layer = Layer.build({"d/a": File(), "d/b/c": File(), "e": File()})
    assert layer.with_entries({"d/b": None, "e": WHITEOUT}) == Layer.build(
        {"d/a": File(), "e": WHITEOUT}
    )


@pytest.mark.parametrize("mode", [-1, 0o10000])
def test_modes_are_permission_bits_only(mode: int) -> None:
    with pytest.raises(ValueError, match="0o7777"):
        File(b"", mode)


def test_symlink_target_must_be_non_empty() -> None:
    with pytest.raises(ValueError, match="target"):
        Symlink("")


def test_reprs_read_like_code() -> None:
    layer = Layer.build({"d": Dir(0o700, opaque=True), "d/f": File(b"x", 0o600), "w": WHITEOUT})
    assert repr(layer) == (
        "Layer({'d': Dir(mode=0o700, opaque=True), 'd/f': File(b'x', mode=0o600), 'w': WHITEOUT})"
    )


# -- the bottom-up applier ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "layer", "expected"),
    [
        pytest.param(
            {"d/a": File(b"a"), "d/b": File(b"b")},
            {"d": Dir(0o700), "d/a": WHITEOUT},
            {"d": Dir(0o700), "d/b": File(b"b")},
            id="whiteout-deletes-and-dir-takes-new-mode",
        ),
        pytest.param(
            {"d/sub/x": File()},
            {"d": Dir(), "d/sub": WHITEOUT},
            {"d": Dir()},
            id="whiteout-deletes-a-subtree",
        ),
        pytest.param(
            {"d/a": File(b"a")},
            {"d": Dir(opaque=True), "d/n": File(b"n")},
            {"d": Dir(), "d/n": File(b"n")},
            id="opaque-dir-drops-base-contents",
        ),
        pytest.param(
            {"d/a": File(b"a")}, {"d": File(b"f")}, {"d": File(b"f")}, id="file-replaces-dir"
        ),
        pytest.param(
            {"d": File(b"f")},
            {"d": Dir(), "d/a": File()},
            {"d": Dir(), "d/a": File()},
            id="dir-replaces-file",
        ),
        pytest.param(
            {"x": File()}, {"w": WHITEOUT}, {"x": File()}, id="whiteout-of-nothing-is-harmless"
        ),
    ],
)
def test_apply_layer(
    base: dict[str, Entry], layer: dict[str, Entry], expected: dict[str, Entry]
) -> None:
    assert apply_layer(Layer.build(base), Layer.build(layer)) == Layer.build(expected)


@given(st.data())
def test_squash_agrees_with_the_top_down_lookup(data: st.DataObject) -> None:
    # Two independent readings of a stack: image-builder style (apply bottom-up) and
    # overlayfs style (look up top-down, as the model does).
    pool = data.draw(name_pools())
    lowers = data.draw(layer_stacks(pool))
    assert squash(lowers) == UnionModel(lowers).merged()


# -- the pure diff against the on-disk diff ------------------------------------------------


@given(st.data())
def test_diff_layer_matches_diff_upper_on_disk(data: st.DataObject) -> None:
    pool = data.draw(name_pools())
    lowers = data.draw(layer_stacks(pool))
    upper = data.draw(layers(pool))
    with scratch_dir() as root:
        write_layer(upper, root / "upper")
        for index, lower in enumerate(lowers):
            write_layer(lower, root / f"lower{index}")
        on_disk = diff_upper(root / "upper", [root / f"lower{i}" for i in range(len(lowers))])
    assert on_disk == diff_layer(upper, lowers)


# -- reading and writing --------------------------------------------------------------------


@pytest.fixture
def xattr_namespace() -> str:
    return default_xattr_namespace()


@given(layers())
def test_write_then_read_gives_the_same_layer(layer: Layer) -> None:
    with scratch_dir() as root:
        write_layer(layer, root / "layer")
        assert read_layer(root / "layer") == layer


@given(layers())
def test_xattr_whiteouts_read_back_as_whiteouts(layer: Layer) -> None:
    # An opaque directory cannot hold xattr whiteouts (same xattr, different value).
    def in_opaque_dir(path: str) -> bool:
        parent = layer.get(path.rpartition("/")[0])
        return isinstance(parent, Dir) and parent.opaque

    layer = layer.with_entries(
        {p: None for p, e in layer.items() if e == WHITEOUT and in_opaque_dir(p)}
    )
    with scratch_dir() as root:
        write_layer(layer, root / "layer", whiteouts="xattr")
        assert read_layer(root / "layer") == layer


def test_read_layer_knows_every_marker(tmp_path: Path, xattr_namespace: str) -> None:
    root = tmp_path / "layer"
    root.mkdir()
    os.mknod(root / "chardev", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    (root / "xattr-whiteout").write_bytes(b"")
    os.setxattr(root / "xattr-whiteout", f"{xattr_namespace}.overlay.whiteout", b"y")
    for marker in [f"{xattr_namespace}.overlay.opaque", "user.fuseoverlayfs.opaque"]:
        (root / marker).mkdir()
        os.setxattr(root / marker, marker, b"y")
    (root / "whiteouts-container").mkdir()
    os.setxattr(root / "whiteouts-container", f"{xattr_namespace}.overlay.opaque", b"x")
    (root / "bookkeeping").write_bytes(b"data")
    os.setxattr(root / "bookkeeping", f"{xattr_namespace}.overlay.origin", b"\0\1")
    (root / "empty").write_bytes(b"")
    (root / ".wh..wh..opq").write_bytes(b"")  # an ordinary name on kernel overlayfs
    assert read_layer(root) == Layer(
        {
            ".wh..wh..opq": File(b"", 0o644),
            "bookkeeping": File(b"data", 0o644),
            "chardev": WHITEOUT,
            "empty": File(b"", 0o644),
            f"{xattr_namespace}.overlay.opaque": Dir(0o755, opaque=True),
            "user.fuseoverlayfs.opaque": Dir(0o755, opaque=True),
            "whiteouts-container": Dir(0o755),
            "xattr-whiteout": WHITEOUT,
        }
    )


def _bind_socket(name: str) -> None:
    # Relative to the working directory: socket paths are limited to 108 bytes.
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(name)


def _make_null_device(name: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a real device node needs CAP_MKNOD")
    os.mknod(name, stat.S_IFCHR | 0o600, os.makedev(1, 3))


@pytest.mark.parametrize(
    ("make", "description"),
    [
        (os.mkfifo, "a FIFO"),
        (_make_null_device, "a character device 1/3"),
        (_bind_socket, "a socket"),
    ],
    ids=["fifo", "chardev", "socket"],
)
def test_read_layer_refuses_special_files_by_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[[str], None], description: str
) -> None:
    (tmp_path / "layer" / "sub").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "layer" / "sub")
    make("odd")
    with pytest.raises(LayerError, match=f"{tmp_path / 'layer' / 'sub' / 'odd'}'.*{description}"):
        read_layer(tmp_path / "layer")


def test_read_layer_needs_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(LayerError, match="not a directory"):
        read_layer(tmp_path / "file")


def test_write_layer_sets_modes_exactly_even_read_only_dirs(tmp_path: Path) -> None:
    layer = Layer.build({"ro": Dir(0o555), "ro/f": File(b"x", 0o400), "s": Symlink("ro/f")})
    old = os.umask(0o077)
    try:
        write_layer(layer, tmp_path / "layer")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "layer" / "ro").st_mode) == 0o555
    assert read_layer(tmp_path / "layer") == layer
    os.chmod(tmp_path / "layer" / "ro", 0o755)  # let tmp_path cleanup in


def test_write_layer_marks_opaque_in_the_chosen_namespace(tmp_path: Path) -> None:
    write_layer(Layer.build({"d": Dir(opaque=True)}), tmp_path / "layer", xattr_namespace="user")
    assert os.getxattr(tmp_path / "layer" / "d", "user.overlay.opaque") == b"y"


def test_write_layer_marks_the_parent_of_xattr_whiteouts(tmp_path: Path) -> None:
    write_layer(
        Layer.build({"d/w": WHITEOUT, "d/v": WHITEOUT}),
        tmp_path / "layer",
        whiteouts="xattr",
        xattr_namespace="user",
    )
    assert os.getxattr(tmp_path / "layer" / "d", "user.overlay.opaque") == b"x"
    assert os.getxattr(tmp_path / "layer" / "d" / "w", "user.overlay.whiteout") == b"y"


def test_write_layer_refuses_xattr_whiteouts_in_opaque_dirs(tmp_path: Path) -> None:
    layer = Layer.build({"d": Dir(opaque=True), "d/w": WHITEOUT})
    with pytest.raises(LayerError, match=r"'d/w'.*whiteouts='chardev'"):
        write_layer(layer, tmp_path / "layer", whiteouts="xattr")


@pytest.mark.parametrize("content", ["file", "symlink"])
def test_write_layer_refuses_a_target_with_content(tmp_path: Path, content: str) -> None:
    target = tmp_path / "layer"
    if content == "file":
        target.mkdir()
        (target / "existing").write_bytes(b"")
    else:
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(LayerError, match="missing or empty directory"):
        write_layer(Layer.build({"a": File()}), target)
    assert not (tmp_path / "elsewhere" / "a").exists()


def test_write_layer_names_the_alternative_when_whiteouts_are_not_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "mknod", refuse)
    with pytest.raises(LayerError, match=r"'.*/w'.*whiteouts='xattr'.*write_tar"):
        write_layer(Layer.build({"w": WHITEOUT}), tmp_path / "layer")


@pytest.mark.parametrize(("euid", "expected"), [(0, "trusted"), (1000, "user")])
def test_default_xattr_namespace_follows_the_mount_kind(
    monkeypatch: pytest.MonkeyPatch, euid: int, expected: str
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    assert default_xattr_namespace() == expected
