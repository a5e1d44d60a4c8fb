"""Hypothesis with overlays: a fresh union for every example, shrinking included."""

from __future__ import annotations

import pytest

from pytest_overlay._backends.protocol import Backend
from tests.helpers import make_tree


def _machines_built_by_a_function() -> bool:
    try:
        from hypothesis.stateful import get_state_machine_test  # noqa: F401
    except ImportError:
        return False
    return True


# Hypothesis 6.100 (the declared minimum) has no get_state_machine_test to reach.
machines_reachable = pytest.mark.skipif(
    not _machines_built_by_a_function(),
    reason="this Hypothesis builds state machine tests inside run_state_machine_as_test",
)

pytest_plugins = ["pytester"]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    make_tree(pytester.path / "base", {"kept": "base", "d": {"inner": "x"}})
    pytester.makeini("[pytest]\noverlay_base = base\n")
    return pytester


# Every example checks that it starts from the base, then changes the union; the failing
# bound makes Hypothesis shrink, and shrinking runs many more examples on the same stack.
# Each example also counts itself in a file outside the union, so a test can tell that
# many examples ran.
PER_EXAMPLE = """
import pathlib
from hypothesis import given, settings, strategies as st

COUNT = pathlib.Path(__file__).parent / "count"

def check_and_dirty(stack, n):
    with COUNT.open("a") as f:
        f.write(".")
    assert (stack.merged / "kept").read_text() == "base"
    assert not (stack.merged / "mine").exists(), "an earlier example leaked into this one"
    assert sorted(p.name for p in stack.merged.iterdir()) == ["d", "kept"]
    (stack.merged / "mine").write_text(str(n))
    (stack.merged / "kept").unlink()
    (stack.merged / "d" / "inner").write_text("changed")
    assert n < 1000, "planted"
"""


# How Hypothesis introduces the shrunk example: its wording changed between releases.
FAILING = r".*(Failing test case|Falsifying example):"


def count(pytester: pytest.Pytester) -> int:
    return len((pytester.path / "count").read_text())


def test_given_overlay_stack_starts_from_the_base_in_every_example(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        PER_EXAMPLE
        + """
@given(st.integers(0, 999))
def test_prop(overlay_stack, n):
    check_and_dirty(overlay_stack, n)

@settings(max_examples=30, database=None)
@given(n=st.integers(0, 999))
def test_with_settings(n, overlay_stack):
    check_and_dirty(overlay_stack, n)

class TestInClass:
    @settings(max_examples=20, database=None)
    @given(st.integers(0, 999))
    def test_method(self, overlay_stack, n):
        check_and_dirty(overlay_stack, n)
"""
    )
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    # The outer session's Hypothesis profile (25 examples) applies to test_prop.
    assert count(project) >= 25 + 30 + 20


def test_shrinking_starts_from_the_base_too(project: pytest.Pytester, backend: Backend) -> None:
    # On every backend: the reset is a restore, which each implements its own way.
    project.makepyfile(
        PER_EXAMPLE
        + """
@settings(max_examples=200, database=None, derandomize=True)
@given(st.integers(0, 10**6))
def test_shrinks(overlay_stack, n):
    check_and_dirty(overlay_stack, n)
"""
    )
    result = project.runpytest("-p", "no:cacheprovider", f"--overlay-backend={backend.name}")
    result.assert_outcomes(failed=1)
    # Shrunk to the boundary, and by the planted assertion, not by a leaked file.
    result.stdout.re_match_lines([rf"{FAILING} test_shrinks\(", r".*n=1000,"])
    result.stdout.fnmatch_lines(["*AssertionError: planted*"])
    result.stdout.no_fnmatch_line("*AssertionError: an earlier example leaked*")
    # The failure report shows what the last (failing) example changed.
    result.stdout.fnmatch_lines(["*overlay changes*", "*A mine*"])


def test_overlay_fixture_and_factory_stacks_are_reset_too(project: pytest.Pytester) -> None:
    project.makeconftest(
        """
import pytest
from pytest_overlay import overlay_fixture

db = overlay_fixture("./base")

@pytest.fixture
def own(overlay_stack_factory, request):
    stack = overlay_stack_factory.mount([request.config.rootpath / "base"])
    yield stack
    stack.close()
"""
    )
    project.makepyfile(
        PER_EXAMPLE
        + """
@settings(max_examples=25, database=None)
@given(st.integers(0, 999))
def test_both(db, own, n):
    check_and_dirty(db, n)
    check_and_dirty(own, n)
"""
    )
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert count(project) >= 50


def test_other_function_scoped_fixtures_still_fail_the_health_check(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        """
from hypothesis import given, strategies as st

@given(st.integers())
def test_mixed(overlay_stack, tmp_path, n):
    pass

@given(st.integers())
def test_plain(tmp_path, n):
    pass
"""
    )
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        ["*FailedHealthCheck*test_mixed*uses a function-scoped fixture 'tmp_path'*"]
    )
    result.stdout.no_fnmatch_line("*fixture 'overlay_stack'*")


