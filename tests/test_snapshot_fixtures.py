"""The overlay_snapshot fixture through pytester: assertions, the name clash, bases."""

from __future__ import annotations

import pytest

from tests.helpers import make_tree

pytest_plugins = ["pytester"]


pytestmark = pytest.mark.usefixtures("fixed_umask")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    make_tree(
        pytester.path / "data" / "base",
        {"hello.txt": "hello\n", "config.toml": "version = 1\n", "sub": {"x": "x"}},
    )
    pytester.makeini("[pytest]\noverlay_base = data/base\n")
    return pytester


def test_take_restore_and_diff(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        from pytest_overlay import Change, ChangeKind, Snapshot

        def test_it(overlay_stack, overlay_snapshot):
            assert overlay_snapshot.stack is overlay_stack
            m = overlay_stack.merged
            (m / "config.toml").write_text("version = 2\\n")
            s = overlay_snapshot("migrated")
            assert isinstance(s, Snapshot) and s.name == "migrated"
            (m / "scratch").write_text("tmp")
            assert overlay_snapshot.diff(s) == [Change(ChangeKind.ADD, "scratch")]
            overlay_snapshot.restore(s)
            assert not (m / "scratch").exists()
            overlay_snapshot.assert_changed("config.toml")
            overlay_snapshot.assert_changes(["M config.toml"])
            overlay_snapshot.assert_unchanged(since=s)
            overlay_snapshot.assert_changed(m / "config.toml")
        """
    )
    project.runpytest("-p", "no:syrupy").assert_outcomes(passed=1)


def test_failed_assertion_lists_what_changed(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        def test_it(overlay_snapshot):
            m = overlay_snapshot.stack.merged
            (m / "hello.txt").write_text("hello\\nworld\\n")
            (m / "junk.bin").write_bytes(bytes(range(256)))
            with open(m / "config.toml", "r+"):
                pass  # copied up, unchanged: not listed
            overlay_snapshot.assert_changed("config.toml", "sub/x")
        """
    )
    result = project.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * the filesystem changes since the start of the test are not the expected ones",
            "E * unexpected changes:",
            "E *   M hello.txt  (file 0644 size=6 -> file 0644 size=12)",
            "E *       --- hello.txt (before)",
            "E *       +++ hello.txt (now)",
            "E *        hello",
            "E *       +world",
            "E *   A junk.bin  (file 0644 size=256)",
            "E * expected but not found:",
            "E *   config.toml",
            "E *   sub/x",
            "E * all changes (2):",
            "E *   M hello.txt",
            "E *   A junk.bin",
        ]
    )
    # Binary content gets no diff.
    assert "+++ junk.bin" not in result.stdout.str()


def test_assert_changes_takes_change_objects_and_checks_kinds(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest
        from pytest_overlay import Change, ChangeKind

        def test_it(overlay_snapshot):
            (overlay_snapshot.stack.merged / "hello.txt").unlink()
            overlay_snapshot.assert_changes([Change(ChangeKind.DELETE, "hello.txt")])
            with pytest.raises(AssertionError, match="expected but not found:\\n  M hello.txt"):
                overlay_snapshot.assert_changes(["M hello.txt"])
            with pytest.raises(ValueError, match="should read '<A|M|D> <path>'"):
                overlay_snapshot.assert_changes(["hello.txt"])
        """
    )
    project.runpytest().assert_outcomes(passed=1)


# --- the fixture name "snapshot" -------------------------------------------------------

BOTH = """
def test_syrupy(snapshot):
    assert snapshot == {"answer": 42}

def test_overlay(overlay_snapshot):
    (overlay_snapshot.stack.merged / "hello.txt").write_text("bye")
    overlay_snapshot.assert_changed("hello.txt")
"""


def test_syrupy_keeps_snapshot_and_both_work(project: pytest.Pytester) -> None:
    pytest.importorskip("syrupy")
    project.makepyfile(test_both=BOTH)
    first = project.runpytest("--snapshot-update")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(
        ["overlay: *; fixture 'snapshot' belongs to syrupy; pytest-overlay's is *"]
    )
    assert (project.path / "__snapshots__" / "test_both.ambr").exists()
    project.runpytest().assert_outcomes(passed=2)
    listed = project.runpytest("--fixtures").stdout.str()
    assert "overlay_snapshot -- " in listed
    assert "pytest-overlay's ``overlay_snapshot`` under the short name" not in listed


def test_without_syrupy_snapshot_is_ours(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        from pytest_overlay import Snapshotter

        def test_alias(snapshot, overlay_snapshot):
            assert isinstance(snapshot, Snapshotter)
            assert snapshot is overlay_snapshot
            s = snapshot()
            (snapshot.stack.merged / "x").write_text("x")
            snapshot.restore(s)
            snapshot.assert_unchanged()
        """
    )
    result = project.runpytest("-p", "no:syrupy")
    result.assert_outcomes(passed=1)
    assert "belongs to" not in result.stdout.str()
    project.runpytest("-p", "no:syrupy", "--fixtures").stdout.fnmatch_lines(
        ["snapshot -- *", "*overlay_snapshot*under the short name*"]
    )


