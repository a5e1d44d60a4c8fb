"""Finding what keeps a directory busy, without a mount (the copy backend's case)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_overlay import OverlayError
from pytest_overlay._linux.busy import check_idle, holders


def test_idle_directory_passes(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    assert holders(tmp_path) == []
    check_idle(tmp_path, "take a snapshot of")


def test_open_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    with open(tmp_path / "f") as held:
        found = holders(tmp_path)
        assert any(f"pid {os.getpid()} " in h and f"{tmp_path}/f" in h for h in found), found
        with pytest.raises(OverlayError, match=r"cannot restore .*has open \(fd \d+\) .*/f"):
            check_idle(tmp_path, "restore")
        assert held.read() == "f"


def test_a_sibling_with_a_common_prefix_is_not_inside(tmp_path: Path) -> None:
    (tmp_path / "merged").mkdir()
    (tmp_path / "merged-other").write_text("x")
    with open(tmp_path / "merged-other"):
        assert holders(tmp_path / "merged") == []


def test_a_child_process_working_directory_is_named(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
    )
    try:
        found = holders(tmp_path)
        assert any(f"pid {child.pid} " in h and "working directory" in h for h in found), found
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()


def test_listing_is_limited(tmp_path: Path) -> None:
    files = [open(tmp_path / f"f{i}", "w") for i in range(8)]  # noqa: SIM115
    try:
        assert len(holders(tmp_path, limit=3)) == 3
    finally:
        for f in files:
            f.close()


def test_without_proc_nothing_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_listdir = os.listdir

    def no_proc(path: str) -> list[str]:
        if path == "/proc":
            raise FileNotFoundError(path)
        return real_listdir(path)

    monkeypatch.setattr(os, "listdir", no_proc)
    with open(tmp_path / "f", "w"):
        assert holders(tmp_path) == []
        check_idle(tmp_path, "take a snapshot of")
