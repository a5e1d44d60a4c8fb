"""The watcher that unmounts host-namespace FUSE mounts a dead pytest left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from pytest_overlay._linux import reaper as _reaper

    _reaper.watch(Path(sys.argv[1]))
    _reaper.watch(Path(sys.argv[2]))
    _reaper.forget(Path(sys.argv[2]))  # unmounted cleanly: not the watcher's business
    os._exit(9)  # died without unmounting the first
    """
)


def test_watcher_unmounts_what_a_dead_process_left(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    fake = bin_dir / "fusermount3"
    fake.write_text(f'#!/bin/sh\nprintf "%s|" "$@" >> "{log}"\necho >> "{log}"\n')
    fake.chmod(0o755)
    left, cleaned = tmp_path / "with space\nand newline", tmp_path / "clean"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, os.fspath(left), os.fspath(cleaned)],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert child.returncode == 9
    deadline = time.monotonic() + 10
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)  # a second call, if the watcher wrongly made one, would land by now
    assert log.read_text() == f"-u|-z|{left}|\n"  # one call, the path byte for byte


def test_nothing_is_started_until_a_mount_is_watched() -> None:
    code = (
        "from pytest_overlay._linux import reaper; import sys; "
        "sys.exit(reaper._watcher is not None)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
