"""fuse-overlayfs: the same union in user space, where the kernel mount is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import final

from pytest_overlay._backends.probe import trial_mount
from pytest_overlay._backends.starter import STARTER, Process
from pytest_overlay._backends.starter import spawn as _spawn
from pytest_overlay._errors import BackendUnavailable, OverlayError, layer_list
from pytest_overlay._layers.changes import Change, diff_upper
from pytest_overlay._linux import busy as _busy
from pytest_overlay._linux import mount as _mount
from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux import reaper as _reaper
from pytest_overlay._linux import syscalls as _syscalls
from pytest_overlay._linux.workspace import Workspace, create_workspace, remove_workspace

_MOUNT_TIMEOUT = 10.0
#: Ready mounts kept at most, one per base: a suite alternating between more bases than
#: this gets no help from the pool for the others, and no more daemons wait idle.
_POOL_SIZE = 4
_INSTALL_HINT = (
    "install it: 'apt-get install fuse-overlayfs' (Debian, Ubuntu), "
    "'dnf install fuse-overlayfs' (Fedora)"
)


def _escape_option(text: str) -> str:
    # libfuse splits -o on commas; a backslash escapes one.
    return text.replace("\\", "\\\\").replace(",", "\\,")


@dataclass(frozen=True)
class _Daemon:
    """A started fuse-overlayfs daemon and what it was started with."""

    process: Process
    space: Workspace
    #: The descriptor numbers its lowers had (its error messages name them).
    fds: tuple[int, ...]
    #: (st_dev, st_ino) of each lower it serves.
    ids: tuple[tuple[int, int], ...]
    #: Whether it mounts through fusermount3 in the host's mount namespace.
    host: bool


# A pooled mount is for the next mount of the same lowers in the same directory.
_Key = tuple[tuple[str, ...], str]


@final
class FuseBackend:
    name = "fuse"
    rank = 30
    description = "fuse-overlayfs, the user-space overlay filesystem"
    deviations: frozenset[str] = frozenset(
        {
            "no-dotdot-at-root",
            "wh-names-reserved",
            "dir-over-looping-symlink",
            "dir-rename-uncovers",
            "lower-hardlinks-shared",
            "failed-rename-copies-up",
            "special-file-chmod-fails",
        }
    )

    def __init__(self) -> None:
        self._daemons: dict[Path, Process] = {}
        self._lingering: list[Process] = []
        self._probe: str | None = None
        # The pool of ready mounts (see enable_pool): started while a test runs, taken
        # over by the next test over the same base.
        self._pooling = False
        self._pool: dict[_Key, _Daemon] = {}
        self._seen: set[_Key] = set()
        # Daemons of clean unmounts, exiting on their own: reaped later, not waited for.
        self._exiting: list[Process] = []

    def __repr__(self) -> str:
        return "<FuseBackend>"

    def _executable(self) -> str | None:
        return shutil.which("fuse-overlayfs")

    def _in_host_namespace(self) -> bool:
        return os.geteuid() != 0 and _namespace.state().mode is not _namespace.Mode.USERNS

    def probe(self) -> str:
        if self._probe is None:
            self._probe = self._check()
        return self._probe

    def _check(self) -> str:
        if not _syscalls.available():
            return "fuse-overlayfs needs Linux"
        if self._executable() is None:
            return f"fuse-overlayfs is not installed: {_INSTALL_HINT}"
        if not os.access("/dev/fuse", os.R_OK | os.W_OK):
            return (
                "/dev/fuse is missing or not readable and writable by this user: "
                "'chmod 0666 /dev/fuse' (the usual mode), or in Docker add --device /dev/fuse"
            )
        self.activate()
        if self._in_host_namespace() and shutil.which("fusermount3") is None:
            return "fusermount3 is missing: install the fuse3 package"
        return trial_mount(self)

    def activate(self) -> None:
        # An ordinary user mounts best from a user namespace of its own: fuse-overlayfs
        # then mounts directly (no setuid fusermount3, which cannot work inside someone
        # else's user namespace) and the mount dies with the namespace.
        # Root gets its private mount namespace, so no mount outlives pytest. Where the
        # user namespace cannot be entered (threads, a forbidding host, overlay_userns =
        # never), the mount goes through fusermount3 in the host namespace instead.
        _namespace.enter()

    def mount(self, lowers: Sequence[Path], space: Workspace) -> None:
        self._reap_exited()
        key = self._pool_key(lowers, space)
        if key is not None and self._adopt(key, lowers, space):
            self._refill(key, lowers, space)
            return
        self._wait_mounted(self._start(lowers, space), lowers, space)
        if key is not None:
            self._refill(key, lowers, space)

    def _start(self, lowers: Sequence[Path], space: Workspace) -> _Daemon:
        """Start a daemon that mounts the union on *space*; do not wait for the mount."""
        exe = self._executable()
        if exe is None:
            raise BackendUnavailable(f"fuse-overlayfs is not installed: {_INSTALL_HINT}")
        # fuse-overlayfs splits lowerdir on ':' with no escape, so each layer is handed to
        # the daemon as an open descriptor (/proc/self/fd/N, a plain name). No symlink to a
        # lower may lie in the workspace: merged/.. is the workspace, and a link in the
        # base climbing out of it (parent -> ..) would reach the real lower through one.
        fds: list[int] = []
        try:
            for lower in lowers:
                fds.append(os.open(lower, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            ids = tuple((st.st_dev, st.st_ino) for st in map(os.fstat, fds))
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            layers = ", ".join(f"{i}: {p}" for i, p in enumerate(lowers))
            raise OverlayError(
                f"fuse-overlayfs did not mount {space.merged} over lowers [{layers}]: "
                f"cannot open {exc.filename}: {exc.strerror}"
            ) from None
        # The starter hands the lowers to the daemon as descriptors 3, 4, ...
        starter = STARTER.usable()
        numbers = tuple(range(3, 3 + len(fds))) if starter else tuple(fds)
        lowerdir = ":".join(f"/proc/self/fd/{fd}" for fd in numbers)
        options = [f"lowerdir={_escape_option(lowerdir)}", "upperdir=upper", "workdir=work"]
        # Relative to the workspace like the other paths; merged= may put it elsewhere.
        mountpoint = os.path.relpath(space.merged, space.root)
        command = [exe, "-f", "-o", ",".join(options), mountpoint]
        log_path = space.root / "fuse-overlayfs.log"
        host = self._in_host_namespace()
        if host:
            # No private namespace drops this mount if pytest is killed, so the watcher
            # must know the mount point before the daemon can make it: a kill in the
            # middle of mounting leaves no dead mount either.
            _reaper.watch(space.merged)
        try:
            with open(log_path, "wb") as log:
                if starter:
                    # Tells the watcher, the second way the daemon dies with pytest.
                    daemon: Process = _started(command, space, log.fileno(), fds)
                else:
                    daemon = self._popen(command, space, log.fileno(), fds)
        finally:
            for fd in fds:
                os.close(fd)
        return _Daemon(daemon, space, numbers, ids, host)

    def _popen(
        self, command: list[str], space: Workspace, log: int, fds: list[int]
    ) -> subprocess.Popen[bytes]:
        """Start the daemon from pytest itself (no pidfds here: Linux < 5.3)."""
        argv, preexec = _spawn(command, os.getpid())
        # In a user namespace the daemon needs the mount capability itself (ambient).
        with _namespace.mount_privileges(for_children=True):
            daemon = subprocess.Popen(
                argv,
                cwd=space.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=preexec,
                # Out of pytest's process group: the SIGINT of a Ctrl-C must reach
                # pytest alone, which then unmounts in order, not the daemon under a
                # running test.
                start_new_session=True,
                pass_fds=fds,
            )
        # The second way the daemon dies with pytest: the watcher terminates it.
        _reaper.keep(daemon.pid)
        return daemon

    def _wait_mounted(self, started: _Daemon, lowers: Sequence[Path], space: Workspace) -> None:
        """Wait until *started* has mounted on *space* (now its workspace); raise if not."""
        daemon, host = started.process, started.host
        deadline = time.monotonic() + _MOUNT_TIMEOUT
        while not os.path.ismount(space.merged):
            if daemon.poll() is not None or time.monotonic() > deadline:
                daemon.kill()
                _reaper.release(daemon.pid)
                daemon.wait()
                if host:
                    # Killed after the mount appeared: take it down, or it stays dead.
                    _mount.fusermount_unmount(space.merged, lazy=True)
                    _reaper.forget(space.merged)
                log_path = space.root / "fuse-overlayfs.log"
                lines = log_path.read_text(errors="replace").splitlines()
                message = "; ".join(line for line in lines if "argument ignored" not in line)
                for fd, lower in zip(started.fds, lowers, strict=True):
                    message = message.replace(f"/proc/self/fd/{fd}", str(lower))
                named = {i for i, lower in enumerate(lowers) if str(lower) in message}
                layers = layer_list(lowers, also=named, numbered=True)
                raise OverlayError(
                    f"fuse-overlayfs did not mount {space.merged} over lowers {layers}: "
                    f"{message or 'timed out'}"
                )
            time.sleep(0.0005)
        self._daemons[space.root] = daemon

    def unmount(self, space: Workspace) -> bool:
        daemon = self._daemons.pop(space.root, None)
        clean = True
        if self._in_host_namespace():
            if not _mount.fusermount_unmount(space.merged):
                clean = False  # busy: detach it, as umount2(MNT_DETACH) would
                _busy.note_holders(space.merged)
                _mount.fusermount_unmount(space.merged, lazy=True)
            _reaper.forget(space.merged)
        else:
            with _namespace.mount_privileges():
                clean = _mount.unmount(space.merged, on_busy=_busy.note_holders)
        # Reap daemons of earlier lazily detached mounts whose last user has gone.
        for gone in [d for d in self._lingering if d.poll() is not None]:
            self._lingering.remove(gone)
            _reaper.release(gone.pid)
        if daemon is not None:
            self._reap(daemon, clean)
        return clean

    def _reap(self, daemon: Process, clean: bool) -> None:
        if not clean:
            # Busy and detached: the daemon still serves the files held open. Keep it
            # (and its Popen) until it exits; it gets SIGTERM when pytest exits anyway.
            self._lingering.append(daemon)
            return
        if self._pooling and daemon.poll() is None:
            # Unmounted: it exits by itself in a moment. Waiting for that is not the
            # test's business; the next mount or the end of the session reaps it.
            self._exiting.append(daemon)
            return
        self._wait_exit(daemon)

    def _wait_exit(self, daemon: Process) -> None:
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # Unmounted, yet still running: it has nothing left to serve.
            daemon.terminate()
            try:
                daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        # Only now: until it was reaped, pytest dying must still end it. The watcher
        # checks the start time, so a pid reused in between is safe from it.
        _reaper.release(daemon.pid)

    def _reap_exited(self) -> None:
        if self._exiting:
            for gone in [d for d in self._exiting if d.poll() is not None]:
                self._exiting.remove(gone)
                _reaper.release(gone.pid)

    # The pool. fuse-overlayfs takes 5 to 10 ms from start to mount, most of a fuse
    # test's cost. With the pool on, each mount of a base seen before also starts a
    # daemon for the next one, in a workspace of its own beside the test's; it mounts
    # while the test runs. The next mount over the same lowers takes it over by renaming
    # that workspace onto its own fresh, empty one: a mount follows its directory, and
    # the daemon works on descriptors and relative paths, so nothing else changes.

    def enable_pool(self) -> None:
        """Keep ready mounts for the next test (the plugin's session; see drain_pool)."""
        self._pooling = True

    def drain_pool(self) -> None:
        """Unmount every ready mount, reap every daemon; the pool is off again."""
        self._pooling = False
        while self._pool:
            self._discard(self._pool.popitem()[1])
        self._seen.clear()
        for daemon in self._exiting:
            self._wait_exit(daemon)
        self._exiting.clear()
        if not self._daemons and not self._lingering:
            # Reaping the starter also brings its daemons' CPU time into this process's
            # accounting. Daemons still serving (a detached busy mount, a stack outside
            # the session) keep it: they die with it.
            STARTER.stop()

    def _pool_key(self, lowers: Sequence[Path], space: Workspace) -> _Key | None:
        if not self._pooling or space.merged != space.root / "merged":
            return None
        return tuple(map(os.fspath, lowers)), os.fspath(space.root.parent)

    def _adopt(self, key: _Key, lowers: Sequence[Path], space: Workspace) -> bool:
        """Take over the ready mount for *key* as *space*, if there is a usable one."""
        ready = self._pool.pop(key, None)
        if ready is None:
            return False
        try:
            fresh = sorted(os.listdir(space.root)) == ["merged", "upper", "work"]
            usable = (
                fresh
                and not os.listdir(space.upper)
                and not os.listdir(space.work)
                and ready.process.poll() is None
                # The same directories as when it started (not replaced since), and an
                # upper root made from the same base root.
                and all(
                    (st.st_dev, st.st_ino) == ids
                    for st, ids in zip(map(os.stat, lowers), ready.ids, strict=True)
                )
                and _root_look(space.upper) == _root_look(ready.space.upper)
            )
        except OSError:
            usable = False
        if not usable:
            self._discard(ready)
            return False
        try:
            self._wait_mounted(ready, lowers, ready.space)
        except OverlayError:
            remove_workspace(ready.space.root)  # the cold mount will say what is wrong
            return False
        self._daemons.pop(ready.space.root)
        if ready.host:
            _reaper.watch(space.merged)  # before the move: a kill in between is covered
        for name in ("merged", "work", "upper"):
            os.rmdir(space.root / name)
        os.rename(ready.space.root, space.root)  # onto the now empty directory
        if ready.host:
            _reaper.forget(ready.space.merged)
        self._daemons[space.root] = ready.process
        return True

    def _refill(self, key: _Key, lowers: Sequence[Path], space: Workspace) -> None:
        """Start the ready mount for the next mount of *key*, from the second on."""
        if key not in self._seen:
            self._seen.add(key)
            return
        if key in self._pool:
            return
        if len(self._pool) >= _POOL_SIZE:
            self._discard(self._pool.pop(next(iter(self._pool))))
        spare = create_workspace(space.root.parent, lowers[0], prefix="pool")
        try:
            self._pool[key] = self._start(lowers, spare)
        except BaseException:
            remove_workspace(spare.root)
            raise

    def _discard(self, ready: _Daemon) -> None:
        """Take down a ready mount nobody will use, and its workspace."""
        try:
            self._wait_mounted(
                ready, [Path(f"/proc/self/fd/{fd}") for fd in ready.fds], ready.space
            )
        except OverlayError:
            pass  # it never mounted: already killed and reaped
        else:
            self.unmount(ready.space)
        remove_workspace(ready.space.root)

    def changes(self, lowers: Sequence[Path], space: Workspace) -> list[Change]:
        return diff_upper(space.upper, lowers)


def _started(command: list[str], space: Workspace, log: int, fds: list[int]) -> Process:
    try:
        return STARTER.start(command, os.fspath(space.root), log, fds)
    except OSError as exc:
        # The starter writes why posix_spawn failed to the daemon's log.
        said = (space.root / "fuse-overlayfs.log").read_text(errors="replace").strip()
        raise OverlayError(f"fuse-overlayfs did not mount {space.merged}: {said or exc}") from None


def _root_look(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_mode, st.st_uid, st.st_gid


FUSE = FuseBackend()
