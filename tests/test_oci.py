"""OCI layer tarballs: the exact export, round trips, and an import that trusts nothing."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given

from pytest_overlay.layers import (
    WHITEOUT,
    Dir,
    Entry,
    File,
    Layer,
    LayerError,
    Symlink,
    read_layer,
)
from pytest_overlay.oci import extract_tar, read_tar, write_tar
from pytest_overlay.testing import layers


def exported(layer: Layer) -> bytes:
    buffer = io.BytesIO()
    write_tar(layer, buffer)
    return buffer.getvalue()


def members(data: bytes) -> list[tuple[str, str, int]]:
    kinds = {tarfile.REGTYPE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink"}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, kinds[m.type], m.mode) for m in tar]


def test_export_uses_oci_whiteout_markers() -> None:
    layer = Layer.build(
        {
            "d": Dir(0o700, opaque=True),
            "d/new": File(b"n", 0o600),
            "d/gone": WHITEOUT,
            "link": Symlink("d/new"),
            "old": WHITEOUT,
        }
    )
    assert members(exported(layer)) == [
        ("d", "dir", 0o700),
        ("d/.wh..wh..opq", "file", 0o644),
        ("d/.wh.gone", "file", 0o644),
        ("d/new", "file", 0o600),
        ("link", "symlink", 0o777),
        (".wh.old", "file", 0o644),
    ]


def test_export_is_reproducible_and_owned_by_root() -> None:
    layer = Layer.build({"d/f": File(b"x")})
    assert exported(layer) == exported(layer)
    with tarfile.open(fileobj=io.BytesIO(exported(layer))) as tar:
        assert {(m.uid, m.gid, m.mtime, m.uname) for m in tar} == {(0, 0, 0, "")}


@given(layers())
def test_export_then_import_gives_the_same_layer(layer: Layer) -> None:
    if any(path.rpartition("/")[2].startswith(".wh.") for path in layer):
        with pytest.raises(LayerError, match="whiteout markers"):
            exported(layer)
        return
    assert read_tar(io.BytesIO(exported(layer))) == layer


@pytest.mark.parametrize("entry", [File(), Dir(), Symlink("t"), WHITEOUT])
def test_export_refuses_names_that_read_back_as_markers(entry: Entry) -> None:
    with pytest.raises(LayerError, match=r"'d/\.wh\.x' cannot be stored"):
        exported(Layer.build({"d/.wh.x": entry}))


def tar_of(*entries: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info, data = entry if isinstance(entry, tuple) else (entry, b"")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def member(
    name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, **extra: object
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    for key, value in extra.items():
        setattr(info, key, value)
    return info


def test_import_fills_in_parents_and_accepts_the_usual_spellings() -> None:
    layer = read_tar(
        tar_of(
            member("./", tarfile.DIRTYPE, 0o755),
            (member("./a/b/f", mode=0o600), b"data"),
            member("a/b", tarfile.DIRTYPE, 0o700),  # listed after its content: takes its mode
            member("a/b/.wh..wh..opq"),
            member("./a/.wh.gone"),
            member("overlay-style-whiteout", tarfile.CHRTYPE, 0, devmajor=0, devminor=0),
            member("hard", tarfile.LNKTYPE, linkname="a/b/f"),
            member("s", tarfile.SYMTYPE, linkname="/absolute/is/fine/as/a/target"),
        )
    )
    assert layer == Layer(
        {
            "a": Dir(0o755),
            "a/b": Dir(0o700, opaque=True),
            "a/b/f": File(b"data", 0o600),
            "a/gone": WHITEOUT,
            "hard": File(b"data", 0o600),
            "overlay-style-whiteout": WHITEOUT,
            "s": Symlink("/absolute/is/fine/as/a/target"),
        }
    )


def test_import_reads_compressed_tarballs(tmp_path: Path) -> None:
    layer = Layer.build({"d/f": File(b"x" * 1000)})
    with tarfile.open(tmp_path / "layer.tar.gz", "w:gz") as tar:
        for name, kind, mode in members(exported(layer)):
            info = member(name, {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE}[kind], mode)
            data = b"x" * 1000 if kind == "file" else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert read_tar(tmp_path / "layer.tar.gz") == layer


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        pytest.param([member("/etc/passwd")], r"'/etc/passwd': absolute", id="absolute"),
        pytest.param([member("a/../../x")], r"'a/\.\./\.\./x': '\.\.' would escape", id="dotdot"),
        pytest.param(
            [member("link", tarfile.SYMTYPE, linkname="/etc"), member("link/passwd")],
            r"'link/passwd' lies below the symlink 'link'",
            id="through-symlink",
        ),
        pytest.param(
            [member("link", tarfile.SYMTYPE, linkname=".."), member("link/.wh.x")],
            r"'link/\.wh\.x' lies below the symlink",
            id="whiteout-through-symlink",
        ),
        pytest.param(
            [member("null", tarfile.CHRTYPE, devmajor=1, devminor=3)],
            r"'null' is a device node 1/3",
            id="char-device",
        ),
        pytest.param(
            [member("disk", tarfile.BLKTYPE, devmajor=8, devminor=0)],
            r"'disk' is a device node 8/0",
            id="block-device",
        ),
        pytest.param([member("pipe", tarfile.FIFOTYPE)], r"'pipe' is a FIFO", id="fifo"),
        pytest.param(
            [member("h", tarfile.LNKTYPE, linkname="nowhere")],
            r"'h': hard link to 'nowhere'",
            id="hardlink-to-missing",
        ),
        pytest.param([member("d/.wh..wh.plnk")], r"'d/\.wh\.\.wh\.plnk'.*reserved", id="reserved"),
        pytest.param([member("f"), member("f")], r"'f'.*already in the layer", id="duplicate"),
        pytest.param(
            [member("f"), member(".wh.f")],
            r"'\.wh\.f'.*already in the layer",
            id="whiteout-and-name",
        ),
        pytest.param(
            [member("f"), member("f/g")], r"'f/g' lies below 'f', which is a file", id="under-file"
        ),
        pytest.param(
            [member(".wh..wh..opq")], r"'\.wh\.\.wh\.\.opq': the layer root", id="opaque-root"
        ),
        pytest.param(
            [member("d/.wh.x", tarfile.DIRTYPE)],
            r"'d/\.wh\.x' must be an empty regular file",
            id="dir-marker",
        ),
    ],
)
def test_import_refuses_unsafe_members_by_name(
    entries: list[tarfile.TarInfo], message: str, tmp_path: Path
) -> None:
    with pytest.raises(LayerError, match=message):
        read_tar(tar_of(*entries))
    with pytest.raises(LayerError, match=message):
        extract_tar(tar_of(*entries), tmp_path / "target")
    assert os.listdir(tmp_path) == []  # checked before anything is written


def test_extract_writes_the_layer_and_nothing_else(tmp_path: Path) -> None:
    layer = Layer.build({"d": Dir(opaque=True), "d/f": File(b"x"), "w": WHITEOUT})
    target = tmp_path / "target"
    assert extract_tar(io.BytesIO(exported(layer)), target) == layer
    assert read_layer(target) == layer
    assert os.listdir(tmp_path) == ["target"]


def test_extract_needs_an_empty_target(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "existing").write_bytes(b"")
    with pytest.raises(LayerError, match="missing or empty"):
        extract_tar(io.BytesIO(exported(Layer.build({"a": File()}))), tmp_path / "target")


def test_extract_of_a_symlink_then_a_file_of_the_same_name_cannot_escape(tmp_path: Path) -> None:
    # The classic attack: a symlink to the outside, then a member written "through" it
    # by reusing the name. Here the second member is a duplicate and nothing is written.
    outside = tmp_path / "outside"
    outside.mkdir()
    attack = tar_of(
        member("x", tarfile.SYMTYPE, linkname=str(outside / "victim")), (member("x"), b"owned")
    )
    with pytest.raises(LayerError, match="already in the layer"):
        extract_tar(attack, tmp_path / "target")
    assert os.listdir(outside) == []
    assert not (tmp_path / "target").exists()
