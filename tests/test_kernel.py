"""Kernel backends: refusing workspaces on filesystems that cannot hold an upper layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_overlay import BackendUnavailable, OverlayError, OverlayStack
from tests.helpers import make_tree


def test_workspace_on_overlayfs_is_refused_before_mounting(tmp_path: Path) -> None:
    base = make_tree(tmp_path / "base", {"f": "f"})
    try:
        outer = OverlayStack([base], workspace=tmp_path / "ws", backend="auto").mount()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    try:
        if outer.backend not in ("kernel", "userns"):
            pytest.skip("needs a kernel backend")
        inner = OverlayStack([base], workspace=outer.merged / "nested", backend=outer.backend)
        with pytest.raises(OverlayError, match=r"is on overlayfs .*--basetemp"):
            inner.mount()
        assert list((outer.merged / "nested").iterdir()) == []
    finally:
        outer.close()
