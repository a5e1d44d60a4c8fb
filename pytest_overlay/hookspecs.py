"""Hooks pytest-overlay adds to pytest, for plugins and conftest files.

Backends are pluggable: the built-in ones are registered through
:func:`pytest_overlay_add_backends` like any third-party backend would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_overlay._backends.protocol import Backend


@pytest.hookspec
def pytest_overlay_add_backends(config: pytest.Config) -> Sequence[Backend] | None:
    """Return backends to add to the ladder (objects following the ``Backend`` protocol).

    Each backend's ``rank`` places it on the ladder that ``--overlay-backend=auto`` walks
    (built-ins: kernel 10, userns 20, fuse 30, copy 90); its ``name`` makes it selectable
    with ``--overlay-backend=NAME``. Names must be unique.
    """


@pytest.hookspec
def pytest_overlay_veto_backend(config: pytest.Config, backend: Backend) -> str | None:
    """Return a reason to refuse *backend* in this session, or None to allow it.

    A vetoed backend is skipped by ``auto`` and refused when named; the reason shows in
    ``--overlay-info`` and in error messages.
    """


@pytest.hookspec(firstresult=True)
def pytest_overlay_choose_backend(
    config: pytest.Config, candidates: list[Backend]
) -> Backend | None:
    """Return the backend ``auto`` should use among *candidates*, or None for the ladder.

    *candidates* are the registered, non-vetoed backends in ladder order, not yet probed:
    the chosen one is probed and, if it cannot work, the session has no backend.
    """
