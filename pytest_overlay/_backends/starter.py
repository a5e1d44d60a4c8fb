"""Starting fuse-overlayfs daemons bound to pytest's life, cheaply.

Every daemon must die with pytest, so it has to ask for a parent-death signal
(``PR_SET_PDEATHSIG``) between fork and exec, and must not start at all if its parent
died before it asked. From pytest itself that costs either a ``preexec_fn`` (subprocess
then forks the whole pytest process: 5.6 ms of CPU at 60 MB) or two extra programs,
``setpriv --pdeathsig`` and ``sh`` (2 ms of CPU per daemon here, more than the daemon's
own start and mount). So pytest starts one small helper that way, the *starter*
(``python -I -S``, a few MB), once per process; the starter forks and execs every
daemon, each asking for its parent-death signal on the way. The chain holds when pytest
dies in any way: the starter gets its signal and exits, and each daemon gets its own.
The reaper's watcher is told about the starter and every daemon as before.

pytest follows each daemon through a pidfd the starter opens before it could ever reap
the child, so a reused pid is never mistaken for it. The starter reaps exited daemons
itself; their CPU time reaches pytest's own accounting when pytest reaps the starter
at the end of the session (:meth:`Starter.stop`).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux import reaper as _reaper
from pytest_overlay._linux import syscalls as _syscalls


class Process(Protocol):
    """What the backend needs of a started daemon: a Popen or a :class:`Started`."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


def _die_with(parent: int) -> Callable[[], None]:
    def die_with_parent() -> None:
        # Runs in the child between fork and exec: the daemon must not outlive pytest.
        _syscalls.set_parent_death_signal(signal.SIGTERM)
        # A parent that died before the prctl above never sends the signal: the child
        # has been handed to another process already, so it must not start at all.
        if os.getppid() != parent:
            os._exit(1)

    return die_with_parent


# After setpriv has asked for the signal: run the program only if pytest (argument 0) is
# still the parent; a parent that died before the prctl never sends it.
_STILL_MY_PARENT = '[ "$PPID" = "$0" ] && exec "$@"'


def spawn(command: list[str], parent: int) -> tuple[list[str], Callable[[], None] | None]:
    """The command line that starts *command* bound to *parent*, and its preexec_fn.

    A preexec_fn makes subprocess fork pytest (a copy of its whole address space: 5.6 ms
    of CPU per daemon at 60 MB, 10 ms at 150 MB); without one it uses vfork (0.1 ms).
    ``setpriv --pdeathsig`` (util-linux) and ``sh`` do the same job as ``_die_with`` for
    about 2 ms. Where either is missing, the preexec_fn does it.
    """
    setpriv, sh = _helpers()
    if setpriv is None or sh is None:
        return command, _die_with(parent)
    wrapped = [setpriv, "--pdeathsig", "TERM", "--", sh, "-c", _STILL_MY_PARENT, str(parent)]
    return [*wrapped, *command], None


_found: list[tuple[str | None, str | None]] = []


def _helpers() -> tuple[str | None, str | None]:
    if not _found:
        _found.append((shutil.which("setpriv"), shutil.which("sh")))
    return _found[0]


# The starter's program (``python -I -S -c``, argument 1: pytest's pid). One
# SOCK_SEQPACKET message per daemon on its stdin: JSON [argv, cwd] with the descriptors
# [stderr, lower 0, lower 1, ...]; the daemon gets /dev/null as stdin and stdout, the
# first as stderr and the lowers as 3, 4, ... The answer: the pid in text, with a pidfd.
# posix_spawn (vfork, no copy of the starter): a fork would cost the starter's pages
# (1.5 ms here), as much as setpriv and sh. So the daemons get no parent-death signal of
# their own: the starter ends them when pytest goes, on its own parent-death signal or at
# the end of its input, whichever comes first, and the watcher ends them too.
_STARTER: Final = r"""
import fcntl, json, os, signal, socket, sys
parent = int(sys.argv[1])
live = set()
def reap():
    try:
        while True:
            pid = os.waitpid(-1, os.WNOHANG)[0]
            if not pid:
                return
            live.discard(pid)
    except ChildProcessError:
        pass
def end():
    # Unreaped children: their pids cannot have been reused.
    reap()
    for pid in live:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    os._exit(0)
def on_term(signum, frame):
    # The parent-death signal also comes when the thread of pytest that started us
    # ends and pytest lives on: only another parent means that pytest has gone.
    if os.getppid() != parent:
        end()
signal.signal(signal.SIGTERM, on_term)
on_term(0, None)
sock = socket.socket(fileno=0)
defaults = [signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM]  # as subprocess restores them
while True:
    reap()
    try:
        data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 600, socket.MSG_CMSG_CLOEXEC)
    except OSError:
        end()
    if not data:
        end()  # pytest has closed its end: it has exited, or stopped us (Starter.stop)
    argv, cwd = json.loads(data)
    # Above every number in play first, so that no dup2 overwrites one still needed.
    floor = max(*fds, 3 + len(fds))
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, floor) for fd in fds]
    for fd in fds:
        os.close(fd)
    actions = [(os.POSIX_SPAWN_DUP2, 1, 0)]
    actions += [(os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(moved, 2)]
    try:
        os.chdir(cwd)
        pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions,
                             setsid=True, setsigdef=defaults)
    except OSError as exc:
        os.write(moved[0], f"cannot start {argv[0]}: {exc}\n".encode())
        pid = None
    finally:
        for fd in moved:
            os.close(fd)
        os.chdir("/")  # a working directory in a workspace would keep its tmpfs busy
    if pid is None:
        try:
            socket.send_fds(sock, [b"0"], [])
        except OSError:
            end()
        continue
    live.add(pid)
    try:
        pidfd = os.pidfd_open(pid)
        socket.send_fds(sock, [str(pid).encode()], [pidfd])
        os.close(pidfd)
    except OSError:
        end()
"""


