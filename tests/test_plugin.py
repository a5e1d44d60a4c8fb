"""The plugin surface, exercised through pytester: fixtures, markers, options, errors."""

from __future__ import annotations

import os

import pytest

from tests.helpers import auto_backend, make_tree

pytest_plugins = ["pytester"]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    make_tree(pytester.path / "data" / "base", {"hello.txt": "hello\n", "sub": {"x": "x"}})
    make_tree(pytester.path / "data" / "top", {"hello.txt": "top\n"})
    return pytester


def test_marker_gives_the_base(project: pytest.Pytester) -> None:
    project.makepyfile(
        f"""
        import pytest

        @pytest.mark.overlay("data/base")
        def test_write(overlay_stack):
            (overlay_stack.merged / "hello.txt").write_text("changed")
            assert overlay_stack.backend == "{auto_backend()}"
            assert [str(c) for c in overlay_stack.changes()] == ["M hello.txt"]
        """
    )
    project.runpytest("--strict-markers").assert_outcomes(passed=1)
    assert (project.path / "data" / "base" / "hello.txt").read_text() == "hello\n"


def test_marker_paths_are_relative_to_the_test_file(project: pytest.Pytester) -> None:
    sub = project.mkpydir("suite")
    (sub / "test_rel.py").write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.overlay('../data/top', '../data/base')\n"
        "def test_it(overlay_stack):\n"
        "    assert (overlay_stack.merged / 'hello.txt').read_text() == 'top\\n'\n"
        "    assert (overlay_stack.merged / 'sub' / 'x').read_text() == 'x'\n"
    )
    project.runpytest().assert_outcomes(passed=1)


def test_closest_marker_wins(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest
        pytestmark = pytest.mark.overlay("data/base")

        class TestIt:
            pytestmark = pytest.mark.overlay("data/top")

            def test_class_level(self, overlay_stack):
                assert sorted(p.name for p in overlay_stack.merged.iterdir()) == ["hello.txt"]

            @pytest.mark.overlay("data/base")
            def test_function_level(self, overlay_stack):
                assert (overlay_stack.merged / "sub").is_dir()
        """
    )
    project.runpytest().assert_outcomes(passed=2)


def test_ini_base_relative_to_config_file(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\noverlay_base =\n    data/top\n    data/base\n")
    (project.path / "tests").mkdir()
    (project.path / "tests" / "test_ini.py").write_text(
        "def test_it(overlay_stack):\n"
        "    assert (overlay_stack.merged / 'hello.txt').read_text() == 'top\\n'\n"
        "    assert [p.name for p in overlay_stack.lowers] == ['top', 'base']\n"
    )
    project.runpytest("tests").assert_outcomes(passed=1)


def test_each_test_gets_a_fresh_upper(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest
        pytestmark = pytest.mark.overlay("data/base")

        @pytest.mark.parametrize("n", range(3))
        def test_fresh(overlay_stack, n):
            assert not (overlay_stack.merged / "mine").exists()
            (overlay_stack.merged / "mine").write_text(str(n))
            (overlay_stack.merged / "hello.txt").unlink()
        """
    )
    project.runpytest().assert_outcomes(passed=3)
    assert (project.path / "data" / "base" / "hello.txt").exists()


def test_workspaces_live_under_basetemp(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.overlay("data/base")
        def test_where(overlay_stack, tmp_path_factory):
            assert overlay_stack.workspace.is_relative_to(tmp_path_factory.getbasetemp())
            assert overlay_stack.workspace.name.startswith("test_where-")
        """
    )
    result = project.runpytest(f"--basetemp={project.path / 'bt'}")
    result.assert_outcomes(passed=1)
    # Unmounted and removed at teardown; only the empty factory directory remains.
    assert [list(d.iterdir()) for d in (project.path / "bt").glob("overlay*")] == [[]]


def test_factory_for_wider_scopes(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="module")
        def shared(overlay_stack_factory, request):
            stack = overlay_stack_factory.mount([request.path.parent / "data" / "base"])
            (stack.merged / "built-once").write_text("expensive")
            yield stack
            stack.close()
        """
    )
    project.makepyfile(
        """
        def test_a(shared):
            assert (shared.merged / "built-once").read_text() == "expensive"

        def test_b(shared):
            assert [str(c) for c in shared.changes()] == ["A built-once"]
        """
    )
    project.runpytest().assert_outcomes(passed=2)


