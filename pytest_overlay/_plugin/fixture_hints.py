"""A hint for ``overlay_fixture("name")`` where *name* was meant as a directory.

``overlay_fixture`` takes a base that is a Python identifier for the name of a fixture.
When no such fixture exists, pytest says only "fixture 'name' not found", although a
directory of that name may sit right next to the conftest. This module remembers such
names when ``overlay_fixture`` is called (cheap: one stat), and adds the hint to pytest's
error when the fixture is indeed missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

#: name -> (calling file, directory of that name next to it), one per overlay_fixture call.
_DIRECTORY_NAMES: dict[str, list[tuple[str, Path]]] = {}


def remember(name: str, caller: str, directory: Path) -> None:
    """Note that ``overlay_fixture`` in *caller* took *name*, also a *directory*, as a fixture."""
    _DIRECTORY_NAMES.setdefault(name, []).append((caller, directory))


def awaited() -> bool:
    """Whether some ``overlay_fixture`` call took a directory's name for a fixture's."""
    return bool(_DIRECTORY_NAMES)


def add_hint(report: pytest.TestReport, call: pytest.CallInfo[None]) -> None:
    """Add the hint to a setup report that failed because such a fixture is missing."""
    if call.excinfo is None or not isinstance(call.excinfo.value, pytest.FixtureLookupError):
        return
    name = call.excinfo.value.argname
    if name not in _DIRECTORY_NAMES:
        return
    hints = [
        f"overlay_fixture({name!r}) in {caller} takes {name!r} for a fixture name, but "
        f"there is no such fixture; for the directory {directory} write "
        f"overlay_fixture('./{name}')"
        for caller, directory in _DIRECTORY_NAMES[name]
    ]
    # pytest's FixtureLookupErrorRepr prints its errorstring line by line: the hint goes
    # right under "fixture 'name' not found", above the list of available fixtures.
    errorstring = getattr(report.longrepr, "errorstring", None)
    if isinstance(errorstring, str):
        first, _, rest = errorstring.partition("\n")
        lines = [first, *hints, *([rest] if rest else [])]
        report.longrepr.errorstring = "\n".join(lines)  # type: ignore[union-attr]
