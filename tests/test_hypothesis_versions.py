"""The Hypothesis releases the hypothesis extra allows, down to its declared minimum.

``tox -e lowest`` runs the whole suite on the lowest declared versions; this test keeps
the one difference that broke every test there in the everyday suite.
"""

from __future__ import annotations

import pytest

from tests.helpers import make_tree

pytest_plugins = ["pytester"]


def test_a_hypothesis_without_the_public_detector_still_works(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # hypothesis.is_hypothesis_test is public in recent releases only; 6.100 (the declared
    # minimum) lacks it, and every test then failed with AttributeError.
    hypothesis = pytest.importorskip("hypothesis")
    monkeypatch.delattr(hypothesis, "is_hypothesis_test", raising=False)
    make_tree(pytester.path / "base", {"kept": "base"})
    pytester.makeini("[pytest]\noverlay_base = base\n")
    pytester.makepyfile(
        """
        from hypothesis import given, strategies as st

        def test_plain(overlay_stack):
            (overlay_stack.merged / "kept").unlink()

        @given(st.integers(0, 9))
        def test_prop(overlay_stack, n):
            assert (overlay_stack.merged / "kept").read_text() == "base"
            (overlay_stack.merged / "kept").unlink()
        """
    )
    # Hypothesis's own plugin imports the name in recent releases: leave it out.
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:hypothesispytest")
    result.assert_outcomes(passed=2)