class Started:
    """A daemon that the starter forked, followed through its pidfd."""

    def __init__(self, pid: int, pidfd: int) -> None:
        self.pid = pid
        self._pidfd: int | None = pidfd

    def __repr__(self) -> str:
        return f"<Started pid={self.pid}>"

    def __del__(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def _exited(self, timeout: float | None) -> bool:
        if self._pidfd is None:
            return True
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        # A pidfd turns readable when the process exits, reaped by the starter or not.
        if not poller.poll(None if timeout is None else int(timeout * 1000)):
            return False
        self._close()
        return True

    def poll(self) -> int | None:
        """0 once it has exited (its exit status went to the starter), else None."""
        return 0 if self._exited(0) else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._exited(timeout):
            raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
        return 0

    def _signal(self, sig: signal.Signals) -> None:
        if self._pidfd is not None:
            # ESRCH: already reaped by the starter.
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)


def _pidfds_work() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):  # Linux < 5.3
        return False
    return hasattr(signal, "pidfd_send_signal") and hasattr(socket, "send_fds")


class Starter:
    """This process's starter, started on first use (again in a forked child)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._owner: int | None = None
        self._works: bool | None = None

    def usable(self) -> bool:
        """Whether daemons can be started through the starter here (pidfds: Linux 5.3)."""
        if self._works is None:
            self._works = _pidfds_work()
        return self._works

    def start(self, argv: Sequence[str], cwd: str, stderr: int, lowers: Sequence[int]) -> Started:
        """Start *argv* in *cwd*, bound to this process; tell the reaper's watcher."""
        request = json.dumps([list(argv), cwd]).encode()
        with self._lock:
            for attempt in (1, 2):
                sock = self._ensure()
                try:
                    socket.send_fds(sock, [request], [stderr, *lowers])
                    data, fds, _, _ = socket.recv_fds(sock, 64, 1, socket.MSG_CMSG_CLOEXEC)
                except OSError:
                    data, fds = b"", []
                if data == b"0":  # posix_spawn failed; the reason is in its stderr
                    raise OSError(f"cannot start {argv[0]}")
                if data and fds:
                    started = Started(int(data), fds[0])
                    # Before the next request, on which the starter may reap it: until
                    # then the pid still names this daemon.
                    _reaper.keep(started.pid)
                    return started
                for fd in fds:
                    os.close(fd)
                # Someone ended the starter (a stray signal): one more, then give up.
                self._drop()
                if attempt == 2:
                    raise OSError(
                        f"its starter process ended before it could start {argv[0]} "
                        "(killed by another process?)"
                    )
        raise AssertionError("unreachable")

    def _ensure(self) -> socket.socket:
        if self._socket is not None and self._owner == os.getpid():
            return self._socket
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        code = [sys.executable, "-I", "-S", "-c", _STARTER, str(os.getpid())]
        argv, preexec = spawn(code, os.getpid())
        try:
            # In a user namespace the daemons need the mount capabilities (ambient): the
            # starter keeps them for them.
            with _namespace.mount_privileges(for_children=True):
                process = subprocess.Popen(
                    argv,
                    stdin=theirs.fileno(),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=preexec,
                    # Out of pytest's process group: Ctrl-C reaches pytest alone.
                    start_new_session=True,
                )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        _reaper.keep(process.pid)
        if self._owner is None:
            # At exit, before the garbage collector would warn of a running child.
            atexit.register(self.stop)
        self._socket, self._process, self._owner = ours, process, os.getpid()
        return ours

    def _drop(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        if self._process is not None and self._owner == os.getpid():
            self._process.kill()
            self._process.wait()
            _reaper.release(self._process.pid)
        self._process = None

    def stop(self) -> None:
        """End the starter; it ends the daemons it still has, and exits."""
        with self._lock:
            if self._socket is None or self._owner != os.getpid():
                return
            self._socket.close()
            self._socket = None
            process, self._process = self._process, None
            if process is None:
                return
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _reaper.release(process.pid)


STARTER = Starter()
