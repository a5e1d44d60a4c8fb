"""The last step of every mounting backend's probe: one real mount in a scratch directory."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pytest_overlay._backends.protocol import Backend
from pytest_overlay._errors import BackendUnavailable, OverlayError
from pytest_overlay._linux import syscalls as _syscalls
from pytest_overlay._linux import tmpfs as _tmpfs
from pytest_overlay._linux.workspace import create_workspace, remove_workspace


def trial_mount(backend: Backend) -> str:
    """Mount and unmount an empty union with *backend*; return "" or why it failed."""
    scratch = Path(tempfile.mkdtemp(prefix="pytest-overlay-probe-")).resolve()
    on_tmpfs = False
    try:
        if _syscalls.statfs_type(scratch) in _syscalls.NO_UPPER_MAGICS:
            # Where the temporary directory cannot hold an upper layer (overlayfs, as /tmp
            # is in Docker), the fixtures' workspaces go on a private tmpfs by default:
            # probe on one too, or a working backend would be reported broken.
            # An empty union needs next to nothing.
            on_tmpfs = not _tmpfs.mount_tmpfs(
                scratch, backend.name, _tmpfs.FLOOR // 16, _tmpfs.MIN_INODES
            )
        (scratch / "lower").mkdir()
        space = create_workspace(scratch, scratch / "lower")
        backend.mount([scratch / "lower"], space)
        backend.unmount(space)
    except BackendUnavailable as exc:
        return str(exc)
    except OverlayError as exc:
        return f"a test mount failed: {exc}"
    finally:
        if on_tmpfs:
            _tmpfs.unmount_tmpfs(scratch)
        remove_workspace(scratch)
    return ""
