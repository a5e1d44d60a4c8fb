"""What a mount does besides mounting: checks done once per session, hooks only where used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_overlay import OverlayError, OverlayStack
from pytest_overlay import stack as stack_module
from pytest_overlay._plugin import fixture_hints
from tests.helpers import auto_backend, make_tree, usable_backend

pytest_plugins = ["pytester"]


def _layers(root: Path, n: int) -> list[Path]:
    return [make_tree(root / f"layer{i:03}", {f"f{i}": str(i)}) for i in range(n)]


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[object]:
    calls: list[object] = []
    real = getattr(stack_module, name)

    def counting(*args: object) -> object:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(stack_module, name, counting)
    return calls


def test_a_base_of_many_layers_is_checked_once_not_on_every_mount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layers = _layers(tmp_path / "l", 20)
    resolves = _count_calls(monkeypatch, "_check_lower_uncached")
    layouts = _count_calls(monkeypatch, "_check_layout_uncached")
    backend = usable_backend(auto_backend())
    for _ in range(3):
        with OverlayStack(layers, workspace=tmp_path / "ws", backend=backend) as stack:
            assert {p.name for p in stack.merged.iterdir()} == {f"f{i}" for i in range(20)}
    assert len(resolves) == 20
    assert len(layouts) == 1


def test_a_checked_layer_replaced_by_a_symlink_to_proc_is_checked_again(
    tmp_path: Path,
) -> None:
    base = make_tree(tmp_path / "base", {"f": "x"})
    OverlayStack([base], workspace=tmp_path / "ws")
    os.rename(base, tmp_path / "moved")
    base.symlink_to("/proc/self")
    with pytest.raises(OverlayError, match="pseudo filesystem"):
        OverlayStack([base], workspace=tmp_path / "ws")


def test_a_checked_layer_that_is_gone_is_reported_missing(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"f": "x"})
    OverlayStack([base], workspace=tmp_path / "ws")
    os.rename(base, tmp_path / "moved")
    with pytest.raises(OverlayError, match="does not exist"):
        OverlayStack([base], workspace=tmp_path / "ws")


def test_a_checked_layout_is_checked_again_for_another_workspace(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"f": "x"})
    OverlayStack([base], workspace=tmp_path / "ws")
    with pytest.raises(OverlayError, match=r"workspace .* lies inside lower layer"):
        OverlayStack([base], workspace=base / "ws")


def test_closing_a_cleanly_unmounted_stack_asks_no_ismount(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = make_tree(tmp_path / "base", {"f": "x"})
    stack = OverlayStack([base], workspace=tmp_path / "ws", backend=usable_backend(auto_backend()))
    stack.mount()
    asked: list[object] = []

    def ismount(path: object) -> bool:
        asked.append(path)
        return False

    monkeypatch.setattr(os.path, "ismount", ismount)
    stack.close()
    assert asked == []
    assert list((tmp_path / "ws").iterdir()) == []


HOOKS_PROBE = """
import pytest

def test_plain(request):
    print("hooks:", request.config.pluginmanager.has_plugin("overlay-per-test-hooks"))
"""


def test_a_suite_that_does_not_use_the_plugin_gets_no_per_test_hooks(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Names remembered by earlier overlay_fixture calls in this process (other tests'
    # inline sessions) would ask for the hooks, rightly; this session made none.
    monkeypatch.setattr(fixture_hints, "_DIRECTORY_NAMES", {})
    pytester.makepyfile(test_plain=HOOKS_PROBE)
    result = pytester.runpytest("-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*hooks: False"])


def test_a_suite_that_uses_overlay_stack_gets_them(pytester: pytest.Pytester) -> None:
    make_tree(pytester.path / "base", {"f": "x"})
    pytester.makepyfile(
        test_plain=HOOKS_PROBE,
        test_mounts="""
        import pytest

        @pytest.mark.overlay("base")
        def test_mounts(overlay_stack):
            pass
        """,
    )
    result = pytester.runpytest("-s", "test_plain.py", "test_mounts.py")
    result.assert_outcomes(passed=2, skipped=0)
    result.stdout.fnmatch_lines(["*hooks: True"])


def test_a_stack_asked_for_at_run_time_still_reports_its_changes_on_failure(
    pytester: pytest.Pytester,
) -> None:
    make_tree(pytester.path / "base", {"f": "x"})
    pytester.makeini("[pytest]\noverlay_base = base\n")
    pytester.makepyfile(
        test_late="""
        def test_late(request):
            stack = request.getfixturevalue("overlay_stack")
            (stack.merged / "made").write_text("new")
            assert False
        """
    )
    result = pytester.runpytest(f"--basetemp={pytester.path / 'bt'}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*- overlay changes -*", "  A made"])