def test_no_base_configured_is_a_clear_error(project: pytest.Pytester) -> None:
    project.makepyfile("def test_it(overlay_stack):\n    pass\n")
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*uses overlay_stack but no base directory is configured*@pytest.mark.overlay*"]
    )


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("overlay()", "*needs at least one layer path*"),
        ("overlay('data/base', lower=1)", "*takes layer paths only*lower=*"),
        ("overlay(42)", "*got 42 (int)*must be a path*"),
        ("overlay('data/nope')", "*lower layer*data/nope* does not exist*"),
        ("overlay('data/base/hello.txt')", "*is not a directory*"),
    ],
)
def test_bad_marker_is_a_clear_error(project: pytest.Pytester, marker: str, message: str) -> None:
    project.makepyfile(
        f"import pytest\n@pytest.mark.{marker}\ndef test_it(overlay_stack):\n    pass\n"
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([message])


def test_unknown_backend_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--overlay-backend=zfs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown backend 'zfs'*choose one of: auto, kernel, userns*"])


def test_unknown_backend_in_ini_is_a_usage_error(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\noverlay_backend = btrfs\n")
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_strict_markers_accepts_overlay(project: pytest.Pytester) -> None:
    project.makepyfile(
        "import pytest\n@pytest.mark.overlay('data/base')\ndef test_it(overlay_stack):\n    pass\n"
    )
    project.runpytest("--strict-markers").assert_outcomes(passed=1)


def test_markers_and_fixtures_are_documented(project: pytest.Pytester) -> None:
    project.runpytest("--markers").stdout.fnmatch_lines(["@pytest.mark.overlay(*layers)*"])
    fixtures = project.runpytest("--fixtures")
    fixtures.stdout.fnmatch_lines(["overlay_stack -- *", "*fresh, throwaway upper*"])
    fixtures.stdout.fnmatch_lines(
        ["overlay_stack_factory ?session scope? -- *", "*Session-scoped factory*"]
    )
    project.runpytest("--help").stdout.fnmatch_lines(
        [
            "copy-on-write overlay directories (pytest-overlay):",
            "*--overlay-backend=NAME*",
            "*overlay_base *",
        ]
    )


def test_disabling_the_plugin(project: pytest.Pytester) -> None:
    project.makepyfile("def test_it(overlay_stack):\n    pass\n")
    result = project.runpytest("-p", "no:overlay")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'overlay_stack' not found*"])
    assert "overlay: backend" not in result.stdout.str()


def test_report_header_names_the_backend(project: pytest.Pytester) -> None:
    # Without a named backend nothing is chosen before a test mounts (tests/test_unused.py).
    result = project.runpytest_subprocess(f"--overlay-backend={auto_backend()}")
    result.stdout.fnmatch_lines([f"overlay: backend {auto_backend()} (*"])
    if auto_backend() == "userns":
        result.stdout.fnmatch_lines(
            [
                "*; user namespace entered at start-up (--overlay-backend=userns): files of "
                "unmapped owners show as nobody; overlay_userns = never opts out*"
            ]
        )


def test_naming_a_backend_that_cannot_work_is_a_usage_error(project: pytest.Pytester) -> None:
    # Whatever this machine can do, the backend that does not fit our uid cannot work.
    wrong = "userns" if os.geteuid() == 0 else "kernel"
    result = project.runpytest(f"--overlay-backend={wrong}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*--overlay-backend={wrong}: the '{wrong}' backend cannot work*"]
    )


def test_no_working_backend_skips_with_the_reason(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
        def pytest_overlay_veto_backend(config, backend):
            return "this suite forbids " + backend.name
        """
    )
    project.makepyfile(
        "import pytest\n@pytest.mark.overlay('data/base')\ndef test_it(overlay_stack):\n    pass\n"
    )
    result = project.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["SKIPPED*pytest-overlay cannot mount here: no backend works here*forbids copy*"]
    )


def test_base_unchanged_when_tests_fail(project: pytest.Pytester) -> None:
    before = sorted(str(p.relative_to(project.path)) for p in (project.path / "data").rglob("*"))
    project.makepyfile(
        """
        import pytest, shutil

        @pytest.mark.overlay("data/base")
        def test_boom(overlay_stack):
            shutil.rmtree(overlay_stack.merged / "sub")
            (overlay_stack.merged / "hello.txt").write_text("gone")
            raise AssertionError("boom")
        """
    )
    project.runpytest().assert_outcomes(failed=1)
    after = sorted(str(p.relative_to(project.path)) for p in (project.path / "data").rglob("*"))
    assert after == before
    assert (project.path / "data" / "base" / "hello.txt").read_text() == "hello\n"