def test_a_suppressed_health_check_is_left_alone(project: pytest.Pytester) -> None:
    project.makepyfile(
        PER_EXAMPLE
        + """
from hypothesis import HealthCheck

@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=20)
@given(st.integers(0, 999))
def test_mixed(overlay_stack, tmp_path, n):
    check_and_dirty(overlay_stack, n)
"""
    )
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_state_machine_resets_the_stack_in_its_init(project: pytest.Pytester) -> None:
    project.makepyfile(
        PER_EXAMPLE
        + """
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

def test_machine(overlay_stack):
    class Writer(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            overlay_stack.reset()
            self.written = set()
            with COUNT.open("a") as f:
                f.write(".")
            assert sorted(p.name for p in overlay_stack.merged.iterdir()) == ["d", "kept"]

        @rule(name=st.sampled_from("abcxyz"))
        def write(self, name):
            (overlay_stack.merged / name).write_text("x")
            self.written.add(name)
            assert len(self.written) < 4, "planted"

    run_state_machine_as_test(
        Writer, settings=settings(max_examples=100, database=None, derandomize=True)
    )
"""
    )
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*AssertionError: planted*"])
    # Shrunk to the shortest failing program: four writes of different names.
    # Counted in the failure report only: where CI is set, pytest's short summary
    # repeats the whole message, program included.
    report = result.outlines[
        : result.outlines.index(
            next(line for line in result.outlines if "short test summary info" in line)
        )
    ]
    assert sum("state.write(name=" in line for line in report) == 4
    assert count(project) > 10


@machines_reachable
def test_a_state_machine_run_as_a_test_starts_each_run_from_the_base(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        """
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule, run_state_machine_as_test

def test_machine(overlay_stack):
    class Writer(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            assert not (overlay_stack.merged / "mine").exists(), "leaked"

        @rule()
        def write(self):
            (overlay_stack.merged / "mine").write_text("x")

    run_state_machine_as_test(Writer, settings=settings(max_examples=10, database=None))
"""
    )
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@machines_reachable
def test_a_machine_not_run_through_run_state_machine_as_test_is_not_reset(
    project: pytest.Pytester,
) -> None:
    # Why the documented reset() line stays for machines built another way.
    project.makepyfile(
        """
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, get_state_machine_test, rule

def test_machine(overlay_stack):
    class Writer(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            assert not (overlay_stack.merged / "mine").exists(), "leaked"

        @rule()
        def write(self):
            (overlay_stack.merged / "mine").write_text("x")

    test = get_state_machine_test(Writer, settings=settings(max_examples=10, database=None))
    test()
"""
    )
    result = project.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*leaked*"])


def test_a_file_left_open_by_an_example_fails_the_next_with_the_reason(
    project: pytest.Pytester,
) -> None:
    project.makepyfile(
        """
from hypothesis import Phase, given, settings, strategies as st

LEFT_OPEN = []

@settings(max_examples=3, database=None, phases=[Phase.generate])
@given(st.integers())
def test_leaves_a_file_open(overlay_stack, n):
    LEFT_OPEN.append(open(overlay_stack.merged / "kept"))

def teardown_module():
    # After the stack's teardown, which must still find them open. Left to the garbage
    # collector, they warn (ResourceWarning, an error here) in whichever later test of
    # the outer session happens to collect them.
    for f in LEFT_OPEN:
        f.close()
"""
    )
    # The file is still open at teardown too: the union is detached lazily, with a warning
    # (this session's filterwarnings=error would reach the inner one and make it an error).
    result = project.runpytest(
        "-p", "no:cacheprovider", "-W", "ignore::ResourceWarning",
        "-W", "default::pytest_overlay.OverlayWarning",
    )  # fmt: skip
    result.assert_outcomes(failed=1, warnings=1)
    result.stdout.fnmatch_lines(["*OverlayError: cannot restore *merged: it is in use*"])
    result.stdout.fnmatch_lines(["*OverlayWarning: *merged was still in use at teardown (pid *"])


@pytest.mark.parametrize("backend", ["auto", "copy"])
def test_snapshots_of_an_example_do_not_outlive_it(project: pytest.Pytester, backend: str) -> None:
    # Each example freezes two layers; by the next example they are gone from the
    # workspace (the reset drops them from the stack, and nothing else refers to them).
    project.makepyfile(
        """
from hypothesis import given, settings, strategies as st

SEEN = []

@settings(max_examples=25, database=None)
@given(st.integers())
def test_snap(overlay_stack, n):
    SEEN.append(sorted(p.name for p in overlay_stack.workspace.iterdir()))
    (overlay_stack.merged / "kept").write_text(str(n))
    first = overlay_stack.snapshot()
    (overlay_stack.merged / "mine").write_text(str(n))
    second = overlay_stack.snapshot()
    assert first.layers[1:] == second.layers[2:]

def test_after():
    assert len(SEEN) == 25
    # Frozen layers are the workspace's layer-N directories (fuse adds its log there).
    assert all(not any(name.startswith("layer-") for name in seen) for seen in SEEN), SEEN
    assert all({"merged", "upper", "work"} <= set(seen) for seen in SEEN), SEEN
"""
    )
    result = project.runpytest("-p", "no:cacheprovider", f"--overlay-backend={backend}")
    result.assert_outcomes(passed=2)
