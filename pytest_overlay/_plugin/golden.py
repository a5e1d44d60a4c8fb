"""Golden files: what a test changed on disk, as a stable text file stored next to it.

One line per change, sorted parents first: the kind, the path relative to the merged root,
and for what exists afterwards its type, permission bits and (for files) size and sha256.
Nothing that differs between runs or machines goes in: no timestamps, no owners, no
absolute paths, no inode numbers. Lines starting with ``#`` are comments for the reader
and are not compared.
"""

from __future__ import annotations

import enum
import json
import os
import re
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    # Annotations only: the plugin reads UPDATE_FLAG at start-up, the rest runs in tests.
    from pytest_overlay._layers.statediff import Delta, Entry

#: The directory, next to the test file, that holds the golden files of its tests.
GOLDEN_DIR: Final = "__overlay_golden__"
#: The command-line flag that rewrites golden files.
UPDATE_FLAG: Final = "--overlay-update-golden"

_UNSAFE = re.compile(r'[\x00-\x20/\\:*?"<>|\x7f]')


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


def render(deltas: Iterable[Delta]) -> list[str]:
    """The golden lines for *deltas* (already in parents-first order)."""
    lines = []
    for delta in deltas:
        line = f"{delta.change.kind.value} {quote(delta.change.path)}"
        if delta.after is not None:
            line += f"  {describe(delta.after)}"
        lines.append(line)
    return lines


def document(lines: Sequence[str], nodeid: str) -> str:
    header = [
        f"# pytest-overlay golden file: filesystem changes made by {nodeid}",
        f"# Review changes to it like code; regenerate with: pytest {UPDATE_FLAG}",
        "# <kind: A added, M modified, D deleted> <path>  <type> <mode> [size, sha256]",
    ]
    return "\n".join([*header, *lines]) + "\n"


def entries(text: str) -> list[str]:
    """The lines of a golden document that are compared (not comments, not blank)."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_stem(nodeid: str) -> str:
    """The part of a golden file name that names the test *nodeid* (``Class.test[id]``)."""
    return _UNSAFE.sub("_", ".".join(nodeid.split("::")[1:]) or nodeid)


def golden_dir(test_file: Path) -> Path:
    """The directory of the golden files of the tests in *test_file*."""
    return test_file.parent / GOLDEN_DIR / test_file.stem


def path_for(test_file: Path, nodeid: str, name: str | None, index: int) -> Path:
    """Where the golden file of one assertion in the test *nodeid* lives.

    ``<test dir>/__overlay_golden__/<module>/<Class.test_name[params]>[.<name>].txt``;
    without a *name*, the second and later assertions of a test are numbered from 2.
    """
    stem = test_stem(nodeid)
    if name is not None:
        if not name or _UNSAFE.search(name) or name.startswith("."):
            raise ValueError(
                f"golden file name {name!r} must be a plain file name part: letters, digits, "
                "'-', '_', '.', no spaces or slashes"
            )
        stem = f"{stem}.{name}"
    elif index > 1:
        stem = f"{stem}.{index}"
    return golden_dir(test_file) / f"{stem}.txt"


class Outcome(enum.Enum):
    MATCHES = "matches"
    WRITTEN = "written"
    MISSING = "missing"
    DIFFERS = "differs"


def check(path: Path, lines: Sequence[str], nodeid: str, *, update: bool) -> Outcome:
    """Compare *lines* with the golden file at *path*; with *update*, rewrite it instead."""
    try:
        stored: list[str] | None = entries(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        stored = None
    if stored == list(lines):
        return Outcome.MATCHES
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(document(lines, nodeid), encoding="utf-8", newline="\n")
        return Outcome.WRITTEN
    return Outcome.MISSING if stored is None else Outcome.DIFFERS
