"""Keeping the upper layers of failed tests for inspection, and the failure report section.

Modelled on pytest's ``tmp_path_retention_policy``: a policy (``failed``, ``all`` or
``none``) and a count limit; the oldest kept layer goes when the limit is reached.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, final

import pytest

from pytest_overlay._errors import OverlayError
from pytest_overlay._plugin import config as _config

if TYPE_CHECKING:
    from pytest_overlay._layers.changes import Change
    from pytest_overlay.stack import OverlayStack

POLICIES = ("failed", "all", "none")
#: How many changes a failure report lists before summarising the rest.
REPORT_LIMIT = 50


def settings(config: pytest.Config) -> tuple[str, int]:
    """The retention policy and count, validated (a usage error names the bad value)."""
    policy = _config.choice(
        config, "overlay_retention_policy", POLICIES, flag="--overlay-keep", what="policy"
    )
    raw = str(config.getini("overlay_retention_count")).strip()
    try:
        count = int(raw)
    except ValueError:
        count = -1
    if count < 0:
        raise pytest.UsageError(
            f"overlay_retention_count: {raw!r} is not a whole number >= 0 (the most upper "
            "layers to keep per session, e.g. 3)"
        )
    return policy, count


@final
class Keeper:
    """Decides which upper layers to keep and where; drops the oldest past the limit."""

    def __init__(self, policy: str, count: int, root: Path) -> None:
        self.policy = policy
        self.count = count
        self._root = root
        self._kept: deque[Path] = deque()

    def wants(self, failed: bool) -> bool:
        if self.count == 0:
            return False
        return self.policy == "all" or (self.policy == "failed" and failed)

    def destination(self, name: str) -> Path:
        """A fresh path for the upper layer of the test *name* (not created yet)."""
        # The workspace code loads with the first mount; the settings above are read by
        # every session.
        from pytest_overlay._linux.workspace import safe_name

        safe = safe_name(name, 60, "test")
        self._root.mkdir(parents=True, exist_ok=True)
        # A kept layer holds whatever the test wrote, credentials included: only its
        # owner may enter, whatever the modes of the basetemp above it.
        os.chmod(self._root, stat.S_IRWXU)
        candidate, n = self._root / safe, 1
        while candidate.exists():
            n += 1
            candidate = self._root / f"{safe}-{n}"
        return candidate

    def kept(self, path: Path) -> None:
        """Record a kept layer; delete the oldest ones beyond the count limit."""
        from pytest_overlay._linux.workspace import remove_workspace

        self._kept.append(path)
        while len(self._kept) > self.count:
            remove_workspace(self._kept.popleft())


def report_section(changes: Sequence[Change], kept_at: Path | None, note: str = "") -> str:
    """The text of the 'overlay changes' section of a failed test's report."""
    lines = [note] if note else []
    lines.append(f"{len(changes)} change(s) on top of the base (A added, M modified, D deleted):")
    lines += [f"  {change}" for change in changes[:REPORT_LIMIT]]
    if len(changes) > REPORT_LIMIT:
        lines.append(f"  ... and {len(changes) - REPORT_LIMIT} more")
    lines.append(_where(kept_at))
    return "\n".join(lines)


def _where(kept_at: Path | None) -> str:
    if kept_at is not None:
        return f"upper layer kept at: {kept_at}"
    return "the upper layer is deleted at teardown (keep it with --overlay-keep=failed)"


def section_of(stack: OverlayStack, kept_at: Path | None, note: str = "") -> str:
    """:func:`report_section` for *stack*, or why its changes could not be listed.

    Runs inside pytest's report hook, where an exception would abort the whole session
    (INTERNALERROR). A test may leave anything behind (an unreadable directory, a
    deleted merged directory), so every error becomes a line of the report instead.
    """
    try:
        changes = stack.changes()
    except Exception as exc:
        lines = [note] if note else []
        lines += [f"could not list the changes: {_describe(exc)}", _where(kept_at)]
        return "\n".join(lines)
    return report_section(changes, kept_at, note)


def _describe(exc: Exception) -> str:
    if isinstance(exc, (OverlayError, OSError)):
        return str(exc)  # these name the problem (and the path) themselves
    return f"{type(exc).__name__}: {exc}"


_EOVERFLOW_TEXT = os.strerror(errno.EOVERFLOW)  # "Value too large for defined data type"


def _eoverflow_error(error: BaseException | None) -> OSError | None:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.EOVERFLOW:
            return error
        error = error.__cause__ or error.__context__
    return None


def eoverflow_note(backend: str, error: BaseException | None, text: str) -> str:
    """Why a test on the userns backend met EOVERFLOW and what to do; "" if it did not.

    *error* is the test's exception, *text* its report (which shows what a subprocess
    printed, such as cp's "Value too large for defined data type").
    """
    if backend != "userns":
        return ""
    found = _eoverflow_error(error)
    if found is None and _EOVERFLOW_TEXT not in text:
        return ""
    where = f" on {found.filename}" if found is not None and found.filename else ""
    return (
        f"EOVERFLOW ({_EOVERFLOW_TEXT}){where}: in its user namespace the userns backend "
        "cannot copy up a base file or directory whose owner or group is not yours (ls "
        "shows it as 65534, nobody), so writing to it, or adding or removing entries in "
        "such a directory, fails. Make the base yours (chown -R $USER: BASE), run pytest "
        "as root, or force --overlay-backend=copy, which copies the base as you "
        "(fuse-overlayfs cannot copy such files up either)."
    )
