"""Other pytest plugins in the same session: each line of docs/interop.rst, tested.

Each test skips when its plugin is not installed; the ``interop`` extra (``tox -e
interop``, a step of ``.ci/run``) installs them all. syrupy and pytest-snapshot both
define ``--snapshot-update`` and so cannot be loaded together: that run passes
``-p no:snapshot``, and the pytest-snapshot test loads it back with ``-p no:syrupy``.
"""

from __future__ import annotations

import pytest

from tests.helpers import make_tree

pytest_plugins = ["pytester"]


def needs(module: str) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed (the interop extra)")


@pytest.fixture(autouse=True)
def no_autoload(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test is about one plugin, whatever else the interop extra installed: the
    sessions it runs load only pytest-overlay and the plugins they name."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def run(pytester: pytest.Pytester, *plugins: str, args: tuple[str, ...] = ()) -> pytest.RunResult:
    """A pytest session with pytest-overlay and *plugins* (entry point names) loaded."""
    loaded = [arg for name in ("overlay", *plugins) for arg in ("-p", name)]
    return pytester.runpytest(*loaded, *args)


FAKEFS = """
import pytest

pytestmark = pytest.mark.overlay("base")

def test_fs_first(fs, overlay_stack):
    pass

def test_later_test_without_fs(overlay_stack):
    assert (overlay_stack.merged / "f.txt").read_text() == "f"

def test_fs_after_overlay_stack(overlay_stack, fs):
    fs.add_real_directory(overlay_stack.merged, read_only=False)
    assert (overlay_stack.merged / "f.txt").read_text() == "f"
    (overlay_stack.merged / "f.txt").write_text("fake")
    fs.pause()  # writes went to the fake, not to the union
    assert (overlay_stack.merged / "f.txt").read_text() == "f"
    assert overlay_stack.changes() == []
    fs.resume()

def test_fails_with_fs(overlay_stack, fs):
    assert False
"""


def test_pyfakefs_set_up_first_is_named_and_spoils_nothing(pytester: pytest.Pytester) -> None:
    needs("pyfakefs")
    make_tree(pytester.path / "base", {"f.txt": "f"})
    pytester.makepyfile(test_fakefs=FAKEFS)
    result = run(pytester, "fakefs")
    result.assert_outcomes(errors=1, passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_fs_first*",
            "overlay_stack: pyfakefs's fake filesystem is active *"
            "Request overlay_stack before fs*",
            "*test_fails_with_fs*",
            "*overlay changes*",
            "not listed: pyfakefs's fake filesystem hides the upper layer",
        ]
    )
    result.stdout.no_fnmatch_line("*does not exist*")
