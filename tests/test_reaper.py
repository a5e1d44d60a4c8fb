"""The watcher that unmounts host-namespace FUSE mounts a dead pytest left behind."""

from __future__ import annotations

import os
import signal
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


def fake_fusermount(tmp_path: Path, body: str) -> tuple[dict[str, str], Path]:
    """An environment whose PATH starts with a fusermount3 that runs the sh *body*, and
    the file ``$FAKE_LOG`` the body writes its calls to (the watcher inherits both)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    fake = bin_dir / "fusermount3"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(log)}, log


def wait_for(log: Path) -> None:
    """Until the watcher has called the fake fusermount3 (10 s at most)."""
    deadline = time.monotonic() + 10
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_watcher_unmounts_what_a_dead_process_left(tmp_path: Path) -> None:
    env, log = fake_fusermount(tmp_path, 'printf "%s|" "$@" >> "$FAKE_LOG"\necho >> "$FAKE_LOG"')
    left, cleaned = tmp_path / "with space\nand newline", tmp_path / "clean"
    child = subprocess.run(
        [sys.executable, "-c", CHILD, os.fspath(left), os.fspath(cleaned)],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert child.returncode == 9
    wait_for(log)
    time.sleep(0.2)  # a second call, if the watcher wrongly made one, would land by now
    assert log.read_text() == f"-u|-z|{left}|\n"  # one call, the path byte for byte


def test_nothing_is_started_until_a_mount_is_watched() -> None:
    code = (
        "from pytest_overlay._linux import reaper; import sys; "
        "sys.exit(reaper._watcher is not None)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


DAEMONS = textwrap.dedent(
    """
    import os, subprocess, sys
    from pathlib import Path
    from pytest_overlay._linux import reaper as _reaper

    point = Path(sys.argv[1])
    _reaper.watch(point)  # before the "daemon" exists, as the fuse backend does
    kept = subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL, start_new_session=True)
    _reaper.keep(kept.pid)
    done = subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL, start_new_session=True)
    _reaper.keep(done.pid)
    done.kill()
    done.wait()
    _reaper.release(done.pid)
    # A pid whose start time does not match (as after the pid was reused): left alone.
    stranger = subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL, start_new_session=True)
    _reaper._send(b"k%d 1\\n" % stranger.pid)
    Path(sys.argv[2]).write_text(str(kept.pid))  # for the fake fusermount3
    print(kept.pid, stranger.pid, flush=True)
    os._exit(9)  # killed: neither the daemon nor the mount was taken down
    """
)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_watcher_ends_the_daemons_of_a_dead_process_before_unmounting(tmp_path: Path) -> None:
    # Records whether the daemon was still running (not gone, nor a zombie) when called.
    env, log = fake_fusermount(
        tmp_path,
        f's=$(cut -d" " -f3 /proc/$(cat {tmp_path}/kept)/stat 2>/dev/null)\n'
        'case "$s" in ""|Z) s=gone;; *) s=alive;; esac\necho "$s $*" >> "$FAKE_LOG"',
    )
    point = tmp_path / "merged"
    child = subprocess.Popen(
        [sys.executable, "-c", DAEMONS, os.fspath(point), os.fspath(tmp_path / "kept")],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = child.communicate()
    kept, stranger = map(int, out.split())
    assert child.returncode == 9
    try:
        wait_for(log)
        assert _gone(kept)
        assert not _gone(stranger)
        assert log.read_text() == f"gone -u -z {point}\n"
    finally:
        for pid in (kept, stranger):
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_killed_watcher_is_replaced(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import os, signal, sys
        from pathlib import Path
        from pytest_overlay._linux import reaper as _reaper

        _reaper.watch(Path("/first"))
        first = _reaper._watcher
        os.kill(first, signal.SIGKILL)
        os.waitpid(first, 0)
        _reaper.watch(Path(sys.argv[1]))  # no BrokenPipeError: a new watcher takes it
        assert _reaper._watcher != first
        os._exit(9)
        """
    )
    env, log = fake_fusermount(tmp_path, 'echo "$*" >> "$FAKE_LOG"')
    point = tmp_path / "second"
    child = subprocess.run(
        [sys.executable, "-c", code, os.fspath(point)],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
        check=False,
    )
    assert child.returncode == 9
    wait_for(log)
    assert log.read_text() == f"-u -z {point}\n"


LATE_MOUNT = textwrap.dedent(
    """
    import os, subprocess, sys
    from pathlib import Path
    from pytest_overlay._linux import reaper as _reaper

    space = Path(sys.argv[1])
    _reaper.watch(space / "merged")
    print(_reaper._watcher, flush=True)
    # What a daemon killed while its fusermount3 mounts leaves: a process that makes the
    # mount a moment later, after this process (and so the daemon) is gone.
    subprocess.Popen(
        ["sh", "-c", "sleep 0.5; fuse-overlayfs -o "
         "lowerdir=lower,upperdir=upper,workdir=work merged; touch done"],
        cwd=space, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    os._exit(9)
    """
)


def _host_fusermount() -> str | None:
    """Why a real fuse-overlayfs cannot mount through fusermount3 from here, or None."""
    import shutil

    if os.geteuid() == 0:
        return "root mounts without fusermount3"
    if not shutil.which("fuse-overlayfs") or not shutil.which("fusermount3"):
        return "fuse-overlayfs or fusermount3 is missing"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not usable"
    with open("/proc/self/uid_map") as f:
        if f.read().split() != ["0", "0", "4294967295"]:
            return "inside a user namespace, where fusermount3 cannot mount"
    return None


def _mounted(point: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == os.fspath(point) for line in f)


def test_watcher_unmounts_a_mount_that_appears_after_pytest_died(tmp_path: Path) -> None:
    # A daemon killed while its fusermount3 mounts leaves that fusermount3 running: the
    # mount appears after the daemon is gone, and after the watcher's first unmount. Seen
    # with a bare daemon SIGKILLed 0-12 ms after its start, then "fusermount3 -u -z" at
    # once: 6 to 16 of 60 left a dead mount (the cause of the crash campaign's dead
    # mounts without user namespaces).
    import pytest

    reason = _host_fusermount()
    if reason:
        pytest.skip(reason)
    space = tmp_path / "space"
    for name in ("lower", "upper", "work", "merged"):
        (space / name).mkdir(parents=True)
    child = subprocess.run(
        [sys.executable, "-c", LATE_MOUNT, os.fspath(space)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert child.returncode == 9, child.stderr
    watcher = int(child.stdout.split()[0])
    deadline = time.monotonic() + 30
    while not (_gone(watcher) and (space / "done").exists()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _gone(watcher)
    assert (space / "done").exists()
    try:
        assert not _mounted(space / "merged")
    finally:
        subprocess.run(["fusermount3", "-u", "-z", os.fspath(space / "merged")], check=False)
