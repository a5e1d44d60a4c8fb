"""The trial mount behind every mounting backend's probe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_overlay import OverlayStack
from tests.helpers import make_tree


def test_a_temporary_directory_on_overlayfs_does_not_fail_the_kernel_probe(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In Docker, /tmp is on the container's overlayfs, which cannot hold an upper layer;
    # the fixtures then put their workspaces on a private tmpfs, and the probe must too.
    if os.geteuid() != 0:
        pytest.skip("mounting the stand-in for a container's root filesystem needs root")
    image = make_tree(tmp_path / "image", {"tmp": {}})
    with OverlayStack([image], backend="kernel") as container_root:
        tmp = container_root.merged / "tmp"
        monkeypatch.setenv("TMPDIR", os.fspath(tmp))
        make_tree(pytester.path / "base", {"f": "f"})
        pytester.makepyfile(
            """
            import pytest

            @pytest.mark.overlay("base")
            def test_write(overlay_stack):
                (overlay_stack.merged / "f").write_text("changed")
                assert overlay_stack.backend == "kernel"
            """
        )
        result = pytester.runpytest_subprocess(f"--basetemp={tmp / 'basetemp'}")
        result.assert_outcomes(passed=1)  # the test asserts the kernel backend
    assert (pytester.path / "base" / "f").read_text() == "f"
