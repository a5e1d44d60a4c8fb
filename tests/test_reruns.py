"""pytest-rerunfailures: every attempt gets a fresh stack and keeps its own upper layer."""

from __future__ import annotations

import pytest

from tests.helpers import PLUGIN_BACKENDS, make_tree

pytest_plugins = ["pytester"]


RERUNS = """
import pytest

pytestmark = pytest.mark.overlay("base")
ATTEMPTS = []

@pytest.mark.flaky(reruns=3)
def test_flaky(overlay_stack):
    ATTEMPTS.append(1)
    f = overlay_stack.merged / "f.txt"
    assert f.read_text() == "f", "this attempt sees an earlier attempt's changes"
    f.write_text(f"attempt {len(ATTEMPTS)}")
    assert len(ATTEMPTS) == 3
"""


@pytest.mark.parametrize("backend", PLUGIN_BACKENDS)
def test_each_rerun_gets_a_fresh_stack_and_its_own_kept_layer(
    pytester: pytest.Pytester, backend: str
) -> None:
    make_tree(pytester.path / "base", {"f.txt": "f"})
    pytester.makepyfile(test_reruns=RERUNS)
    basetemp = pytester.path / "bt"
    # Without xdist, pytest-rerunfailures starts no thread (see tests/conftest.py).
    result = pytester.runpytest(
        "-p", "rerunfailures", "-p", "no:xdist", f"--basetemp={basetemp}",
        f"--overlay-backend={backend}",
    )  # fmt: skip
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("rerun"), outcomes.get("errors")) == (1, 2, None)
    kept = basetemp / "overlay-kept"
    assert sorted(p.name for p in kept.iterdir()) == ["test_flaky", "test_flaky-2"]
    assert (kept / "test_flaky" / "f.txt").read_text() == "attempt 1"
    assert (kept / "test_flaky-2" / "f.txt").read_text() == "attempt 2"
    assert list((basetemp / "overlay").iterdir()) == []
