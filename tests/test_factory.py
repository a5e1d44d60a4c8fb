"""OverlayStackFactory: construction, naming and end-of-session cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_overlay import BackendUnavailable
from pytest_overlay._plugin.factory import OverlayStackFactory
from tests.helpers import make_tree, overlay_mounts


def test_only_pytest_overlay_constructs_it(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="overlay_stack_factory"):
        OverlayStackFactory(tmp_path, "auto")


def test_mount_names_and_close_all(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"f": "f"})
    factory = OverlayStackFactory(tmp_path / "ws", "auto", _ispytest=True)
    try:
        stacks = [factory.mount([base], name="test_x[a/b c]") for _ in range(3)]
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    assert all(s.workspace.parent == tmp_path / "ws" for s in stacks)
    assert all(s.workspace.name.startswith("test_x_a_b_c_-") for s in stacks)
    merged = [str(s.merged) for s in stacks]
    assert set(merged) <= set(overlay_mounts())
    stacks[0].close()
    factory.close_all()
    assert not any(s.mounted for s in stacks)
    assert not set(merged) & set(overlay_mounts())
    assert list((tmp_path / "ws").iterdir()) == []


def test_base_inside_the_workspace_directory_is_refused(tmp_path: Path) -> None:
    from pytest_overlay import OverlayError

    factory = OverlayStackFactory(tmp_path / "ws", "copy", _ispytest=True)
    inside = make_tree(tmp_path / "ws" / "stack-old" / "upper", {"f": "f"})
    with pytest.raises(OverlayError, match="lies inside pytest-overlay's workspace directory"):
        factory.mount([inside])
    assert (inside / "f").read_text() == "f"
