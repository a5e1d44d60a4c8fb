"""Kernel overlay mounts for tests that compare with the real thing, or skip saying why."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import pytest

from pytest_overlay._errors import BackendUnavailable
from pytest_overlay.layers import Layer
from pytest_overlay.stack import OverlayStack
from pytest_overlay.testing import OverlayStackSystem

#: The backends that are kernel overlayfs: as root, and in a user namespace with userxattr.
KERNEL_BACKENDS = ("kernel", "userns")


def fast_tmp() -> str | None:
    """A tmpfs for throwaway layers when there is one (rmdir on ext4 costs ~2 ms here)."""
    return "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


def open_kernel(
    lowers: Sequence[Layer],
    umask: int = 0o022,
    *,
    whiteouts: Literal["chardev", "xattr"] = "chardev",
) -> OverlayStackSystem:
    """A kernel overlay mount of *lowers*, or a skip naming why there cannot be one.

    Safe inside Hypothesis tests: Hypothesis re-raises pytest's skip at once.
    """
    reasons = []
    for backend in KERNEL_BACKENDS:
        try:
            return OverlayStackSystem.create(
                lowers, umask, whiteouts=whiteouts, backend=backend, directory=fast_tmp()
            )
        except BackendUnavailable as exc:
            reasons.append(str(exc))
    pytest.skip("no kernel overlayfs here: " + "; ".join(reasons))


@contextmanager
def kernel(lowers: Sequence[Layer], umask: int = 0o022) -> Iterator[OverlayStackSystem]:
    system = open_kernel(lowers, umask)
    try:
        yield system
    finally:
        system.close()


@contextmanager
def kernel_stack(lowers: Sequence[Path]) -> Iterator[OverlayStack]:
    """A kernel overlay mount of real directories, or a skip naming why there is none."""
    reasons = []
    for backend in KERNEL_BACKENDS:
        try:
            stack = OverlayStack(lowers, backend=backend).mount()
        except BackendUnavailable as exc:
            reasons.append(str(exc))
            continue
        try:
            yield stack
        finally:
            stack.close()
        return
    pytest.skip("no kernel overlayfs here: " + "; ".join(reasons))
