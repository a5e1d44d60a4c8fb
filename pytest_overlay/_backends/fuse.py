"""fuse-overlayfs: the same union in user space, where the kernel mount is refused."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import final

from pytest_overlay._backends.probe import trial_mount
from pytest_overlay._errors import BackendUnavailable, OverlayError
from pytest_overlay._layers.changes import Change, diff_upper
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


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: the daemon must not outlive pytest.
    _syscalls.set_parent_death_signal(signal.SIGTERM)


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
        # fuse-overlayfs splits lowerdir on ':' with no escape, so each layer is reached
        # through a symlink with a plain name, and all paths are relative to the workspace.
        links = space.root / "lowers"
        shutil.rmtree(links, ignore_errors=True)
        links.mkdir()
        for index, lower in enumerate(lowers):
            (links / str(index)).symlink_to(lower)
        lowerdir = ":".join(f"lowers/{i}" for i in range(len(lowers)))
        options = [f"lowerdir={_escape_option(lowerdir)}", "upperdir=upper", "workdir=work"]
        command = [exe, "-f", "-o", ",".join(options), "merged"]
        log_path = space.root / "fuse-overlayfs.log"
        # In a user namespace the daemon needs the mount capability itself (ambient).
        with _namespace.mount_privileges(for_children=True), open(log_path, "wb") as log:
            daemon = subprocess.Popen(
                command,
                cwd=space.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                preexec_fn=_die_with_parent,
            )
        deadline = time.monotonic() + _MOUNT_TIMEOUT
        while not os.path.ismount(space.merged):
            if daemon.poll() is not None or time.monotonic() > deadline:
                daemon.kill()
                daemon.wait()
                lines = log_path.read_text(errors="replace").splitlines()
                # "lowers/N" in its messages is layer N of the list given below.
                message = "; ".join(line for line in lines if "argument ignored" not in line)
                layers = ", ".join(f"{i}: {p}" for i, p in enumerate(lowers))
                raise OverlayError(
                    f"fuse-overlayfs did not mount {space.merged} over lowers [{layers}]: "
                    f"{message or 'timed out'}"
                )
            time.sleep(0.0005)
        self._daemons[space.root] = daemon
        if self._in_host_namespace():
            # No private namespace drops this mount if pytest is killed: a watcher does.
            _reaper.watch(space.merged)

    def unmount(self, space: Workspace) -> bool:
        daemon = self._daemons.pop(space.root, None)
        clean = True
        if self._in_host_namespace():
            if not _mount.fusermount_unmount(space.merged):
                clean = False  # busy: detach it, as umount2(MNT_DETACH) would
                _mount.fusermount_unmount(space.merged, lazy=True)
            _reaper.forget(space.merged)
        else:
            with _namespace.mount_privileges():
                clean = _mount.unmount(space.merged)
        # Reap daemons of earlier lazily detached mounts whose last user has gone.
        self._lingering = [d for d in self._lingering if d.poll() is None]
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

    def changes(self, lowers: Sequence[Path], space: Workspace) -> list[Change]:
        return diff_upper(space.upper, lowers)


FUSE = FuseBackend()
