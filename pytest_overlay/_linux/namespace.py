"""Moving this process into its own mount namespace (root) or user namespace (not root).

Both are process-wide and done at most once. Root gets a private mount namespace so the
kernel drops every mount with the last process in it, even after SIGKILL. An ordinary
user gets a user namespace in which it may mount overlayfs (kernel >= 5.11, ``userxattr``),
with its own uid mapped to itself and the effective capabilities dropped except around
mount calls, so ``os.getuid()`` and permission errors stay what tests expect.
"""

from __future__ import annotations

import contextlib
import enum
import os
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pytest_overlay._linux import mount as _mount
from pytest_overlay._linux import syscalls as _syscalls
from pytest_overlay._linux.inherit import INHERIT_ENV
from pytest_overlay._linux.workspace import remove_workspace


class Mode(enum.Enum):
    #: Nothing done (yet): mounts, if any, go to the namespace pytest was started in.
    NONE = "none"
    #: Root, in a private mount namespace of its own.
    PRIVATE = "private"
    #: Not root, in a user + mount namespace with overlay mount rights.
    USERNS = "userns"


@dataclass(frozen=True)
class State:
    mode: Mode
    #: Why the preferred namespace could not be entered ("" when it was).
    reason: str = ""


_state = State(Mode.NONE)

_MOUNT_CAPS = (
    1 << _syscalls.CAP_SYS_ADMIN
    | 1 << _syscalls.CAP_DAC_OVERRIDE
    | 1 << _syscalls.CAP_DAC_READ_SEARCH
    | 1 << _syscalls.CAP_FOWNER
)


def state() -> State:
    return _state


def thread_count() -> int:
    """Threads in this process, as the kernel counts them for unshare(CLONE_NEWUSER)."""
    # threading.enumerate() misses threads started from C, such as execnet's I/O thread
    # in pytest-xdist workers.
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


#: In every reason that blames threads (see :func:`threads_reason`).
SINGLE_THREADED = "the kernel lets only a single-threaded process enter a user namespace"


def threads_reason() -> str:
    """Why this process can no longer enter a user namespace because of its threads, or ""."""
    threads = thread_count()
    if threads <= 1:
        return ""
    # Python threads have names that point at the plugin that started them (e.g.
    # pytest-rerunfailures' "run_server"); threads started from C show only in the count.
    names = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    started = f" ({', '.join(names)})" if names else ""
    return (
        f"the process already runs {threads} threads{started}, started by another plugin "
        f"or by pytest-xdist, and {SINGLE_THREADED}: set 'overlay_userns = start' to enter "
        "it at start-up, before other plugins start threads, or run pytest as root"
    )


def forbid_user_namespace(reason: str) -> None:
    """Never enter a user namespace in this process (``overlay_userns = never``)."""
    global _state
    if _state.mode is Mode.NONE:
        _state = State(Mode.NONE, reason)


def _make_root_private() -> None:
    # Without this, mounts made here would propagate back to the parent namespace.
    _syscalls.mount("none", "/", None, _syscalls.MS_REC | _syscalls.MS_PRIVATE, None)


def enter_private_mount_namespace() -> State:
    """As root: unshare the mount namespace so no mount can outlive this process."""
    global _state
    if _state.mode is not Mode.NONE:
        return _state
    try:
        _syscalls.unshare(_syscalls.CLONE_NEWNS)
        _make_root_private()
    except OSError as exc:
        _state = State(
            Mode.NONE,
            f"cannot create a private mount namespace ({exc.strerror}); in Docker, run the "
            "container with --privileged or --cap-add SYS_ADMIN",
        )
    else:
        _state = State(Mode.PRIVATE)
    return _state


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _unshare_user() -> None:
    uid, gid = os.geteuid(), os.getegid()
    _syscalls.unshare(_syscalls.CLONE_NEWUSER | _syscalls.CLONE_NEWNS)
    # setgroups must be denied before an unprivileged process may write gid_map.
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    _make_root_private()


def _probe_mount() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="pytest-overlay-probe-")).resolve()
    lower, upper, work, merged = (scratch / n for n in ("lower", "upper", "work", "merged"))
    on_tmpfs = False
    try:
        if _syscalls.statfs_type(scratch) in _syscalls.NO_UPPER_MAGICS:
            # Docker's /tmp cannot hold an upper layer; the workspaces would go on a
            # private tmpfs there, so the probe does too (this child's namespace).
            _syscalls.mount("tmpfs", scratch, "tmpfs", 0, "mode=0700")
            on_tmpfs = True
        for path in (lower, upper, work, merged):
            path.mkdir()
        _mount.mount_overlay([lower], upper, work, merged, flags=("userxattr",))
        _syscalls.umount(merged)
    finally:
        if on_tmpfs:
            _syscalls.umount(scratch)
        remove_workspace(scratch)


