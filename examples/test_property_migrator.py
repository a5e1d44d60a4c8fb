"""Property testing your own code that rewrites a directory tree, one fresh union per example.

``migrate_configs`` below stands for the code under test: it turns every ``*.ini`` file
under a directory into a ``*.toml`` file with the same settings. The property test
writes a random tree of config and text files into the union over ``configs/`` (a small
base with two ``.ini`` files), runs the migration, and checks what must hold for every
tree. pytest-overlay puts the union back to ``configs/`` before every example, shrinking
included, so each example starts from the base and never sees files an earlier one wrote.

Run it with ``pytest examples/test_property_migrator.py``; see docs/property-testing.rst.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip(
    "hypothesis", reason="property tests need pip install 'pytest-overlay[hypothesis]'"
)

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_overlay import OverlayStack

pytestmark = pytest.mark.overlay("configs")


# --- the code under test: a user's own config migrator ------------------------------------


def parse_ini(text: str) -> dict[str, str]:
    """``key=value`` lines; blank lines and ``#`` comments are skipped."""
    settings: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, value = line.split("=", 1)  # a value may contain "=" itself
            settings[key.strip()] = value.strip()
    return settings


def to_toml(settings: dict[str, str]) -> str:
    # A JSON string is a valid TOML basic string for the characters used here.
    return "".join(
        f"{key} = {json.dumps(value, ensure_ascii=False)}\n" for key, value in settings.items()
    )


def migrate_configs(root: Path) -> None:
    """Replace every ``NAME.ini`` under *root* with ``NAME.toml`` holding the same settings."""
    for ini in sorted(root.rglob("*.ini")):
        settings = parse_ini(ini.read_text(encoding="utf-8"))
        ini.with_suffix(".toml").write_text(to_toml(settings), encoding="utf-8")
        ini.unlink()


# --- the property test -----------------------------------------------------------------------


def parse_toml(text: str) -> dict[str, str]:
    """Read back what ``to_toml`` writes (tomllib is only in Python >= 3.11)."""
    pairs = (line.split(" = ", 1) for line in text.splitlines())
    return {key: json.loads(value) for key, value in pairs}


KEYS = st.text(alphabet="abcxyz_", min_size=1, max_size=4)
# No leading or trailing spaces (the migrator strips them); "=" and "#" are legal in values.
VALUES = st.text(alphabet='ab1=#é"\\:/', max_size=6)
INI_FILES = st.dictionaries(KEYS, VALUES, max_size=4)
TEXT_FILES = st.text(alphabet="ab =\n", max_size=10)
DIRS = st.lists(st.sampled_from(["plugins", "docs", "new dir", "ünï"]), max_size=2)
STEMS = st.sampled_from(["app", "cache", "x", "a b"])


@st.composite
def trees(draw: st.DrawFn) -> dict[str, dict[str, str] | str]:
    """Relative path -> settings (for ``.ini`` files) or text (for ``.txt`` files)."""
    tree: dict[str, dict[str, str] | str] = {}
    for _ in range(draw(st.integers(0, 5))):
        parent = "/".join(draw(DIRS))
        stem = draw(STEMS)
        if draw(st.booleans()):
            tree[f"{parent}/{stem}.ini".lstrip("/")] = draw(INI_FILES)
        else:
            tree[f"{parent}/{stem}.txt".lstrip("/")] = draw(TEXT_FILES)
    return tree


def write_tree(root: Path, tree: dict[str, dict[str, str] | str]) -> None:
    for rel, content in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            path.write_text("".join(f"{k}={v}\n" for k, v in content.items()), encoding="utf-8")
        else:
            path.write_text(content, encoding="utf-8")


def snapshot_files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
        for p in root.rglob("*")
        if p.is_file()
    }


#: What the base's config files hold (the test's oracle, written by hand, not parsed).
BASE_SETTINGS = {
    "app.ini": {"name": "demo", "port": "8080"},
    "plugins/cache.ini": {"size": "10", "url": "http://x/"},
}


@settings(max_examples=60, deadline=None)
@given(tree=trees())
def test_migration_keeps_every_setting(
    overlay_stack: OverlayStack, tree: dict[str, dict[str, str] | str]
) -> None:
    root = overlay_stack.merged
    # Every example starts from the base: nothing an earlier example wrote is here.
    assert sorted(snapshot_files(root)) == ["app.ini", "docs/readme.txt", "plugins/cache.ini"]
    write_tree(root, tree)
    before = snapshot_files(root)
    expected = {**BASE_SETTINGS, **{p: c for p, c in tree.items() if isinstance(c, dict)}}

    migrate_configs(root)

    after = snapshot_files(root)
    for rel, settings_ in expected.items():
        toml = rel.removesuffix(".ini") + ".toml"
        assert rel not in after, f"{rel} was not migrated"
        assert parse_toml(after[toml]) == settings_, f"{toml} does not hold {rel}'s settings"
    for rel, text in before.items():
        if not rel.endswith(".ini"):
            assert after[rel] == text, f"{rel} is not a config file but was changed"
    assert len(after) == len(before)  # nothing else appeared or went missing

    migrate_configs(root)  # a second run finds nothing left to do
    assert snapshot_files(root) == after


@settings(max_examples=20, deadline=None)
@given(tree=trees())
def test_the_base_stays_as_it_was(
    overlay_stack: OverlayStack, tree: dict[str, dict[str, str] | str]
) -> None:
    write_tree(overlay_stack.merged, tree)
    migrate_configs(overlay_stack.merged)
    # The union shows the migrated tree; the base directory underneath is untouched.
    assert not (overlay_stack.merged / "app.ini").exists()
    base = overlay_stack.lowers[0]
    assert parse_ini((base / "app.ini").read_text(encoding="utf-8")) == {
        "name": "demo",
        "port": "8080",
    }
    assert not (base / "app.toml").exists()
