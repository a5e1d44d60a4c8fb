"""The pytest_overlay_* hooks: third-party backends, vetoes and preferences (pytester)."""

from __future__ import annotations

import pytest

from tests.helpers import make_tree

pytest_plugins = ["pytester"]

THIRD_PARTY = """
from pytest_overlay._backends.copy import CopyBackend

class Recording:
    name = "recording"
    rank = 1
    description = "a third-party backend that records its calls"
    deviations = CopyBackend.deviations
    calls = []

    def __init__(self):
        self._inner = CopyBackend()

    def probe(self):
        return ""

    def activate(self):
        self.calls.append("activate")

    def mount(self, lowers, space):
        self.calls.append("mount")
        self._inner.mount(lowers, space)

    def unmount(self, space):
        self.calls.append("unmount")
        return self._inner.unmount(space)

    def changes(self, lowers, space):
        return self._inner.changes(lowers, space)

RECORDING = Recording()

def pytest_overlay_add_backends(config):
    return [RECORDING]
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    make_tree(pytester.path / "base", {"f.txt": "f"})
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.overlay("base")
        def test_it(overlay_stack, request):
            (overlay_stack.merged / "f.txt").write_text("changed")
            assert [str(c) for c in overlay_stack.changes()] == ["M f.txt"]
            print("BACKEND=" + overlay_stack.backend)
        """
    )
    return pytester


def test_third_party_backend_is_preferred_by_rank(project: pytest.Pytester) -> None:
    project.makeconftest(
        THIRD_PARTY
        + """
def pytest_sessionfinish(session):
    assert Recording.calls == ["activate", "mount", "unmount"], Recording.calls
"""
    )
    result = project.runpytest("-s")
    result.assert_outcomes(passed=1)
    # The header no longer names a backend before a test mounts (tests/test_unused.py).
    result.stdout.fnmatch_lines(["*BACKEND=recording*"])
    assert (project.path / "base" / "f.txt").read_text() == "f"


def test_third_party_backend_selectable_by_name(project: pytest.Pytester) -> None:
    project.makeconftest(THIRD_PARTY.replace("rank = 1", "rank = 99"))
    result = project.runpytest("-s", "--overlay-backend=recording")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*BACKEND=recording*"])


def test_veto_moves_auto_down_the_ladder(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
        def pytest_overlay_veto_backend(config, backend):
            if backend.name != "copy":
                return "this suite must not mount"
        """
    )
    result = project.runpytest("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*BACKEND=copy*"])


def test_veto_of_a_named_backend_is_a_usage_error(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
        def pytest_overlay_veto_backend(config, backend):
            return "not on this CI" if backend.name == "copy" else None
        """
    )
    result = project.runpytest("--overlay-backend=copy")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--overlay-backend=copy*vetoed: not on this CI*"])


def test_choose_hook_prefers_a_backend(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
        def pytest_overlay_choose_backend(config, candidates):
            assert [b.name for b in candidates][-1] == "copy"
            return next(b for b in candidates if b.name == "copy")
        """
    )
    result = project.runpytest("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*BACKEND=copy*"])


def test_registering_something_that_is_not_a_backend(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
        def pytest_overlay_add_backends(config):
            return [object()]
        """
    )
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*lacks the Backend protocol*"])


def test_two_backends_with_one_name(project: pytest.Pytester) -> None:
    project.makeconftest(THIRD_PARTY.replace('name = "recording"', 'name = "copy"'))
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*two overlay backends are named 'copy'*"])
