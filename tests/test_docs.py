"""The docs match the code: the backends table, the attack tests named in security.rst."""

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


def test_every_attack_test_named_in_the_security_page_exists() -> None:
    text = (DOCS / "security.rst").read_text()
    named = set(re.findall(r"``(test_\w+)``", text))
    defined = {
        name
        for path in Path(__file__).parent.glob("test_*.py")
        for name in re.findall(r"^def (test_\w+)", path.read_text(), re.M)
    }
    assert len(named) >= 12
    assert named - defined == set()
