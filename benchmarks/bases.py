"""The base directories the benchmark runs against: N files of 10 KB, 100 to a directory."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

FILES_PER_DIR = 100
FILE_SIZE = 10_000
#: The file every benchmark test appends one byte to (present in every base).
PROBE_FILE = "d000/f000.bin"


@dataclass(frozen=True)
class BaseSpec:
    key: str
    files: int

    @property
    def size_bytes(self) -> int:
        return self.files * FILE_SIZE

    @property
    def label(self) -> str:
        size = self.size_bytes
        text = f"{size // 10**9} GB" if size >= 10**9 else f"{size // 10**6} MB"
        return f"{self.files:,} files / {text}"


SMALL = BaseSpec("small", 100)
LARGE = BaseSpec("large", 10_000)
HUGE = BaseSpec("huge", 100_000)


def relpaths(files: int) -> list[str]:
    """The files of a base of *files* files, in creation order."""
    return [f"d{i // FILES_PER_DIR:03d}/f{i % FILES_PER_DIR:03d}.bin" for i in range(files)]


def _block(index: int) -> bytes:
    # Distinct content per file, so no filesystem can deduplicate the copies.
    seed = hashlib.sha256(index.to_bytes(8, "little")).digest()
    return (seed * (FILE_SIZE // len(seed) + 1))[:FILE_SIZE]


def ensure_base(spec: BaseSpec, parent: Path) -> Path:
    """Create the base for *spec* under *parent* once; reuse it when it is complete."""
    root = parent / f"base-{spec.key}"
    marker = parent / f"base-{spec.key}.complete"
    if marker.exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    for index, rel in enumerate(relpaths(spec.files)):
        path = root / rel
        if index % FILES_PER_DIR == 0:
            path.parent.mkdir(parents=True)
        path.write_bytes(_block(index))
    marker.write_text(f"{spec.files}\n")
    return root


def fingerprint(root: Path) -> tuple[int, int, int]:
    """(entries, total size, newest mtime_ns) of a tree: changes if anything touched it."""
    count = size = newest = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            st = os.lstat(os.path.join(dirpath, name))
            count += 1
            size += st.st_size
            newest = max(newest, st.st_mtime_ns, st.st_ctime_ns)
    st = os.lstat(root)
    return count, size, max(newest, st.st_mtime_ns, st.st_ctime_ns)
