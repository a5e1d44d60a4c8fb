"""Kernel overlayfs: mounted by root, or by an ordinary user inside a user namespace."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from typing import final

from pytest_overlay._backends.probe import trial_mount
from pytest_overlay._errors import BackendUnavailable, OverlayError, layer_list
from pytest_overlay._layers.changes import Change, diff_upper
from pytest_overlay._linux import busy as _busy
from pytest_overlay._linux import mount as _mount
from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux import syscalls as _syscalls
from pytest_overlay._linux.workspace import Workspace

_DOCKER_HINT = "in Docker, run the container with --privileged or --cap-add SYS_ADMIN"


_WORKSPACE_HINT = (
    "run pytest with --basetemp on another filesystem, e.g. --basetemp=/dev/shm/pytest-$USER "
    "(tmpfs), or pass OverlayStack(workspace=...) there"
)


# Workspace directories (the parent of each stack's own directory) found fit to hold
# an upper layer, by (st_dev, st_ino): every test's upper sits in the same one, and a
# stat costs a fraction of the statfs through ctypes. A filesystem mounted there since
# shows another device.
_fit_parents: set[tuple[int, int]] = set()


def check_upper_filesystem(upper: Path) -> None:
    """Refuse, before mounting, an upper layer on a filesystem overlayfs cannot write to."""
    try:
        st = os.stat(upper.parent.parent)
    except OSError:
        st = None
    key = (st.st_dev, st.st_ino) if st is not None else None
    if key in _fit_parents:
        return
    kind = _syscalls.statfs_type(upper)
    if kind in _syscalls.NO_UPPER_MAGICS:
        what = (
            "overlayfs (as /tmp is in Docker)"
            if kind == _syscalls.OVERLAYFS_SUPER_MAGIC
            else "FUSE"
        )
        raise OverlayError(
            f"the workspace {upper.parent} is on {what}, which cannot hold an overlay upper "
            f"layer: {_WORKSPACE_HINT}"
        )
    # Same device as its parent: the upper is on the filesystem just checked.
    if key is not None and os.stat(upper).st_dev == key[0]:
        if len(_fit_parents) > 64:
            _fit_parents.clear()
        _fit_parents.add(key)


@final
class KernelBackend:
    """Kernel overlayfs through the mount syscalls (ctypes; no mount binary is run)."""

    deviations: frozenset[str] = frozenset()

    def __init__(self, name: str, rank: int, flags: Sequence[str], description: str) -> None:
        self.name = name
        self.rank = rank
        self.description = description
        self._flags = tuple(flags)
        self._probe: str | None = None

    def __repr__(self) -> str:
        return f"<KernelBackend {self.name}>"

    def _eligible(self) -> str:
        if not _syscalls.available():
            return "overlayfs needs Linux, and this is " + os.uname().sysname
        if self.name == "kernel" and os.geteuid() != 0:
            return (
                f"mounting needs root, and this process runs as uid {os.geteuid()}: run "
                "pytest as root, or use the userns backend"
            )
        if self.name == "userns" and os.geteuid() == 0:
            return "only for ordinary users; as root the kernel backend mounts directly"
        return ""

    def probe(self) -> str:
        if self.name == "userns" and not self._eligible():
            # Not cached: whether this process can still enter the namespace changes
            # when another plugin starts a thread, and the answer must say so then.
            return self._userns_state()
        if self._probe is None:
            self._probe = self._eligible() or trial_mount(self)
        return self._probe

    def _userns_state(self) -> str:
        state = _namespace.state()
        if state.mode is _namespace.Mode.USERNS:
            return ""
        if state.reason:
            return state.reason
        # Not entered yet: the forked probe (a single-threaded child, whatever threads
        # this process runs) mounts exactly as we would. Where the machine refuses user
        # namespaces, that is the answer, and no thread is to blame.
        failure = _namespace.cached_probe()
        if failure:
            return _namespace.userns_hint(failure)
        # The machine allows it, but only a single-threaded process can enter.
        return _namespace.threads_reason()

    def activate(self) -> None:
        # Root: a private mount namespace, so no mount outlives pytest. An ordinary
        # user: the user namespace that gives it the right to mount.
        _namespace.enter()

    def mount(self, lowers: Sequence[Path], space: Workspace) -> None:
        if self.name == "userns":
            state = _namespace.enter_user_namespace()
            if state.mode is not _namespace.Mode.USERNS:
                raise BackendUnavailable(state.reason)
        check_upper_filesystem(space.upper)
        try:
            with _namespace.mount_privileges():
                _mount.mount_overlay(
                    lowers, space.upper, space.work, space.merged, flags=self._flags
                )
        except OSError as exc:
            if exc.errno == errno.EPERM:
                raise BackendUnavailable(
                    "the kernel refused to mount overlayfs (EPERM): this process lacks "
                    f"CAP_SYS_ADMIN; {_DOCKER_HINT}"
                ) from exc
            hint = f"; {_WORKSPACE_HINT}" if "not supported as upperdir" in str(exc) else ""
            raise OverlayError(
                f"mounting overlayfs at {space.merged} over {layer_list(lowers)} failed: "
                f"{exc.strerror}{hint}"
            ) from exc

    def unmount(self, space: Workspace) -> bool:
        with _namespace.mount_privileges():
            return _mount.unmount(space.merged, on_busy=_busy.note_holders)

    def changes(self, lowers: Sequence[Path], space: Workspace) -> list[Change]:
        return diff_upper(space.upper, lowers)


# volatile: the upper layer is thrown away, so skip the sync on unmount (12 ms -> 0.2 ms).
ROOT_KERNEL = KernelBackend(
    "kernel", 10, ("volatile",), "kernel overlayfs, mounted by root in a private mount namespace"
)
# userxattr: an unprivileged mount cannot write trusted.* xattrs, and without it removing
# a lower directory later fails with EIO.
USERNS_KERNEL = KernelBackend(
    "userns",
    20,
    ("userxattr", "volatile"),
    "kernel overlayfs, mounted by an ordinary user in a user namespace",
)
