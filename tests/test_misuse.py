"""Misuse is caught early and said once, in a few words: markers, fixture names, bases."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_overlay import OverlayError, OverlayStack
from tests.helpers import make_tree

pytest_plugins = ["pytester"]

# This suite turns warnings into errors, and pytester's in-process runs inherit that.
SHOW = ("-W", "always::pytest_overlay.OverlayWarning")


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    make_tree(pytester.path / "data" / "base", {"hello.txt": "hello\n"})
    return pytester


# --- a marker that no fixture reads ------------------------------------------------------


def test_a_marker_on_a_test_without_an_overlay_fixture_warns(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.overlay("data/base")
        def test_forgot_the_fixture(tmp_path):
            pass
        """
    )
    result = project.runpytest("--collect-only", "-q", *SHOW)
    result.stdout.fnmatch_lines(
        [
            "*OverlayWarning: @pytest.mark.overlay on test_a_marker_on_a_test_without_an_"
            "overlay_fixture_warns.py::test_forgot_the_fixture has no effect: it uses "
            "neither overlay_stack nor overlay_stack_factory*"
        ]
    )
    assert result.ret == 0


def test_the_warning_can_be_made_an_error(project: pytest.Pytester) -> None:
    project.makepyfile(
        "import pytest\n@pytest.mark.overlay('data/base')\ndef test_it():\n    pass\n"
    )
    result = project.runpytest("-W", "error::pytest_overlay.OverlayWarning")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *has no effect*(a warning made an error)"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")


def test_a_module_marker_warns_only_when_no_test_under_it_uses_the_fixture(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        test_used="""
        import pytest
        pytestmark = pytest.mark.overlay("data/base")

        def test_with(overlay_stack):
            pass

        def test_without():
            pass
        """,
        test_unused="""
        import pytest
        pytestmark = pytest.mark.overlay("data/base")

        @pytest.mark.parametrize("n", range(3))
        def test_without(n):
            pass

        class TestIt:
            def test_also_without(self):
                pass
        """,
    )
    result = project.runpytest("-q", *SHOW)
    result.assert_outcomes(passed=6, warnings=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.overlay on test_unused.py has no effect*"])


def test_parametrized_tests_warn_once(project: pytest.Pytester) -> None:
    project.makepyfile(
        """
        import pytest

        @pytest.mark.overlay("data/base")
        @pytest.mark.parametrize("n", range(3))
        def test_it(n):
            pass
        """
    )
    project.runpytest(*SHOW).assert_outcomes(passed=3, warnings=1)


# --- marker arguments are checked at collection -----------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("name='data/base'", "*@pytest.mark.overlay takes layer paths only, not name=...*"),
        ("", "*@pytest.mark.overlay needs at least one layer path*"),
        ("42", "*@pytest.mark.overlay got 42 (int); each layer must be a path*"),
    ],
)
def test_marker_argument_errors_are_collection_errors(
    project: pytest.Pytester, arguments: str, message: str
) -> None:
    project.makepyfile(
        f"""
        import pytest

        @pytest.mark.overlay({arguments})
        def test_it(overlay_stack):
            pass
        """
    )
    result = project.runpytest("--collect-only")
    result.stdout.fnmatch_lines(["*ERROR collecting*", message])
    assert result.ret == pytest.ExitCode.INTERRUPTED
    # One short message: no traceback through pytest-overlay.
    result.stdout.no_fnmatch_line("*pytest_overlay*")


# --- a fixture name that is a directory --------------------------------------------------


def test_an_identifier_that_is_a_directory_hints_at_a_path(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
        from pytest_overlay import overlay_fixture

        stack = overlay_fixture("data")
        """
    )
    project.makepyfile("def test_it(stack):\n    pass\n")
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "*fixture 'data' not found*",
            "*overlay_fixture('data') in *conftest.py takes 'data' for a fixture name, but "
            "there is no such fixture; for the directory *data write overlay_fixture('./data')*",
        ]
    )


def test_an_identifier_that_is_a_fixture_gets_no_hint(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
        import pytest
        from pytest_overlay import overlay_fixture

        @pytest.fixture
        def data(request):
            return request.path.parent / "data" / "base"

        stack = overlay_fixture("data")
        """
    )
    project.makepyfile("def test_it(stack):\n    assert (stack.merged / 'hello.txt').exists()\n")
    project.runpytest().assert_outcomes(passed=1)


# --- setup errors are said once ----------------------------------------------------------


def test_a_setup_error_is_said_once(project: pytest.Pytester) -> None:
    project.makeconftest(
        "from pytest_overlay import overlay_fixture\nstack = overlay_fixture('./missing')\n"
    )
    project.makepyfile(
        """
        import pytest

        @pytest.mark.overlay("missing")
        def test_marker(overlay_stack):
            pass

        def test_declared(stack):
            pass
        """
    )
    result = project.runpytest("-rN")  # no short summary: the errors section only
    result.assert_outcomes(errors=2)
    output = result.stdout.str()
    assert "During handling" not in output
    assert "direct cause" not in output
    assert output.count("missing' does not exist") == 2, output


def test_an_ini_error_is_said_once(project: pytest.Pytester) -> None:
    project.makepyfile("def test_it(overlay_stack):\n    pass\n")
    result = project.runpytest("-rN")
    result.assert_outcomes(errors=1)
    output = result.stdout.str()
    assert "During handling" not in output
    assert output.count("no base directory is configured") == 1, output


# --- bases that are not directory trees --------------------------------------------------


def test_the_filesystem_root_is_refused() -> None:
    with pytest.raises(OverlayError, match=r"'/' is the root of the filesystem.*a directory"):
        OverlayStack(["/"])


@pytest.mark.parametrize(
    ("path", "kind"), [("/proc", "proc"), ("/proc/self", "proc"), ("/sys", "sysfs")]
)
def test_pseudo_filesystems_are_refused(path: str, kind: str) -> None:
    if not Path(path).is_dir():
        pytest.skip(f"no {path} here")
    with pytest.raises(OverlayError, match=f"is on {kind}, a pseudo filesystem.*copy the files"):
        OverlayStack([path])


def test_a_pseudo_filesystem_base_is_one_short_setup_error(project: pytest.Pytester) -> None:
    project.makepyfile(
        "import pytest\n@pytest.mark.overlay('/proc')\ndef test_it(overlay_stack):\n    pass\n"
    )
    result = project.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*lower layer '/proc' is on proc, a pseudo filesystem*"])
    result.stdout.no_fnmatch_line("*Errno*")
