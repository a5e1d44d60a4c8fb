"""fuse-overlayfs specifics: the daemon never outlives pytest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pytest_overlay._backends.fuse import FUSE
from tests.helpers import all_pids, make_tree, overlay_mounts, process_info

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _needs_fuse() -> None:
    reason = FUSE.probe()
    if reason:
        pytest.skip(f"fuse does not work here: {reason}")


def _fuse_children(parent: int) -> list[int]:
    """Pids of fuse-overlayfs processes started by *parent* (through its starter)."""
    infos = {pid: process_info(pid) for pid in all_pids()}
    ours = {parent} | {p for p, i in infos.items() if i and i[1] == parent}
    return [p for p, i in infos.items() if i and i[1] in ours and i[2] == "fuse-overlayfs"]


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if (info := process_info(pid)) and info[0] != "Z"]


def test_daemon_dies_with_a_killed_pytest(pytester: pytest.Pytester, tmp_path: Path) -> None:
    make_tree(pytester.path / "base", {"f": "f"})
    ready = tmp_path / "ready"
    pytester.makepyfile(
        f"""
        import pytest, time, pathlib

        @pytest.mark.overlay("base")
        def test_hang(overlay_stack):
            (overlay_stack.merged / "f").write_text("being written")
            pathlib.Path({os.fspath(ready)!r}).write_text(str(overlay_stack.workspace))
            time.sleep(120)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--overlay-backend=fuse"],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None, "the inner pytest ended early"
            assert time.monotonic() < deadline, "the inner test never started"
            time.sleep(0.05)
        workspace = Path(ready.read_text())
        daemons = _fuse_children(child.pid)
        assert daemons, "no fuse-overlayfs daemon found"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 10
    while _alive(daemons) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive(daemons) == []
    deadline = time.monotonic() + 10
    while str(workspace / "merged") in overlay_mounts() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert str(workspace / "merged") not in overlay_mounts()
    assert (pytester.path / "base" / "f").read_text() == "f"


def test_mount_failure_reports_the_daemon_message(tmp_path: Path) -> None:
    from pytest_overlay import OverlayError
    from pytest_overlay._linux.workspace import create_workspace

    space = create_workspace(tmp_path, tmp_path)
    expected = r"fuse-overlayfs did not mount .* over lowers \[0: .*missing\]: "
    with pytest.raises(OverlayError, match=expected):
        FUSE.mount([tmp_path / "missing"], space)
    assert not os.path.ismount(space.merged)
    # The daemon's own complaint, with its /proc/self/fd/N names replaced by the lowers.
    space.upper.rmdir()
    with pytest.raises(OverlayError, match=r"over lowers \[0: .*\]: .*upper") as info:
        FUSE.mount([tmp_path], space)
    assert "/proc/self/fd" not in str(info.value)
    assert not os.path.ismount(space.merged)


def test_a_daemon_whose_parent_died_before_it_asked_for_the_signal_never_starts() -> None:
    from pytest_overlay._backends.starter import _die_with

    # As if pytest had died between fork and prctl: the parent is no longer the one given.
    orphan = subprocess.run(["true"], preexec_fn=_die_with(os.getpid() + 1), check=False)
    assert orphan.returncode == 1
    assert subprocess.run(["true"], preexec_fn=_die_with(os.getpid()), check=False).returncode == 0


def test_the_daemon_is_started_without_forking_pytest() -> None:
    # A preexec_fn makes subprocess fork (and copy) pytest for every daemon.
    from pytest_overlay._backends.starter import spawn as _spawn

    argv, preexec = _spawn(["true"], os.getpid())
    assert preexec is None
    assert subprocess.run(argv, check=False).returncode == 0
    # As if pytest had died before setpriv asked for the signal: never starts.
    argv, _ = _spawn(["true"], os.getpid() + 1)
    assert subprocess.run(argv, check=False).returncode == 1


def test_daemon_runs_outside_pytests_process_group(tmp_path: Path) -> None:
    from pytest_overlay._linux.workspace import create_workspace

    base = make_tree(tmp_path / "base", {"f": "f"})
    space = create_workspace(tmp_path / "ws", base)
    FUSE.mount([base], space)
    try:
        daemon = FUSE._daemons[space.root]
        # A Ctrl-C goes to the terminal's foreground process group: pytest's alone.
        assert os.getpgid(daemon.pid) != os.getpgrp()
    finally:
        FUSE.unmount(space)


def test_host_mount_is_watched_before_the_daemon_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_overlay import OverlayError
    from pytest_overlay._backends import fuse, starter
    from pytest_overlay._linux import reaper as _reaper
    from pytest_overlay._linux.workspace import create_workspace

    events: list[str] = []

    def start(*args: object, **kwargs: object) -> None:
        events.append("daemon")
        raise OSError("stop here")

    monkeypatch.setattr(fuse.FuseBackend, "_in_host_namespace", lambda self: True)
    monkeypatch.setattr(_reaper, "watch", lambda point: events.append(f"watch {point}"))
    monkeypatch.setattr(starter.STARTER, "start", start)
    monkeypatch.setattr(fuse.FuseBackend, "_popen", start)
    space = create_workspace(tmp_path, tmp_path)
    with pytest.raises(OverlayError, match="stop here"):
        FUSE.mount([tmp_path], space)
    assert events == [f"watch {space.merged}", "daemon"]


def test_a_workspace_path_with_a_colon_mounts(pytester: pytest.Pytester, tmp_path: Path) -> None:
    # fuse-overlayfs resolves upperdir with realpath and then splits it on ':' (no escape):
    # neither a symlink nor /proc/self/fd/N hides a colon from it.
    make_tree(pytester.path / "base", {"f": "f"})
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.mark.overlay("base")
        def test_write(overlay_stack):
            (overlay_stack.merged / "f").write_text("changed")
            (overlay_stack.merged / "g").write_text("new")
            assert os.path.ismount(overlay_stack.merged)
            assert sorted(p.name for p in overlay_stack.upper.iterdir()) == ["f", "g"]
        """
    )
    basetemp = tmp_path / "a:b"
    homes = set(Path(tempfile.gettempdir()).glob("pytest-overlay-colon-*"))
    result = pytester.runpytest_subprocess("--overlay-backend=fuse", f"--basetemp={basetemp}")
    result.assert_outcomes(passed=1)
    # The colon-free directory the workspaces lived in is gone with the session.
    assert set(Path(tempfile.gettempdir()).glob("pytest-overlay-colon-*")) == homes
    assert (pytester.path / "base" / "f").read_text() == "f"
    assert sorted(os.listdir(pytester.path / "base")) == ["f"]
