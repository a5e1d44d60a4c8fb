"""overlay_fixture(): overlay fixtures declared in one line, built once, shared by scope."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_overlay import overlay_fixture
from tests.helpers import make_tree

pytest_plugins = ["pytester"]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    make_tree(
        pytester.path / "tests" / "data" / "base",
        {"schema.sql": "create table t;\n", "cache": {"warm": "no"}},
    )
    return pytester


CONFTEST = """
from pytest_overlay import overlay_fixture

BUILDS = []

def migrate(stack):
    BUILDS.append(stack.merged)
    (stack.merged / "db").write_text("migrated")
    (stack.merged / "cache" / "warm").write_text("yes")

migrated = overlay_fixture("data/base", scope="session", build=migrate)
db = overlay_fixture("migrated")
per_module = overlay_fixture("migrated", scope="module", name="module_db")
"""


def test_build_once_and_a_fresh_upper_per_test(project: pytest.Pytester) -> None:
    (project.path / "tests" / "conftest.py").write_text(CONFTEST)
    (project.path / "tests" / "test_db.py").write_text(
        """
import pytest
from conftest import BUILDS

@pytest.mark.parametrize("n", range(3))
def test_isolated(db, n):
    assert (db.merged / "db").read_text() == "migrated"
    assert (db.merged / "cache" / "warm").read_text() == "yes"
    assert not (db.merged / "mine").exists()
    (db.merged / "mine").write_text(str(n))
    (db.merged / "db").unlink()
    assert [str(c) for c in db.diff()] == ["D db", "A mine"]
    assert len(BUILDS) == 1

def test_writing_into_the_shared_stack_does_not_leak(migrated):
    (migrated.merged / "db").write_text("vandalised")

def test_after_the_vandal(db, migrated):
    assert (migrated.merged / "db").read_text() == "vandalised"
    assert (db.merged / "db").read_text() == "migrated"

def test_named_module_fixture(module_db):
    assert (module_db.merged / "db").read_text() == "migrated"
"""
    )
    result = project.runpytest("tests", f"--basetemp={project.path / 'bt'}")
    result.assert_outcomes(passed=6)
    assert (project.path / "tests" / "data" / "base" / "cache" / "warm").read_text() == "no"
    assert [list(d.iterdir()) for d in (project.path / "bt").glob("overlay*")] == [[]]


def test_bases_from_fixtures_of_every_kind(project: pytest.Pytester) -> None:
    make_tree(project.path / "tests" / "data" / "extra", {"extra": "e"})
    (project.path / "tests" / "conftest.py").write_text(
        """
import pytest
from pytest_overlay import overlay_fixture

@pytest.fixture(scope="session")
def data_dir(pytestconfig):
    return pytestconfig.rootpath / "tests" / "data" / "base"

@pytest.fixture(scope="session")
def hand_made(overlay_stack_factory, data_dir):
    stack = overlay_stack_factory.mount([data_dir])
    (stack.merged / "by-hand").write_text("h")
    yield stack
    stack.close()

@pytest.fixture(scope="session")
def frozen(hand_made):
    (hand_made.merged / "frozen-only").write_text("f")
    return hand_made.snapshot("frozen")

from_path = overlay_fixture("data_dir")
from_stack = overlay_fixture("hand_made")
from_snapshot = overlay_fixture("frozen")
layered = overlay_fixture("./data/extra", "frozen")
"""
    )
    (project.path / "tests" / "test_kinds.py").write_text(
        """
def test_path(from_path):
    assert sorted(p.name for p in from_path.merged.iterdir()) == ["cache", "schema.sql"]

def test_stack_is_frozen_as_it_is_now(from_stack, hand_made):
    assert (from_stack.merged / "by-hand").read_text() == "h"
    (hand_made.merged / "later").write_text("l")
    assert not (from_stack.merged / "later").exists()

def test_snapshot(from_snapshot, frozen):
    assert (from_snapshot.merged / "frozen-only").read_text() == "f"
    assert from_snapshot.lowers == frozen.layers

def test_path_on_top_of_a_snapshot(layered, frozen):
    assert layered.lowers[1:] == frozen.layers
    assert layered.lowers[0].name == "extra"
    assert (layered.merged / "frozen-only").exists()
    assert (layered.merged / "extra").exists()
"""
    )
    project.runpytest("tests").assert_outcomes(passed=4)


def test_scope_mismatch_is_reported_by_pytest(project: pytest.Pytester) -> None:
    (project.path / "tests" / "conftest.py").write_text(
        """
import pytest
from pytest_overlay import overlay_fixture

@pytest.fixture
def per_test(pytestconfig):
    return pytestconfig.rootpath / "tests" / "data" / "base"

wide = overlay_fixture("per_test", scope="session")
"""
    )
    (project.path / "tests" / "test_it.py").write_text("def test_it(wide):\n    pass\n")
    result = project.runpytest("tests")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*ScopeMismatch*"])


def test_a_base_fixture_of_the_wrong_type_fails_clearly(project: pytest.Pytester) -> None:
    (project.path / "tests" / "conftest.py").write_text(
        """
import pytest
from pytest_overlay import overlay_fixture

@pytest.fixture
def answer():
    return 42

bad = overlay_fixture("answer")
"""
    )
    (project.path / "tests" / "test_it.py").write_text("def test_it(bad):\n    pass\n")
    result = project.runpytest("tests")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*bad: the base fixture 'answer' gave 42 (int); an overlay_fixture base must give*"]
    )


def test_missing_directory_fails_at_setup(project: pytest.Pytester) -> None:
    project.makeconftest(
        "from pytest_overlay import overlay_fixture\nnothing = overlay_fixture('no/such/dir')\n"
    )
    project.makepyfile("def test_it(nothing):\n    pass\n")
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*nothing: lower layer*no/such/dir* does not exist*"])


def test_fixtures_listing_describes_it(project: pytest.Pytester) -> None:
    (project.path / "tests" / "conftest.py").write_text(CONFTEST)
    (project.path / "tests" / "test_it.py").write_text("def test_it(db):\n    pass\n")
    project.runpytest("tests", "--fixtures").stdout.fnmatch_lines(
        [
            "*fixtures defined from conftest*",
            "db -- *",
            "*An overlay stack over migrated (function scope)*",
            "migrated ?session scope? -- *",
            "*An overlay stack over data/base (session scope, built by migrate)*",
            "module_db ?module scope? -- *",
        ]
    )


def test_declaration_errors_are_immediate(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="at least one base"):
        overlay_fixture()
    with pytest.raises(TypeError, match=r"got 42 \(int\) as a base"):
        overlay_fixture(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'overlay_stack_factory' is not a base"):
        overlay_fixture("overlay_stack_factory")
