"""Crash safety: whatever happens to a pytest run, the base survives and no mount leaks.

Each scenario runs a real pytest in a subprocess over a base, makes something go wrong,
and then checks, from the outside: the base hashes identical, no process on the machine
still sees a mount under that run's basetemp (every /proc/PID/mountinfo is searched, so
mounts in other namespaces count too), no fuse-overlayfs daemon of that run is left, and
the next run over the same base passes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_overlay._backends.ladder import builtin_backends
from tests.helpers import all_pids, make_tree, process_info, tree_digest, usable_backend

pytest_plugins = ["pytester"]

_TAG = "PYTEST_OVERLAY_CRASH_RUN"
BACKENDS = [b.name for b in builtin_backends() if b.name in ("kernel", "userns", "fuse", "copy")]


def _mounts_under(root: Path) -> list[str]:
    """Mount points below *root* in the mount table of any process on the machine."""
    found = set()
    prefix = os.fspath(root)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                for line in f:
                    point = line.split()[4].replace("\\040", " ")
                    if point.startswith(prefix):
                        found.add(point)
        except OSError:
            continue
    return sorted(found)


def _processes_under(root: Path) -> list[int]:
    """Processes (other than zombies) whose cwd lies below *root*."""
    found = []
    for pid in all_pids():
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        info = process_info(pid)
        if cwd.startswith(os.fspath(root)) and info and info[0] != "Z":
            found.append(pid)
    return found


def _wait_until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


class Run:
    """A pytest project over one base, run in subprocesses with a known basetemp."""

    def __init__(self, pytester: pytest.Pytester, backend: str) -> None:
        self.pytester = pytester
        self.backend = backend
        self.base = make_tree(
            pytester.path / "base",
            {"data.bin": os.urandom(4096), "dir": {"f.txt": "f\n", "sub": {"g": "g"}}},
        )
        self.before = tree_digest(self.base)
        self.basetemp = pytester.path / "bt"
        self.ready = pytester.path / "ready"
        self.extra: list[str] = []
        # Every process of this run inherits the tag, wherever it moves: a daemon left in
        # a dead pytest's namespace has its cwd there, beyond any path seen from here.
        self.env = {**os.environ, _TAG: f"{os.getpid()}-{id(self)}-{time.monotonic_ns()}"}

    def command(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            f"--basetemp={self.basetemp}",
            f"--overlay-backend={self.backend}",
            *self.extra,
            *extra,
        ]

    def write_test(self, body: str) -> None:
        self.pytester.makepyfile(
            test_scenario="import os, pathlib, shutil, signal, subprocess, time, pytest\n"
            f"READY = pathlib.Path({os.fspath(self.ready)!r})\n\n"
            "@pytest.mark.overlay('base')\n"
            "def test_scenario(overlay_stack):\n"
            "    m = overlay_stack.merged\n"
            "    shutil.rmtree(m / 'dir' / 'sub')\n"
            "    (m / 'data.bin').write_bytes(b'overwritten')\n" + body
        )

    def run(self, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(),
            cwd=self.pytester.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, **popen: object) -> subprocess.Popen[bytes]:
        child: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            self.command(),
            cwd=self.pytester.path,
            env=self.env,
            stdout=popen.pop("stdout", subprocess.DEVNULL),
            stderr=subprocess.DEVNULL,
            **popen,
        )
        _wait_until(lambda: self.ready.exists() or child.poll() is not None, 60)
        assert self.ready.exists(), "the inner test never got going"
        return child

    def check_clean(self) -> None:
        _wait_until(lambda: not _mounts_under(self.basetemp) and not self._daemons())
        assert _mounts_under(self.basetemp) == []
        assert self._daemons() == []
        assert tree_digest(self.base) == self.before

    def _daemons(self) -> list[int]:
        """fuse-overlayfs processes of this run still alive, in whatever namespace."""
        tag = f"{_TAG}={self.env[_TAG]}".encode()
        found = []
        for pid in all_pids():
            if _comm(pid) != "fuse-overlayfs":
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    tagged = tag in f.read().split(b"\0")
            except OSError:
                continue
            info = process_info(pid)
            if tagged and info and info[0] != "Z":
                found.append(pid)
        return found

    def check_next_run_passes(self) -> None:
        self.ready.unlink(missing_ok=True)
        self.write_test("    assert not (m / 'dir' / 'sub').exists()\n")
        result = self.run()
        assert result.returncode == 0, result.stdout + result.stderr
        self.check_clean()


def _comm(pid: int) -> str:
    info = process_info(pid)
    return info[2] if info else ""


@pytest.fixture(params=BACKENDS)
def run(request: pytest.FixtureRequest, pytester: pytest.Pytester) -> Run:
    return Run(pytester, usable_backend(str(request.param)).name)


def test_failing_test(run: Run) -> None:
    run.write_test("    raise AssertionError('boom')\n")
    result = run.run()
    assert result.returncode == 1
    assert "boom" in result.stdout
    run.check_clean()
    run.check_next_run_passes()


def test_keyboard_interrupt_mid_test(run: Run) -> None:
    run.write_test("    raise KeyboardInterrupt\n")
    result = run.run()
    assert result.returncode == pytest.ExitCode.INTERRUPTED
    run.check_clean()
    run.check_next_run_passes()


def _default_sigint() -> None:
    # A background job of a non-interactive shell (how CI may start us) inherits SIGINT
    # ignored, and Python then installs no KeyboardInterrupt handler.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_mid_test_ends_as_interrupted(run: Run) -> None:
    # Busy in the union when the signal comes, as a test usually is.
    run.write_test(
        "    READY.write_text('go')\n"
        "    for i in range(10**6):\n"
        "        (m / 'dir' / 'f.txt').read_text()\n"
        "        (m / f'n{i % 10}').write_text('x')\n"
    )
    # In a process group of its own, as a shell job: Ctrl-C signals the whole group.
    child = run.start(start_new_session=True, preexec_fn=_default_sigint, stdout=subprocess.PIPE)
    os.killpg(child.pid, signal.SIGINT)
    out, _ = child.communicate(timeout=60)
    text = out.decode(errors="replace")
    assert child.returncode == pytest.ExitCode.INTERRUPTED, text
    assert "KeyboardInterrupt" in text
    assert "FAILED" not in text, text
    assert "ERROR" not in text, text
    run.check_clean()
    run.check_next_run_passes()


def test_os_exit_mid_test(run: Run) -> None:
    run.write_test("    os._exit(3)\n")
    assert run.run().returncode == 3
    run.check_clean()
    run.check_next_run_passes()


def test_sigkill_mid_write(run: Run) -> None:
    run.write_test(
        "    with open(m / 'big', 'wb') as f:\n"
        "        READY.write_text('go')\n"
        "        while True:\n"
        "            f.write(b'x' * 65536)\n"
        "            f.seek(0)\n"
    )
    child = run.start()
    child.send_signal(signal.SIGKILL)
    child.wait()
    run.check_clean()
    run.check_next_run_passes()


def test_files_held_open_and_cwd_inside_at_teardown(run: Run) -> None:
    run.write_test(
        "    global HELD\n    HELD = open(m / 'dir' / 'f.txt')\n    os.chdir(m / 'dir')\n"
    )
    result = run.run()
    assert result.returncode == 0, result.stdout + result.stderr
    run.check_clean()
    run.check_next_run_passes()


def test_process_left_running_inside_merged(run: Run) -> None:
    run.write_test("    subprocess.Popen(['sleep', '30'], cwd=m, start_new_session=True)\n")
    result = run.run()
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        # The straggler keeps its (detached) view, but no mount table lists the union.
        run.check_clean()
    finally:
        for pid in _processes_under(run.basetemp):
            if _comm(pid) == "sleep":
                os.kill(pid, signal.SIGKILL)
    run.check_next_run_passes()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_upper_runs_out_of_space(run: Run) -> None:
    from pytest_overlay._linux import syscalls as _syscalls

    small = run.pytester.path / "small"
    small.mkdir()
    _syscalls.mount("tmpfs", small, "tmpfs", 0, "size=1m")
    run.basetemp = small / "bt"
    # Upper layers on that small disk, not on pytest-overlay's own tmpfs.
    run.extra = ["--overlay-workspace=disk"]
    try:
        run.write_test(
            "    with pytest.raises(OSError) as info:\n"
            "        (m / 'huge').write_bytes(b'x' * (4 << 20))\n"
            "    assert info.value.errno == 28  # ENOSPC\n"
        )
        result = run.run()
        assert result.returncode == 0, result.stdout + result.stderr
        run.check_clean()
        # Teardown removed the full upper layer: the small filesystem is empty again.
        assert os.statvfs(small).f_bfree == os.statvfs(small).f_blocks
    finally:
        _syscalls.umount(small, _syscalls.MNT_DETACH)
