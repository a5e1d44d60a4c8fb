"""Tree builders and fingerprints shared by the tests."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from pytest_overlay._backends.ladder import builtin_backends
from pytest_overlay._backends.protocol import Backend
from pytest_overlay._linux import namespace as _namespace

#: --overlay-backend values for plugin-level tests of teardown: the one this machine picks
#: (a mount, as root or an ordinary user), and the copy backend, which mounts nothing.
PLUGIN_BACKENDS = ("auto", "copy")

#: A tree spec: name -> bytes/str (file), dict (directory), or ("symlink", target).
Spec = Mapping[str, object]


def make_tree(root: Path, spec: Spec) -> Path:
    """Create *spec* under *root* and return *root*."""
    root.mkdir(parents=True, exist_ok=True)
    for name, value in spec.items():
        path = root / name
        if isinstance(value, dict):
            make_tree(path, value)
        elif isinstance(value, tuple) and value[0] == "symlink":
            path.symlink_to(value[1])
        elif isinstance(value, bytes):
            path.write_bytes(value)
        elif isinstance(value, str):
            path.write_text(value)
        else:
            raise TypeError(f"bad spec entry {name!r}: {value!r}")
    return root


def tree_digest(root: Path) -> dict[str, tuple[object, ...]]:
    """Fingerprint every entry under *root*: type, mode, size, mtime_ns, content digest."""
    result: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.relpath(path, root)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    content = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(path)
            else:
                content = ""
            result[rel] = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_uid, content)
    st = os.lstat(root)
    result["."] = (st.st_mode, st.st_mtime_ns, st.st_uid)
    return result


def overlay_mounts() -> list[str]:
    """Mount points of overlay filesystems visible to this process."""
    with open("/proc/self/mountinfo") as f:
        lines = f.read().splitlines()
    return [line.split()[4] for line in lines if " - overlay " in line or "fuse-overlayfs" in line]


def usable_backend(name: str) -> Backend:
    """The built-in backend *name*, or skip the test with the reason it cannot work here."""
    backend = next(b for b in builtin_backends() if b.name == name)
    reason = backend.probe()
    if reason:
        pytest.skip(f"{name} does not work here: {reason}")
    # What the plugin does before the first test that mounts: enter a user namespace now,
    # while no test has started threads.
    backend.activate()
    return backend


def auto_backend() -> str:
    """The backend ``--overlay-backend=auto`` picks on this machine for this user.

    Tests run as root, as an ordinary user with user namespaces, and as one without them
    (CI runs all three), and each picks a different rung; tests that check the ladder's
    choice ask this rather than assume one.
    """
    for backend in builtin_backends():
        if not backend.probe():
            return backend.name
    raise AssertionError("no backend works here, not even copy")


def tmpfs_workspaces_possible() -> bool:
    """Whether ``--overlay-workspace=auto`` can put workspaces on a private tmpfs here:
    the backend mounts, and the process has (or can get) a private mount namespace, which
    an ordinary user without user namespaces cannot."""
    chosen = auto_backend()
    if chosen == "copy":
        return False
    return os.geteuid() == 0 or chosen == "userns" or not _namespace.cached_probe()


def process_info(pid: int) -> tuple[str, int, str] | None:
    """(state letter, parent pid, command name) of process *pid*, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        return None
    return fields[0], int(fields[1]), comm


def all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def mount_points_anywhere() -> set[str]:
    """Every mount point any process on the machine sees (all namespaces)."""
    found: set[str] = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/mountinfo") as f:
                    found.update(line.split()[4] for line in f)
            except OSError:
                continue
    return found


def wait_until_written(run: subprocess.Popen[bytes], ready: Path, seconds: float = 60) -> None:
    """Wait for the inner pytest *run* to create *ready*; fail if it ends or times out."""
    deadline = time.monotonic() + seconds
    while not ready.exists():
        assert run.poll() is None, "the inner run ended before its test wrote"
        assert time.monotonic() < deadline
        time.sleep(0.05)
