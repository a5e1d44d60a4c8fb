"""Digests of directory trees: what the build cache keys and verifies layers by.

The fast digest reads only metadata (``lstat`` and ``readlink``): each entry's path, type,
size, permission bits and mtime, a symlink's target, a device's numbers. It sees a file
added, removed, renamed, resized, re-moded or rewritten by any tool that updates the mtime
(every ordinary write does), at the cost of one ``lstat`` per entry. The content digest
also hashes every regular file's bytes, for inputs whose mtimes are not trustworthy (a
checkout that sets them all to the same value, a tool that restores them).
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Final

__all__ = ["tree_digest"]

_CHUNK: Final = 1 << 20


def tree_digest(root: str | os.PathLike[str], *, content: bool = False) -> str:
    """The sha256 (hex) of the tree at *root*: its metadata, and file data if *content*.

    The root's own mtime is left out, so that renaming the tree into place (which may
    touch it) keeps the digest. A missing *root* raises :class:`FileNotFoundError`.
    """
    digest = hashlib.sha256()
    top = os.fspath(root)
    st = os.lstat(top)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(f"{top} is not a directory")
    digest.update(f"/:{stat.S_IMODE(st.st_mode):o}\n".encode())
    _walk(top, "", digest, content)
    return digest.hexdigest()


def _walk(directory: str, rel: str, digest: hashlib._Hash, content: bool) -> None:
    with os.scandir(directory) as scan:
        # Sorted: scandir's order depends on the filesystem and on history.
        entries = sorted(scan, key=lambda e: e.name)
    for entry in entries:
        path = f"{rel}/{entry.name}" if rel else entry.name
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        name = os.fsencode(path)
        # Length-prefixed names: no name can be forged to look like two records.
        digest.update(len(name).to_bytes(4, "big") + name)
        digest.update(f":{stat.S_IFMT(mode):o}:{stat.S_IMODE(mode):o}".encode())
        if stat.S_ISDIR(mode):
            digest.update(f":{st.st_mtime_ns}\n".encode())
            _walk(entry.path, path, digest, content)
        elif stat.S_ISLNK(mode):
            target = os.fsencode(os.readlink(entry.path))
            digest.update(b":" + len(target).to_bytes(4, "big") + target + b"\n")
        elif stat.S_ISREG(mode):
            digest.update(f":{st.st_size}:{st.st_mtime_ns}\n".encode())
            if content:
                digest.update(_file_sha256(entry.path))
        else:
            digest.update(f":{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}\n".encode())


def _file_sha256(path: str) -> bytes:
    file_digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            file_digest.update(chunk)
    return file_digest.digest()


def digest_of(paths: list[Path], *, content: bool = False) -> str:
    """One digest over several trees, in the given order."""
    combined = hashlib.sha256()
    for path in paths:
        combined.update(tree_digest(path, content=content).encode() + b"\n")
    return combined.hexdigest()
