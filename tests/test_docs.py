"""The docs' comparison table of backends matches the declared deviations."""

from __future__ import annotations

import re
from pathlib import Path

from pytest_overlay._backends.ladder import builtin_backends
from pytest_overlay._backends.protocol import DEVIATIONS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_backend_comparison_table_matches_the_code() -> None:
    text = (DOCS / "backends.rst").read_text()
    table = text[text.index("Where the backends differ") :]
    names = [b.name for b in builtin_backends()]
    rows = re.findall(r"   \* - ``([a-z-]+)``:.*?\n((?:     - \w+\n)+)", table, re.S)
    assert [key for key, _ in rows] == list(DEVIATIONS)
    for key, cells in rows:
        values = re.findall(r"- (\w+)", cells)
        expected = ["differs" if key in b.deviations else "same" for b in builtin_backends()]
        assert values == expected, (key, names)
