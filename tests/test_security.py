"""Attacks on the promises of docs/security.rst, each tried as an attacker would.

The trusted party is the test code; archive contents and other local users are not.
Every test here reproduces a way through that once worked and checks that it now fails
safe: nothing written outside, modes untouched, the base byte-identical, a clear error.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import os
import stat
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest

from pytest_overlay import OverlayError, OverlayStack
from pytest_overlay._backends.protocol import Backend
from pytest_overlay.layers import (
    WHITEOUT,
    Dir,
    File,
    Layer,
    LayerError,
    read_layer,
    write_layer,
)
from pytest_overlay.oci import TarLimits, extract_tar, read_tar
from tests.helpers import make_tree, tree_digest
from tests.test_oci import member, tar_of


def test_write_layer_never_follows_a_directory_swapped_for_a_symlink(tmp_path: Path) -> None:
    # Another process waits for a directory of the layer to appear, renames it away and
    # puts a symlink to a directory it wants filled (and opened up to 0o777) in its place.
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    os.chmod(outside, 0o755)
    target = tmp_path / "target"
    entries = {"d": Dir(0o777)} | {f"d/f{i:04}": File(b"x", 0o644) for i in range(3000)}
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        deadline = time.monotonic() + 10
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                os.rename(target / "d", tmp_path / f"moved-{swaps}")
                os.symlink(outside, target / "d")
                swaps += 1
                return
            except OSError:
                time.sleep(0)

    swapper = threading.Thread(target=swap)
    swapper.start()
    error = ""
    try:
        write_layer(Layer.build(entries), target)
    except LayerError as exc:  # the swap came between mkdir and open: refused
        error = str(exc)
    finally:
        stop.set()
        swapper.join()
    assert swaps == 1
    assert error == "" or "changed while the layer was being written" in error
    assert os.listdir(outside) == []
    assert stat.S_IMODE(os.stat(outside).st_mode) == 0o755


def test_write_layer_refuses_a_target_owned_by_another_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whoever owns the (empty) target can swap its contents while root fills it.
    target = tmp_path / "target"
    target.mkdir()
    owner = os.stat(target).st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(LayerError, match=f"belongs to uid {owner}, not to this process"):
        write_layer(Layer.build({"f": File(b"x")}), target)
    assert os.listdir(target) == []


def test_extract_refuses_a_target_owned_by_another_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    owner = os.stat(target).st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1)
    with pytest.raises(LayerError, match="belongs to uid"):
        extract_tar(tar_of((member("f"), b"x")), target)
    assert os.listdir(target) == []


SPECIAL = tar_of(
    (member("bin/id", mode=0o4755), b"\x7fELF"),
    (member("bin/sg", mode=0o2711), b"\x7fELF"),
    member("tmp", tarfile.DIRTYPE, mode=0o1777),
    member("shared", tarfile.DIRTYPE, mode=0o2775),
)


def test_import_strips_setuid_setgid_and_sticky_bits(tmp_path: Path) -> None:
    # A root-owned setuid binary in a layer any user can reach runs as root.
    SPECIAL.seek(0)
    layer = extract_tar(SPECIAL, tmp_path / "target")
    modes = {path: entry.mode for path, entry in layer.items() if isinstance(entry, (Dir, File))}
    assert modes == {"bin": 0o755, "bin/id": 0o755, "bin/sg": 0o711, "tmp": 0o777, "shared": 0o775}
    for path in modes:
        on_disk = os.lstat(tmp_path / "target" / path).st_mode
        assert on_disk & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX) == 0, path


def test_import_keeps_special_bits_when_asked(tmp_path: Path) -> None:
    SPECIAL.seek(0)
    layer = read_tar(SPECIAL, keep_special_bits=True)
    modes = [getattr(layer[p], "mode", None) for p in ("bin/id", "bin/sg", "tmp", "shared")]
    assert modes == [0o4755, 0o2711, 0o1777, 0o2775]
    SPECIAL.seek(0)
    extract_tar(SPECIAL, tmp_path / "target", keep_special_bits=True)
    assert read_layer(tmp_path / "target")["tmp"] == Dir(0o1777)


def test_a_temporary_directory_inside_the_base_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: Backend
) -> None:
    # TMPDIR inside the base would put the default workspace, and so the upper layer,
    # in the base (the copy backend would copy its own copy until ENAMETOOLONG).
    base = make_tree(tmp_path / "base", {"data": {"file.txt": "original"}, "tmp": {}})
    before = tree_digest(base)
    monkeypatch.setattr(tempfile, "tempdir", str(base / "tmp"))
    with (
        pytest.raises(OverlayError, match=r"temporary directory .*base/tmp.* TMPDIR"),
        OverlayStack([base], backend=backend) as stack,
    ):
        (stack.merged / "data" / "file.txt").write_text("changed")
    assert tree_digest(base) == before


@pytest.mark.parametrize("spelling", ["absolute-via-alias", "relative-climbing-to-root"])
def test_copy_backend_link_into_the_base_by_another_path_stays_in_the_copy(
    tmp_path: Path, spelling: str
) -> None:
    # The rewrite of absolute links compared normalised strings: a link that reaches the
    # base through a symlinked alias, or climbs out with '..' and back in, escaped it.
    base = make_tree(tmp_path / "base", {"data": {"file.txt": "original"}})
    (tmp_path / "alias").symlink_to(base)
    if spelling == "absolute-via-alias":
        (base / "link").symlink_to(tmp_path / "alias" / "data" / "file.txt")
    else:
        climb = "../" * 40 + str(tmp_path / "alias" / "data" / "file.txt").lstrip("/")
        (base / "link").symlink_to(climb)
    before = tree_digest(base)
    with OverlayStack([base], workspace=tmp_path / "ws", backend="copy") as stack:
        with open(stack.merged / "link", "a") as f:
            f.write("appended through the link")
        assert (stack.merged / "data" / "file.txt").read_text().endswith("through the link")
    assert tree_digest(base) == before


def test_a_link_climbing_out_of_the_base_does_not_reach_the_base(
    tmp_path: Path, backend: Backend
) -> None:
    # merged/.. is the workspace. The fuse backend kept symlinks to the real lowers
    # there, so base/parent -> .. gave a writable path to the base:
    # merged/parent/lowers/0/data/file.txt.
    base = make_tree(tmp_path / "base", {"data": {"file.txt": "original"}})
    (base / "parent").symlink_to("..")
    before = tree_digest(base)
    with OverlayStack([base], workspace=tmp_path / "ws", backend=backend) as stack:
        visible = set(os.listdir(stack.merged / "parent"))
        for name in visible:
            for dirpath, _, filenames in os.walk(stack.merged / "parent" / name):
                for filename in filenames:
                    if filename == "file.txt":
                        with contextlib.suppress(OSError), open(Path(dirpath, filename), "a") as f:
                            f.write("escaped")
    assert tree_digest(base) == before
    assert "lowers" not in visible


def gzipped(*entries: tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    return io.BytesIO(gzip.compress(tar_of(*entries).getvalue(), compresslevel=1))


def test_import_refuses_a_compression_bomb_before_expanding_it(tmp_path: Path) -> None:
    # 16 MiB of zeros compress to about 16 KiB; 3 GiB got the reader OOM-killed.
    bomb = gzipped((member("zeros"), bytes(16 << 20)))
    assert len(bomb.getvalue()) < 100_000
    with pytest.raises(LayerError, match=r"'zeros'.*TarLimits.max_ratio"):
        extract_tar(bomb, tmp_path / "target")
    assert os.listdir(tmp_path) == []


def test_import_refuses_a_member_claiming_more_than_the_limit(tmp_path: Path) -> None:
    # A sparse member (or a bare header) claiming 64 GiB raised a bare MemoryError.
    header = member("huge")
    header.size = 64 << 30
    claim = io.BytesIO(header.tobuf(tarfile.GNU_FORMAT) + bytes(10240))
    with pytest.raises(LayerError, match=r"'huge' \(68719476736 bytes\).*TarLimits.max_bytes"):
        extract_tar(claim, tmp_path / "target")
    assert os.listdir(tmp_path) == []


def test_import_refuses_a_name_too_long_before_writing_anything(tmp_path: Path) -> None:
    # Once a bare OSError after part of the layer was written.
    archive = tar_of((member("a/first"), b"1"), (member("a/" + "x" * 300), b"2"))
    with pytest.raises(LayerError, match=r"is 300 bytes long, more than a Linux file name"):
        extract_tar(archive, tmp_path / "target")
    assert os.listdir(tmp_path) == []


def test_tar_limits_are_parameters_and_count_hard_links(tmp_path: Path) -> None:
    three = tar_of(member("a"), member("b"), member("c"))
    with pytest.raises(LayerError, match=r"'c'.*more than 2 members"):
        read_tar(three, limits=TarLimits(max_members=2))
    linked = tar_of((member("f"), b"123456"), member("g", tarfile.LNKTYPE, linkname="f"))
    with pytest.raises(LayerError, match=r"'g' \(6 bytes\).*over 10 bytes"):
        read_tar(linked, limits=TarLimits(max_bytes=10))
    linked.seek(0)
    assert len(read_tar(linked, limits=TarLimits(max_bytes=12))) == 2
    bomb = gzipped((member("zeros"), bytes(4 << 20)))
    assert read_tar(bomb, limits=TarLimits(max_ratio=10_000))["zeros"] == File(bytes(4 << 20))


@pytest.mark.parametrize("existing", [False, True])
def test_a_layer_that_cannot_be_written_completely_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    target = tmp_path / "target"
    if existing:
        target.mkdir()
    layer = Layer.build(
        {"a": Dir(0o555), "a/f": File(b"x", 0o400), "a/z": Dir(0o000), "z/w": WHITEOUT}
    )
    monkeypatch.setattr(os, "mknod", refuse)
    with pytest.raises(LayerError, match="cannot create the whiteout"):
        write_layer(layer, target)
    assert os.listdir(tmp_path) == (["target"] if existing else [])
    assert not existing or os.listdir(target) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
def test_root_refuses_to_extract_into_a_directory_another_user_made(tmp_path: Path) -> None:
    # The attacker's half of the race: an ordinary user makes the empty target, root
    # extracts into it, the user swaps its subdirectories for links to root's files.
    target = tmp_path / "target"
    target.mkdir()
    os.chown(target, 65534, 65534)
    with pytest.raises(LayerError, match="belongs to uid 65534, not to this process"):
        extract_tar(tar_of((member("d/f"), b"x")), target)
    assert os.listdir(target) == []
