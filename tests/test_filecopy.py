"""The threaded file copier under the copy backend (_linux/filecopy)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from pytest_overlay._backends.materialize import diff_baseline, materialize
from pytest_overlay._linux.filecopy import FileCopier


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_many_files_are_copied_in_threads_that_are_gone_afterwards(tmp_path: Path) -> None:
    base = tmp_path / "base"
    for d in range(5):
        (base / f"d{d}").mkdir(parents=True)
        for f in range(40):
            (base / f"d{d}" / f"f{f}").write_bytes(bytes([d, f]) * (f + 1))
    os.chmod(base / "d3" / "f7", 0o640)
    os.utime(base / "d2" / "f9", ns=(1_000_000_000, 3_000_000_000))
    os.chmod(base / "d1", 0o555)  # filled before its mode is set
    seen: set[str] = set()
    real_open = os.open

    def spying_open(path: str, flags: int, mode: int = 0o777, **kw: object) -> int:
        seen.add(threading.current_thread().name)
        return real_open(path, flags, mode)

    before = _threads()
    target = tmp_path / "copy"
    target.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "open", spying_open)
        baseline = materialize([base], target)
    assert any(name.startswith("pytest-overlay-copy") for name in seen)
    # No thread outlives the copy: a second thread makes unshare(CLONE_NEWUSER) fail.
    assert _threads() == before
    for d in range(5):
        for f in range(40):
            assert (target / f"d{d}" / f"f{f}").read_bytes() == bytes([d, f]) * (f + 1)
    assert stat.S_IMODE(os.stat(target / "d3" / "f7").st_mode) == 0o640
    assert os.stat(target / "d2" / "f9").st_mtime_ns == 3_000_000_000
    assert stat.S_IMODE(os.stat(target / "d1").st_mode) == 0o555
    assert os.stat(target / "d1").st_mtime_ns == os.stat(base / "d1").st_mtime_ns
    assert len(baseline.entries) == 205
    assert diff_baseline(target, baseline) == []
    os.chmod(target / "d1", 0o755)


def test_an_error_in_a_thread_is_raised_once_every_thread_has_stopped(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    dst = tmp_path / "dst"
    dst.mkdir()
    for i in range(100):
        (src / str(i)).write_text(str(i))
    (dst / "57").write_text("in the way")
    copier = FileCopier(workers=3)
    done: list[os.stat_result] = []
    before = _threads()
    for i in range(100):
        path = src / str(i)
        copier.copy(os.fspath(path), os.fspath(dst / str(i)), os.lstat(path), done.append)
    with pytest.raises(FileExistsError):
        copier.close()
    assert _threads() == before
    assert (dst / "57").read_text() == "in the way"


def test_a_small_copy_starts_no_thread(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_text("x")
    copier = FileCopier(workers=4)
    started = threading.active_count()
    copier.copy(os.fspath(src), os.fspath(tmp_path / "g"), os.lstat(src), lambda st: None)
    assert threading.active_count() == started
    copier.close()
    assert (tmp_path / "g").read_text() == "x"
