"""fuse-overlayfs: the same union in user space, where the kernel mount is refused."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import final

from pytest_overlay._backends.probe import trial_mount
from pytest_overlay._errors import BackendUnavailable, OverlayError, layer_list
from pytest_overlay._layers.changes import Change, diff_upper
from pytest_overlay._linux import busy as _busy
from pytest_overlay._linux import mount as _mount
from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux import reaper as _reaper
from pytest_overlay._linux import syscalls as _syscalls
from pytest_overlay._linux.workspace import Workspace

_MOUNT_TIMEOUT = 10.0
_INSTALL_HINT = (
    "install it: 'apt-get install fuse-overlayfs' (Debian, Ubuntu), "
    "'dnf install fuse-overlayfs' (Fedora)"
)


def _escape_option(text: str) -> str:
    # libfuse splits -o on commas; a backslash escapes one.
    return text.replace("\\", "\\\\").replace(",", "\\,")


def _die_with(parent: int) -> Callable[[], None]:
    def die_with_parent() -> None:
        # Runs in the child between fork and exec: the daemon must not outlive pytest.
        _syscalls.set_parent_death_signal(signal.SIGTERM)
        # A parent that died before the prctl above never sends the signal: the child
        # has been handed to another process already, so it must not start at all.
        if os.getppid() != parent:
            os._exit(1)

    return die_with_parent


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
        self._daemons: dict[Path, subprocess.Popen[bytes]] = {}
        self._lingering: list[subprocess.Popen[bytes]] = []
        self._probe: str | None = None

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
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            layers = ", ".join(f"{i}: {p}" for i, p in enumerate(lowers))
            raise OverlayError(
                f"fuse-overlayfs did not mount {space.merged} over lowers [{layers}]: "
                f"cannot open {exc.filename}: {exc.strerror}"
            ) from None
        lowerdir = ":".join(f"/proc/self/fd/{fd}" for fd in fds)
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
        # In a user namespace the daemon needs the mount capability itself (ambient).
        try:
            with _namespace.mount_privileges(for_children=True), open(log_path, "wb") as log:
                daemon = subprocess.Popen(
                    command,
                    cwd=space.root,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    preexec_fn=_die_with(os.getpid()),
                    # Out of pytest's process group: the SIGINT of a Ctrl-C must reach
                    # pytest alone, which then unmounts in order, not the daemon under a
                    # running test.
                    start_new_session=True,
                    pass_fds=fds,
                )
        finally:
            for fd in fds:
                os.close(fd)
        # The second way the daemon dies with pytest: the watcher terminates it.
        _reaper.keep(daemon.pid)
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
                lines = log_path.read_text(errors="replace").splitlines()
                message = "; ".join(line for line in lines if "argument ignored" not in line)
                for fd, lower in zip(fds, lowers, strict=True):
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

    def _reap(self, daemon: subprocess.Popen[bytes], clean: bool) -> None:
        if not clean:
            # Busy and detached: the daemon still serves the files held open. Keep it
            # (and its Popen) until it exits; it gets SIGTERM when pytest exits anyway.
            self._lingering.append(daemon)
            return
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

    def changes(self, lowers: Sequence[Path], space: Workspace) -> list[Change]:
        return diff_upper(space.upper, lowers)


FUSE = FuseBackend()
