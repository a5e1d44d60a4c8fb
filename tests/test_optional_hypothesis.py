"""Hypothesis is optional: the plugin never imports it, the property-test kit says so."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import make_tree

pytest_plugins = ["pytester"]


def test_the_plugin_never_imports_hypothesis(pytester: pytest.Pytester) -> None:
    make_tree(pytester.path / "base", {"f": "x"})
    pytester.makeini("[pytest]\noverlay_base = base\n")
    # Hypothesis's own plugin imports Hypothesis at the end of a session; without it,
    # nothing else should. The answer is written at the last moment pytest gives us.
    pytester.makeconftest(
        """
import sys

def pytest_unconfigure(config):
    (config.rootpath / "imported").write_text(
        " ".join(sorted(m for m in sys.modules if m.split(".")[0] == "hypothesis"))
    )
"""
    )
    pytester.makepyfile(
        """
def test_writes(overlay_stack):
    (overlay_stack.merged / "f").write_text("y")
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:hypothesispytest", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "imported").read_text() == ""


def test_the_testing_kit_names_the_extra_when_hypothesis_is_missing() -> None:
    # sys.modules[name] = None makes "import name" fail as if it were not installed.
    code = (
        "import sys; sys.modules['hypothesis'] = None\n"
        "try:\n"
        "    import pytest_overlay.testing\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "pytest_overlay.testing needs Hypothesis" in out
    assert "pip install 'pytest-overlay[hypothesis]'" in out