def test_the_alias_can_be_turned_off(project: pytest.Pytester) -> None:
    project.makepyfile("def test_it(snapshot):\n    pass\n")
    result = project.runpytest("-p", "no:syrupy", "-p", "no:overlay-snapshot-alias")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'snapshot' not found*"])


def test_any_plugin_that_defines_snapshot_keeps_it(project: pytest.Pytester) -> None:
    project.makepyfile(
        other_snapshots="""
        import pytest

        @pytest.fixture
        def snapshot():
            return "theirs"
        """
    )
    project.makepyfile(
        """
        def test_theirs(snapshot, overlay_snapshot):
            assert snapshot == "theirs"
            overlay_snapshot.assert_unchanged()
        """
    )
    project.syspathinsert()
    result = project.runpytest("-p", "no:syrupy", "-p", "other_snapshots")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["overlay: *; fixture 'snapshot' belongs to other_snapshots;*"])


def test_a_conftest_snapshot_fixture_wins_without_a_header(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
        import pytest

        @pytest.fixture
        def snapshot():
            return "mine"
        """
    )
    project.makepyfile("def test_it(snapshot):\n    assert snapshot == 'mine'\n")
    result = project.runpytest("-p", "no:syrupy")
    result.assert_outcomes(passed=1)
    assert "belongs to" not in result.stdout.str()


# --- snapshots as bases across scopes --------------------------------------------------


def test_session_snapshot_is_the_base_of_function_stacks(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
        import pytest

        BUILDS = []

        @pytest.fixture(scope="session")
        def migrated(overlay_stack_factory, pytestconfig):
            base = pytestconfig.rootpath / "data" / "base"
            with overlay_stack_factory.mount([base], name="build") as stack:
                BUILDS.append(1)
                (stack.merged / "config.toml").write_text("version = 2\\n")
                (stack.merged / "db").write_text("migrated")
                return stack.snapshot("migrated")

        @pytest.fixture
        def db(overlay_stack_factory, migrated):
            stack = overlay_stack_factory.mount([migrated], name="db")
            yield stack
            stack.close()
        """
    )
    project.makepyfile(
        """
        import pytest
        from conftest import BUILDS

        @pytest.mark.parametrize("n", range(3))
        def test_each_gets_its_own_upper(db, migrated, n):
            assert (db.merged / "db").read_text() == "migrated"
            assert not (db.merged / "mine").exists()
            (db.merged / "mine").write_text(str(n))
            (db.merged / "db").unlink()
            assert db.diff() == db.diff(migrated)
            assert [str(c) for c in db.diff()] == ["D db", "A mine"]
            assert [str(c) for c in migrated.changes()] == ["M config.toml", "A db"]
            assert BUILDS == [1]
        """
    )
    result = project.runpytest(f"--basetemp={project.path / 'bt'}")
    result.assert_outcomes(passed=3)
    assert (project.path / "data" / "base" / "config.toml").read_text() == "version = 1\n"
    # Every layer was released by the end of the session.
    assert [list(d.iterdir()) for d in (project.path / "bt").glob("overlay*")] == [[]]


def test_marker_takes_a_snapshot(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pathlib
        import pytest
        from pytest_overlay import OverlayStack

        with OverlayStack([pathlib.Path(__file__).parent / "data" / "base"]) as _build:
            (_build.merged / "built").write_text("at import")
            BUILT = _build.snapshot()

        @pytest.mark.overlay(BUILT)
        def test_on_the_snapshot(overlay_stack):
            assert (overlay_stack.merged / "built").read_text() == "at import"
            assert overlay_stack.lowers == BUILT.layers

        @pytest.mark.overlay("data/base")
        def test_on_the_directory(overlay_stack):
            assert not (overlay_stack.merged / "built").exists()
        """
    )
    project.runpytest().assert_outcomes(passed=2)
