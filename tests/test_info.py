"""pytest --overlay-info: one line per backend, why not, how to enable."""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["pytester"]


def test_info_lists_every_backend_and_exits(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_never_runs():\n    raise AssertionError\n")
    result = pytester.runpytest("--overlay-info")
    assert result.ret == 0
    out = result.stdout.str()
    for name in ("kernel", "userns", "fuse", "copy"):
        assert f" {name} " in out
    assert "never_runs" not in out
    result.stdout.fnmatch_lines(["*ok *copy *", "tests that use overlay_stack mount through: *"])
    if os.geteuid() == 0:
        result.stdout.fnmatch_lines(["*ok  kernel*<- chosen", "*no  userns*", "*ordinary users*"])
    else:
        result.stdout.fnmatch_lines(["*no  kernel*", "*mounting needs root*"])


def test_info_shows_vetoes(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        "def pytest_overlay_veto_backend(config, backend):\n"
        "    return 'policy' if backend.name == 'fuse' else None\n"
    )
    result = pytester.runpytest("--overlay-info")
    result.stdout.fnmatch_lines(["*no  fuse*", "*vetoed: policy*"])


def test_info_is_in_help(pytester: pytest.Pytester) -> None:
    pytester.runpytest("--help").stdout.fnmatch_lines(["*--overlay-info*"])
