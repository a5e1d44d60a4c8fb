"""What the snapshot fixtures keep for the session, shared by the fixture and its value.

Its own module so that ``snapshot_fixtures`` (which makes it) and ``snapshotter`` (which
records golden files in it) need not import each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest


@dataclass
class SessionState:
    """What the plugin learned at configure time, and the golden files it wrote."""

    update_golden: bool
    #: The distribution that owns the ``snapshot`` fixture name, if not pytest-overlay.
    snapshot_owner: str | None
    written: list[Path] = field(default_factory=list)
    #: Golden files checked per test, until its report carries them (this process).
    checked: dict[str, list[str]] = field(default_factory=dict)
    #: Per test node id: whether it passed; and every golden file checked (all workers).
    outcomes: dict[str, bool] = field(default_factory=dict)
    checked_all: list[str] = field(default_factory=list)


STATE_KEY: Final = pytest.StashKey[SessionState]()
