"""The last step of every mounting backend's probe: one real mount in a scratch directory."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pytest_overlay._backends import Backend
from pytest_overlay._errors import BackendUnavailable, OverlayError
from pytest_overlay._workspace import create_workspace, remove_workspace


def trial_mount(backend: Backend) -> str:
    """Mount and unmount an empty union with *backend*; return "" or why it failed."""
    scratch = Path(tempfile.mkdtemp(prefix="pytest-overlay-probe-")).resolve()
    try:
        (scratch / "lower").mkdir()
        space = create_workspace(scratch, scratch / "lower")
        backend.mount([scratch / "lower"], space)
        backend.unmount(space)
    except BackendUnavailable as exc:
        return str(exc)
    except OverlayError as exc:
        return f"a test mount failed: {exc}"
    finally:
        remove_workspace(scratch)
    return ""
