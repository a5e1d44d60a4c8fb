"""Golden files that no test uses any more, found at the end of a session.

A golden file is unused when the session ran its module's tests and none of them checked
it: the test was deleted or renamed, or it makes fewer ``assert_golden`` calls than it
did. Only what the session can vouch for counts:

- a file that some test of the session could own (its name starts with that test's name)
  is unused only if every such test passed, since a skipped or failed test may simply not
  have reached its assertion;
- a file that no test of the session could own is unused only if the session selected
  the whole module (no ``-k``, ``-m``, ``--deselect``, ``--lf``, ``--sw`` and no
  ``module.py::test`` argument naming that module), since otherwise its test may just
  not have been selected;
- nothing is reported when the session stopped early (``-x``, ``--maxfail``, Ctrl-C).

The facts come from test reports, so this works under pytest-xdist too: each report
carries the golden files its test checked (see :mod:`pytest_overlay._plugin.snapshot_fixtures`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pytest

from pytest_overlay._plugin import golden as _golden


def _module_of(nodeid: str, rootpath: Path) -> Path:
    return rootpath / nodeid.split("::", 1)[0]


def selection_is_partial(config: pytest.Config, module: Path) -> bool:
    """Whether the session may have left out some tests of *module*."""
    option = config.option
    narrowed = (
        getattr(option, "keyword", "")
        or getattr(option, "markexpr", "")
        or getattr(option, "deselect", None)
        or getattr(option, "lf", False)
        or getattr(option, "stepwise", False)
    )
    if narrowed:
        return True
    invocation = config.invocation_params
    for arg in invocation.args:
        path, sep, _ = str(arg).partition("::")
        if sep and (invocation.dir / path).resolve() == module.resolve():
            return True
    return False


def unused_files(
    outcomes: Mapping[str, bool],
    checked: Iterable[str],
    rootpath: Path,
    partial: Callable[[Path], bool],
) -> list[Path]:
    """Golden files of the modules in *outcomes* that no test checked and none can claim.

    *outcomes* maps each test node id of the session to whether it passed; *checked* is
    every golden file path the tests compared or wrote; *partial* says of a module path
    whether the selection may have left out some of its tests.
    """
    seen = {os.path.normpath(p) for p in checked}
    tests_by_module: dict[Path, list[str]] = {}
    for nodeid in outcomes:
        tests_by_module.setdefault(_module_of(nodeid, rootpath), []).append(nodeid)
    unused = []
    for module, nodeids in sorted(tests_by_module.items()):
        directory = _golden.golden_dir(module)
        if not directory.is_dir():
            continue
        stems = {nodeid: _golden.test_stem(nodeid) for nodeid in nodeids}
        for path in sorted(directory.glob("*.txt")):
            if os.path.normpath(path) in seen:
                continue
            name = path.name[: -len(".txt")]
            owners = [
                n for n, stem in stems.items() if name == stem or name.startswith(stem + ".")
            ]
            if owners:
                if all(outcomes[n] for n in owners):
                    unused.append(path)
            elif not partial(module):
                unused.append(path)
    return unused


def delete(paths: Iterable[Path]) -> None:
    """Delete unused golden files, and the directories they leave empty."""
    parents = set()
    for path in paths:
        path.unlink(missing_ok=True)
        parents.add(path.parent)
    for directory in parents:
        # <module> under __overlay_golden__, then __overlay_golden__ itself, if empty.
        for candidate in (directory, directory.parent):
            with contextlib.suppress(OSError):  # not empty: other files remain
                candidate.rmdir()
