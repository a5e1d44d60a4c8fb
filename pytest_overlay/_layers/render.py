"""Entries of a tree as stable, readable text: one line per entry, small text files inline.

Shared by the failure listings of ``overlay_snapshot`` and the syrupy extensions. Nothing
that differs between runs or machines goes in: no timestamps, owners, inode numbers or
absolute paths. Modes do go in, so they depend on the umask of whoever created the files.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pytest_overlay._layers.statediff import Entry

__all__ = ["TEXT_LIMIT", "describe", "quote", "sha256", "text_of"]

#: Regular files up to this size whose bytes are plain UTF-8 text are shown line by line.
TEXT_LIMIT: Final = 16 * 1024
#: Characters that a text file read back, or a line diff, would not keep as they are.
_NOT_TEXT: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def quote(text: str) -> str:
    """*text* as is when it reads unambiguously in a line, else as a JSON string."""
    if text and text.isprintable() and not any(c in text for c in ' "\\') and text != "->":
        return text
    return json.dumps(text)


def sha256(path: Path) -> str:
    import hashlib  # here, not at the top: it costs ~3 ms of every pytest start-up

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def describe(entry: Entry, *, digest: bool = True) -> str:
    """The type and what matters of *entry*, e.g. ``file 0644 size=3 sha256=...``."""
    mode = f"{entry.mode:04o}"
    if entry.kind == stat.S_IFREG:
        text = f"file {mode} size={entry.size}"
        return f"{text} sha256={sha256(entry.source)}" if digest else text
    if entry.kind == stat.S_IFDIR:
        return f"dir {mode}"
    if entry.kind == stat.S_IFLNK:
        return f"symlink -> {quote(entry.target or '')}"
    if entry.kind in (stat.S_IFCHR, stat.S_IFBLK):
        kind = "char-device" if entry.kind == stat.S_IFCHR else "block-device"
        return f"{kind} {mode} {os.major(entry.rdev)},{os.minor(entry.rdev)}"
    if entry.kind == stat.S_IFIFO:
        return f"fifo {mode}"
    return f"socket {mode}"


def text_of(entry: Entry, limit: int = TEXT_LIMIT) -> str | None:
    """The content of *entry* if it is a small text file, else ``None``.

    Text means UTF-8 without control characters other than tab and newline: a carriage
    return or a NUL would not survive a round trip through a text file, and a binary file
    read as lines helps nobody.
    """
    if entry.kind != stat.S_IFREG or entry.size > limit:
        return None
    try:
        text = entry.source.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return None if _NOT_TEXT.search(text) else text
