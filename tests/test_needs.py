"""Deciding before collection whether a session will mount (pytest-xdist's controller)."""

from __future__ import annotations

import pytest

from pytest_overlay._plugin import needs as _needs
from tests.helpers import make_tree

pytest_plugins = ["pytester"]

UNRELATED = "def test_unrelated():\n    pass\n"
MOUNTING = "import pytest\n\n@pytest.mark.overlay('base')\ndef test_it(overlay_stack):\n    pass\n"


@pytest.fixture
def why(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> _Why:
    # This test process has imported pytest_overlay.stack itself; only a conftest
    # file's imports may count, so the module check is left out here.
    monkeypatch.setattr(_needs, "_MODULES", ())
    return _Why(pytester)


class _Why:
    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester

    def __call__(self, *args: str) -> str:
        return _needs.why_it_mounts(self.pytester.parseconfig(*args))


def test_an_unrelated_suite_needs_nothing(pytester: pytest.Pytester, why: _Why) -> None:
    pytester.makepyfile(test_unrelated=UNRELATED)
    # Where pytest does not look: virtual environments and norecursedirs.
    make_tree(pytester.path / "env", {"pyvenv.cfg": "", "test_lib.py": MOUNTING})
    make_tree(pytester.path / "build", {"test_built.py": MOUNTING})
    # Not a test file by python_files.
    make_tree(pytester.path / "tools", {"helper.py": MOUNTING})
    assert why() == ""
    assert why(str(pytester.path)) == ""


def test_a_test_file_that_mounts(pytester: pytest.Pytester, why: _Why) -> None:
    pytester.makepyfile(test_unrelated=UNRELATED)
    make_tree(pytester.path / "sub", {"test_mounting.py": MOUNTING})
    assert why() == "sub/test_mounting.py uses pytest-overlay"
    # Only what the arguments select is read.
    assert why("test_unrelated.py::test_unrelated") == ""
    assert why("sub/test_mounting.py::test_it") == "sub/test_mounting.py uses pytest-overlay"


def test_a_conftest_that_declares_an_overlay_fixture(pytester: pytest.Pytester, why: _Why) -> None:
    pytester.makepyfile(test_unrelated=UNRELATED)
    conftest = "from pytest_overlay import overlay_fixture\ndata = overlay_fixture('d')\n"
    make_tree(pytester.path / "sub", {"conftest.py": conftest})
    assert why() == "sub/conftest.py uses pytest-overlay"


def test_options_and_ini_keys(pytester: pytest.Pytester, why: _Why) -> None:
    pytester.makepyfile(test_unrelated=UNRELATED)
    assert why("--overlay-keep=all") == "--overlay-keep is given"
    assert why("--overlay-backend=fuse") == "--overlay-backend is given"
    pytester.makeini("[pytest]\noverlay_base = data\n")
    assert why() == "overlay_base is set"
    pytester.makeini("[pytest]\noverlay_workspace = disk\n")
    assert why() == "overlay_workspace is set"
    # The defaults, written out, are no sign of use.
    pytester.makeini("[pytest]\noverlay_backend = auto\noverlay_userns = auto\n")
    assert why() == ""
