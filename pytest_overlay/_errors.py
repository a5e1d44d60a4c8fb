"""The package's exception types and its warning category, each saying what went wrong and
how to fix it."""

from __future__ import annotations

import pytest


class OverlayError(Exception):
    """A union could not be set up, used or torn down.

    The message names the problem and the fix; the base directories are never touched
    when this is raised.
    """


class BackendUnavailable(OverlayError):
    """No mechanism that can mount a union works in this process (see the message)."""


class OverlayWarning(pytest.PytestWarning):
    """Something pytest-overlay did differently from what was asked, or left out.

    Turn it into an error with ``-W error::pytest_overlay.OverlayWarning``.
    """
