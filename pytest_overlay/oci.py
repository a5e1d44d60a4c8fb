"""OCI image layer tarballs: export a :class:`~pytest_overlay.layers.Layer`, import one.

The OCI image spec (``layer.md``, "Whiteouts") encodes a deletion as an empty file
``.wh.<name>`` next to the deleted name, and an opaque directory as an empty file
``.wh..wh..opq`` inside it. Exported tarballs are reproducible: sorted members, owner
0:0, mtime 0, PAX format (so unicode names survive).

Importing is strict, because a tarball is untrusted input. Absolute names, ``..``,
members below a symlink, device nodes (other than overlayfs's character device 0/0
whiteouts), FIFOs and duplicate members are refused with a :class:`LayerError` that
names the member. Setuid, setgid and sticky bits are dropped unless the caller asks to
keep them (``keep_special_bits=True``): a root-owned setuid file extracted by root would
run as root for any local user. :func:`read_tar` only builds a layer in memory;
:func:`extract_tar` then writes it with :func:`~pytest_overlay.layers.write_layer` into a
missing or empty directory of this user's, so nothing is ever written outside it.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from pytest_overlay._layers import format as _format
from pytest_overlay._layers.io import write_layer
from pytest_overlay._layers.layer import (
    WHITEOUT,
    Dir,
    Entry,
    File,
    Layer,
    LayerError,
    Symlink,
    Whiteout,
)

__all__ = ["TarLimits", "extract_tar", "read_tar", "write_tar"]

TarSource = str | os.PathLike[str] | IO[bytes]

#: Mode of the directories an importer adds when a tarball lists ``a/b`` without ``a/``
#: (what Docker and containerd use).
IMPLICIT_DIR_MODE = 0o755


@dataclass(frozen=True)
class TarLimits:
    """How much an imported tarball may hold; checked from the headers before any data
    is read, so an archive bomb is refused without being expanded.

    *max_members*: members in the tarball. *max_bytes*: the data of all regular files
    together, as the headers declare it (a sparse member counts its full size).
    *max_ratio*: that total over the size of the archive as read (plain or compressed);
    checked once the total passes 1 MiB, since small tarballs of empty files expand a lot.
    """

    max_members: int = 1_000_000
    max_bytes: int = 1 << 30
    max_ratio: float = 100.0


#: Expansion below this many bytes is never refused by :attr:`TarLimits.max_ratio`.
RATIO_FLOOR = 1 << 20
_CHUNK = 1 << 20
#: The longest name one directory entry may have on Linux filesystems (NAME_MAX).
NAME_MAX = 255


def write_tar(layer: Mapping[str, Entry], target: TarSource) -> None:
    """Write *layer* to *target* (a path or a binary file object) as an OCI layer tar.

    Raises :class:`LayerError` for a name that starts with ``.wh.`` (a file, directory,
    symlink or whiteout): in a tarball it would read back as a marker, so such a layer has
    no OCI form.
    """
    if not isinstance(layer, Layer):
        layer = Layer(layer)
    for path in layer:
        name = path.rpartition("/")[2]
        # A whiteout of such a name would become ".wh..wh.<rest>", which OCI reserves.
        if name.startswith(_format.OCI_WHITEOUT_PREFIX):
            raise LayerError(
                f"{path!r} cannot be stored in an OCI layer: names starting with "
                f"{_format.OCI_WHITEOUT_PREFIX!r} are whiteout markers there"
            )
    with _open(target, "w") as tar:
        for path, entry in layer.items():
            if isinstance(entry, Whiteout):
                parent, _, name = path.rpartition("/")
                marker = _join(parent, _format.OCI_WHITEOUT_PREFIX + name)
                tar.addfile(_member(marker, tarfile.REGTYPE, 0o644), io.BytesIO(b""))
            elif isinstance(entry, Dir):
                tar.addfile(_member(path, tarfile.DIRTYPE, entry.mode))
                if entry.opaque:
                    marker = _join(path, _format.OCI_OPAQUE_MARKER)
                    tar.addfile(_member(marker, tarfile.REGTYPE, 0o644), io.BytesIO(b""))
            elif isinstance(entry, Symlink):
                info = _member(path, tarfile.SYMTYPE, 0o777)
                info.linkname = entry.target
                tar.addfile(info)
            else:
                info = _member(path, tarfile.REGTYPE, entry.mode)
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))


def read_tar(
    source: TarSource, *, keep_special_bits: bool = False, limits: TarLimits | None = None
) -> Layer:
    """Read an OCI layer tarball (plain or compressed) into a layer, writing nothing.

    Hard links become independent copies of their target's data (a layer has no link
    identity). Parent directories missing from the tarball are added with mode 0o755.
    Modes keep only their permission bits (``0o777``) unless *keep_special_bits* is true,
    which keeps setuid, setgid and sticky bits too: only for tarballs you trust.
    *limits* (default :class:`TarLimits()`) bounds the members, their total size and
    the expansion ratio.
    """
    with _open(source, "r") as tar:
        # A decompressing reader keeps the archive's own file object as .fileobj.
        archive = getattr(tar.fileobj, "fileobj", tar.fileobj)
        importer = _Importer(
            0o7777 if keep_special_bits else 0o777, limits or TarLimits(), archive
        )
        for member in tar:
            importer.count(member)
            importer.add(member, tar)
    return importer.layer()


def extract_tar(
    source: TarSource,
    target: str | os.PathLike[str],
    *,
    whiteouts: Literal["chardev", "xattr"] = "chardev",
    keep_special_bits: bool = False,
    limits: TarLimits | None = None,
) -> Layer:
    """Import *source* into the missing or empty directory *target* as an overlay layer.

    The tarball is fully read and checked first, so a bad member leaves *target*
    untouched. *target* must be missing or belong to this process's user. Setuid,
    setgid and sticky bits are dropped unless *keep_special_bits* is true (see
    :func:`read_tar`), and *limits* bounds what the tarball may hold. A layer that
    cannot be written completely is removed again. Returns the layer that was written.
    """
    layer = read_tar(source, keep_special_bits=keep_special_bits, limits=limits)
    write_layer(layer, target, whiteouts=whiteouts)
    return layer


def _open(source: TarSource, mode: Literal["r", "w"]) -> tarfile.TarFile:
    if isinstance(source, (str, os.PathLike)):
        if mode == "r":
            return tarfile.open(Path(source), "r:*")
        return tarfile.open(Path(source), "w", format=tarfile.PAX_FORMAT)
    if mode == "r":
        return tarfile.open(fileobj=source, mode="r:*")
    return tarfile.open(fileobj=source, mode="w", format=tarfile.PAX_FORMAT)


def _position(fileobj: object) -> int:
    tell = getattr(fileobj, "tell", None)
    try:
        return int(tell()) if tell is not None else 0
    except (OSError, ValueError):
        return 0


def _join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def _normalise(name: str) -> str | None:
    """*name* as a layer path (None for the root); refuses names that leave the layer."""
    if name.startswith("/"):
        raise LayerError(f"member {name!r}: absolute paths are not allowed in a layer")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise LayerError(f"member {name!r}: '..' would escape the layer")
    for part in parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise LayerError(
                f"member {name!r}: the name {part[:40]!r}... is {len(os.fsencode(part))} "
                f"bytes long, more than a Linux file name may have ({NAME_MAX})"
            )
    return "/".join(parts) or None


def _member(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _Importer:
    """Builds a layer from tar members, refusing anything unsafe or ambiguous."""

    def __init__(self, mode_mask: int, limits: TarLimits, archive: object) -> None:
        self.mode_mask = mode_mask
        self.limits = limits
        # The file object the (compressed) archive is read from, to tell how much was read.
        self.archive = archive
        self.members = 0
        self.size = 0
        self.expanded = 0
        self.entries: dict[str, Entry] = {}
        self.explicit: set[str] = set()

    def count(self, member: tarfile.TarInfo) -> None:
        """Refuse *member* before its data is read if it takes the tarball over a limit."""
        limits = self.limits
        self.members += 1
        if self.members > limits.max_members:
            raise LayerError(
                f"member {member.name!r}: the tarball has more than {limits.max_members} "
                "members (TarLimits.max_members); pass limits=TarLimits(max_members=...) "
                "to import it if you trust it"
            )
        if member.isreg():
            self._charge(member, member.size)

    def _charge(self, member: tarfile.TarInfo, size: int) -> None:
        # Hard links count too: each becomes a full copy when the layer is written.
        self.size += size
        if self.size > self.limits.max_bytes:
            raise LayerError(
                f"member {member.name!r} ({size} bytes) takes the files of the tarball "
                f"over {self.limits.max_bytes} bytes (TarLimits.max_bytes); pass "
                "limits=TarLimits(max_bytes=...) to import it if you trust it"
            )

    def layer(self) -> Layer:
        return Layer(self.entries)

    def add(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        path = _normalise(member.name)
        if path is None:
            if not member.isdir():
                raise LayerError(f"member {member.name!r}: the layer root must be a directory")
            return
        parent, _, name = path.rpartition("/")
        self._make_parents(member, parent)
        if name == _format.OCI_OPAQUE_MARKER:
            self._expect_regular(member, "an opaque marker")
            if not parent:
                raise LayerError(f"member {member.name!r}: the layer root cannot be opaque")
            directory = self.entries[parent]
            assert isinstance(directory, Dir)
            self.entries[parent] = Dir(directory.mode, opaque=True)
            return
        if name.startswith(_format.OCI_WHITEOUT_PREFIX + _format.OCI_WHITEOUT_PREFIX):
            raise LayerError(
                f"member {member.name!r}: names starting with '.wh..wh.' are reserved "
                "by the OCI spec (only .wh..wh..opq has a meaning)"
            )
        if name.startswith(_format.OCI_WHITEOUT_PREFIX):
            self._expect_regular(member, "a whiteout marker")
            hidden = name[len(_format.OCI_WHITEOUT_PREFIX) :]
            if hidden in ("", ".", ".."):
                raise LayerError(f"member {member.name!r}: whiteout of an invalid name")
            self._put(member, _join(parent, hidden), WHITEOUT)
            return
        self._put(member, path, self._entry(member, tar))

    def _make_parents(self, member: tarfile.TarInfo, parent: str) -> None:
        if not parent:
            return
        ancestors = parent.split("/")
        for depth in range(1, len(ancestors) + 1):
            path = "/".join(ancestors[:depth])
            existing = self.entries.get(path)
            if existing is None:
                self.entries[path] = Dir(IMPLICIT_DIR_MODE)
            elif isinstance(existing, Symlink):
                raise LayerError(
                    f"member {member.name!r} lies below the symlink {path!r}: extracting "
                    "it would write wherever the link points"
                )
            elif not isinstance(existing, Dir):
                what = "a whiteout" if isinstance(existing, Whiteout) else "a file"
                raise LayerError(f"member {member.name!r} lies below {path!r}, which is {what}")

    def _put(self, member: tarfile.TarInfo, path: str, entry: Entry) -> None:
        existing = self.entries.get(path)
        if existing is not None:
            if isinstance(existing, Dir) and isinstance(entry, Dir) and path not in self.explicit:
                # An implicit parent made earlier, now listed itself: take its mode.
                entry = Dir(entry.mode, opaque=existing.opaque)
            else:
                raise LayerError(
                    f"member {member.name!r}: {path!r} is already in the layer "
                    "(duplicate member, or a whiteout next to the name it deletes)"
                )
        self.entries[path] = entry
        self.explicit.add(path)

    def _entry(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> Entry:
        mode = member.mode & self.mode_mask
        if member.isdir():
            return Dir(mode)
        if member.isreg():
            return File(self._read(member, tar), mode)
        if member.issym():
            if not member.linkname:
                raise LayerError(f"member {member.name!r}: symlink with an empty target")
            return Symlink(member.linkname)
        if member.islnk():
            target = _normalise(member.linkname)
            found = self.entries.get(target) if target else None
            if not isinstance(found, File):
                raise LayerError(
                    f"member {member.name!r}: hard link to {member.linkname!r}, which is not "
                    "a regular file earlier in this layer"
                )
            self._charge(member, len(found.data))
            return File(found.data, found.mode)
        if member.ischr() and member.devmajor == 0 and member.devminor == 0:
            return WHITEOUT  # overlayfs's own whiteout form, as tar of an upper dir has it
        if member.isfifo():
            kind = "a FIFO"
        elif member.isdev():
            kind = f"a device node {member.devmajor}/{member.devminor}"
        else:
            kind = f"an unsupported member type {member.type!r}"
        raise LayerError(
            f"member {member.name!r} is {kind}; a layer holds files, directories, symlinks "
            "and whiteouts only"
        )

    def _read(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> bytes:
        """The member's data, read in chunks, refused as soon as it expands too much."""
        extracted = tar.extractfile(member)
        assert extracted is not None
        chunks = []
        while chunk := extracted.read(_CHUNK):
            chunks.append(chunk)
            self.expanded += len(chunk)
            read = _position(self.archive)
            if self.expanded > RATIO_FLOOR and self.expanded > self.limits.max_ratio * read:
                raise LayerError(
                    f"member {member.name!r}: {read} bytes of the archive expand to more "
                    f"than {self.expanded}, over {self.limits.max_ratio:g} times as much "
                    "(TarLimits.max_ratio: an archive bomb?); pass "
                    "limits=TarLimits(max_ratio=...) to import it if you trust it"
                )
        return b"".join(chunks)

    def _expect_regular(self, member: tarfile.TarInfo, what: str) -> None:
        if not member.isreg():
            raise LayerError(f"member {member.name!r} must be an empty regular file ({what})")
