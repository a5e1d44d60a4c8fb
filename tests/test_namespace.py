"""Entering namespaces: thread counting and the forked probe."""

from __future__ import annotations

import os
import threading

import pytest

from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux import syscalls as _syscalls


def test_thread_count_sees_new_threads() -> None:
    before = _namespace.thread_count()
    release = threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()
    try:
        assert _namespace.thread_count() == before + 1
    finally:
        release.set()
        worker.join()


def test_state_matches_privileges() -> None:
    if os.geteuid() == 0:
        # Entering is idempotent (the plugin did it already if a collected test mounts).
        state = _namespace.enter_private_mount_namespace()
        assert state.mode is _namespace.Mode.PRIVATE
    else:
        # Entering is idempotent: either we are in the user namespace or we know why not.
        state = _namespace.enter_user_namespace()
        assert state.mode is _namespace.Mode.USERNS or state.reason


def test_probe_runs_in_a_child_and_leaves_us_alone() -> None:
    uid = os.getuid()
    ns_before = os.readlink("/proc/self/ns/user")
    result = _namespace.probe_user_namespace()
    assert isinstance(result, str)
    assert os.getuid() == uid
    assert os.readlink("/proc/self/ns/user") == ns_before


@pytest.mark.skipif(os.geteuid() == 0, reason="userns mode is for ordinary users")
def test_userns_keeps_uid_and_real_permission_errors(tmp_path: os.PathLike[str]) -> None:
    if _namespace.state().mode is not _namespace.Mode.USERNS:
        pytest.skip(_namespace.state().reason or "not in a user namespace")
    target = os.path.join(tmp_path, "private")
    os.mkdir(target, 0o000)
    try:
        with pytest.raises(PermissionError):
            os.listdir(target)
    finally:
        os.chmod(target, 0o700)
    effective, permitted, _ = _syscalls.get_capabilities()
    assert effective == 0
    assert permitted != 0


def test_userns_hint_names_the_fixes_that_apply() -> None:
    detail = "PermissionError: [Errno 1] unshare: Operation not permitted"
    in_docker = _namespace.userns_hint(detail, in_container=True)
    assert in_docker.startswith(
        f"cannot mount overlayfs in an unprivileged user namespace ({detail})"
    )
    assert "--security-opt seccomp=unconfined" in in_docker
    assert in_docker.endswith("; or run pytest as root")
    assert "seccomp" not in _namespace.userns_hint(detail, in_container=False)