def probe_user_namespace() -> str:
    """Try the whole userns recipe in a forked child; return "" or why it failed.

    A failed uid_map write after unshare (AppArmor's restriction on Ubuntu >= 23.10)
    would leave this process stuck as the overflow uid, so the real process only follows
    once a child has done it all, including one overlay mount.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
        os.close(read_fd)
        message = ""
        try:
            _unshare_user()
            _probe_mount()
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        os.write(write_fd, message.encode())
        os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 4096):
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    message = b"".join(chunks).decode()
    if not message and os.waitstatus_to_exitcode(status) != 0:
        message = f"the probe process died with status {status}"
    return message


_probe_result: str | None = None


def cached_probe() -> str:
    """:func:`probe_user_namespace`, run at most once per process."""
    global _probe_result
    if _probe_result is None:
        _probe_result = probe_user_namespace()
    return _probe_result


def _sysctl(name: str) -> str | None:
    try:
        with open(f"/proc/sys/{name.replace('.', '/')}") as f:
            return f.read().strip()
    except OSError:
        return None


def userns_hint(detail: str, *, in_container: bool | None = None) -> str:
    """Why the userns rung failed (*detail*) and every way to enable it that applies here."""
    hints = []
    if _sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
        hints.append(
            "on Ubuntu >= 23.10 allow it with "
            "'sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0'"
        )
    if _sysctl("kernel.unprivileged_userns_clone") == "0":
        hints.append("allow it with 'sudo sysctl kernel.unprivileged_userns_clone=1'")
    if _sysctl("user.max_user_namespaces") == "0":
        hints.append("allow it with 'sudo sysctl user.max_user_namespaces=15000'")
    if in_container is None:
        in_container = os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
    if in_container:
        hints.append(
            "in Docker or Podman, whose default seccomp profile forbids it, run the "
            "container with '--security-opt seccomp=unconfined' or '--privileged'"
        )
    hints.append("or run pytest as root")
    return f"cannot mount overlayfs in an unprivileged user namespace ({detail}); " + "; ".join(
        hints
    )


def enter_user_namespace() -> State:
    """As an ordinary user: enter a user namespace with overlay mount rights, if possible."""
    global _state
    if _state.mode is not Mode.NONE or _state.reason:
        return _state
    # The machine's answer first (the forked probe is single-threaded whatever this
    # process runs): where user namespaces are refused, no thread is to blame.
    failure = cached_probe()
    if failure:
        _state = State(Mode.NONE, userns_hint(failure))
        return _state
    busy = threads_reason()
    if busy:
        _state = State(Mode.NONE, busy)
        return _state
    _unshare_user()
    # Full capabilities in the new namespace would make every DAC check pass; keep them
    # permitted but not effective, and raise them only around mount calls.
    _, permitted, _ = _syscalls.get_capabilities()
    _syscalls.set_capabilities(0, permitted, 0)
    _state = State(Mode.USERNS)
    return _state


def _set_ambient(caps: int) -> None:
    _syscalls.prctl(_syscalls.PR_CAP_AMBIENT, _syscalls.PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(64):
        if caps >> cap & 1:
            _syscalls.prctl(_syscalls.PR_CAP_AMBIENT, _syscalls.PR_CAP_AMBIENT_RAISE, cap)


@contextlib.contextmanager
def mount_privileges(*, for_children: bool = False) -> Iterator[None]:
    """Make the mount capabilities effective for the duration of the block (userns only).

    With *for_children*, programs started inside the block get them too (as ambient
    capabilities), so a helper such as fuse-overlayfs can mount in our namespace.
    """
    if _state.mode is not Mode.USERNS:
        yield
        return
    effective, permitted, inheritable = _syscalls.get_capabilities()
    raised = _MOUNT_CAPS & permitted
    _syscalls.set_capabilities(effective | raised, permitted, inheritable | raised)
    if for_children:
        _set_ambient(raised)
    try:
        yield
    finally:
        if for_children:
            _set_ambient(0)
        _syscalls.set_capabilities(effective, permitted, inheritable)


def prepare_children() -> None:
    """Let processes started from now on (pytest-xdist workers) mount in this namespace.

    A worker is a new program: for a uid other than 0 the kernel clears its capabilities
    at exec, unless they are ambient. The worker drops them again at start-up
    (:func:`adopt_inherited`), so the tests' own subprocesses never get them.
    """
    if _state.mode is not Mode.USERNS:
        return
    _, permitted, inheritable = _syscalls.get_capabilities()
    raised = _MOUNT_CAPS & permitted
    _syscalls.set_capabilities(0, permitted, inheritable | raised)
    _set_ambient(raised)
    os.environ[INHERIT_ENV] = str(os.getpid())


def adopt_inherited() -> State:
    """In a pytest-xdist worker: take over the user namespace the controller entered."""
    global _state
    if _state.mode is not Mode.NONE or not os.environ.get(INHERIT_ENV) or os.geteuid() == 0:
        return _state
    _, permitted, _ = _syscalls.get_capabilities()
    if not permitted & (1 << _syscalls.CAP_SYS_ADMIN):
        return _state
    _set_ambient(0)
    _syscalls.set_capabilities(0, permitted, 0)
    _state = State(Mode.USERNS)
    return _state


def separate_mount_namespace() -> None:
    """In a process that took over an inherited user namespace (a pytest-xdist worker):
    a mount namespace of its own, so that its mounts do not show in its siblings'.

    Only the mount namespace: a process with a second thread can still unshare that
    (the calling thread moves, and the tests run on it), unlike a user namespace.
    """
    if _state.mode is not Mode.USERNS:
        return
    with mount_privileges():
        _syscalls.unshare(_syscalls.CLONE_NEWNS)
        _make_root_private()


def enter() -> State:
    """Enter the namespace that suits this process's privileges."""
    if os.geteuid() == 0:
        return enter_private_mount_namespace()
    return enter_user_namespace()
