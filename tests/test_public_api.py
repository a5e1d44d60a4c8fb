"""The public API: what ``pytest_overlay`` exports, its types, and how pytest lists the
plugin's fixtures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_overlay

pytest_plugins = ["pytester"]

#: The types a user annotates with, as pytest exports ``TempPathFactory``.
PUBLIC_TYPES = [
    "BackendUnavailable",
    "Change",
    "ChangeKind",
    "OverlayError",
    "OverlayFixture",
    "OverlayStack",
    "OverlayStackFactory",
    "OverlayWarning",
    "Snapshot",
    "Snapshotter",
]


@pytest.mark.parametrize("name", PUBLIC_TYPES)
def test_exported_from_the_package(name: str) -> None:
    assert name in pytest_overlay.__all__
    value = getattr(pytest_overlay, name)
    assert value.__name__ == name


def test_importing_the_package_stays_cheap() -> None:
    # The exports load on first use (PEP 562): importing the package imports no stack,
    # factory or fixture module.
    code = (
        "import sys, pytest_overlay\n"
        "print(sorted(m for m in sys.modules if m.startswith('pytest_overlay')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['pytest_overlay', 'pytest_overlay._errors']"


def test_factory_cannot_be_made_by_hand() -> None:
    with pytest.raises(TypeError, match="request the 'overlay_stack_factory' fixture"):
        pytest_overlay.OverlayStackFactory(Path("/nonexistent"), "copy")


TYPED = """
from pytest_overlay import (
    Change, ChangeKind, OverlayStack, OverlayStackFactory, OverlayWarning, Snapshot,
    overlay_fixture,
)

db = overlay_fixture("data")
reveal_type(db)
reveal_type(next(db()))

def uses(factory: OverlayStackFactory, stack: OverlayStack) -> None:
    reveal_type(factory.mount(["data"]))
    reveal_type(stack.changes()[0].kind)
    reveal_type(stack.snapshot())
    reveal_type(stack.clean_unmount)
    reveal_type(stack.mounted)

reveal_type(OverlayWarning)
"""


def test_types_as_mypy_sees_them(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api", reason="mypy is in the lint extra")
    (tmp_path / "typed.py").write_text(TYPED)
    stdout, _, _ = api.run(
        ["--strict", "--no-incremental", "--python-version=3.10", str(tmp_path / "typed.py")]
    )
    revealed = re.findall(r'Revealed type is "([^"]+)"', stdout)
    assert revealed == [
        "pytest_overlay._plugin.overlay_fixture.OverlayFixture",
        "pytest_overlay.stack.OverlayStack",
        "pytest_overlay.stack.OverlayStack",
        "pytest_overlay._layers.changes.ChangeKind",
        "pytest_overlay.snapshot.Snapshot",
        "bool",
        "bool",
        "def (*args: object) -> pytest_overlay._errors.OverlayWarning",
    ], stdout
    # reveal_type is a note; anything else mypy says is an error in the public types.
    assert [line for line in stdout.splitlines() if ": error:" in line] == []


def test_fixtures_listed_under_one_heading(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every fixture of the plugin, datadir's and the snapshot alias included: no other
    # plugin (syrupy, pytest-snapshot) may take the name "snapshot".
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini("[pytest]\noverlay_datadir = true\n")
    result = pytester.runpytest("--fixtures", "-p", "overlay")
    text = result.stdout.str()
    headings = re.findall(r"-+ fixtures defined from (\S+) -+", text)
    ours = [h for h in headings if h.startswith("pytest_overlay")]
    assert ours == ["pytest_overlay.plugin"]
    section = text.split("fixtures defined from pytest_overlay.plugin", 1)[1]
    section = re.split(r"-+ fixtures defined from ", section, maxsplit=1)[0]
    listed = set(re.findall(r"^(\w+)(?: \[\w+ scope\])? -- ", section, flags=re.MULTILINE))
    assert listed == {
        "overlay_stack",
        "overlay_at",
        "overlay_stack_factory",
        "overlay_snapshot",
        "snapshot",
        "datadir",
        "shared_datadir",
        "original_datadir",
        "lazy_datadir",
        "lazy_shared_datadir",
    }


def test_api_page_shows_public_import_paths_only() -> None:
    page = (Path(__file__).parents[1] / "docs" / "api.rst").read_text()
    assert re.findall(r"pytest_overlay\._\w+", page) == []
    for name in PUBLIC_TYPES:
        assert f":: {name}\n" in page, name
