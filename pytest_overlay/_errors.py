"""The package's one exception type, carrying what went wrong and how to fix it."""

from __future__ import annotations


class OverlayError(Exception):
    """A union could not be set up, used or torn down.

    The message names the problem and the fix; the base directories are never touched
    when this is raised.
    """


class BackendUnavailable(OverlayError):
    """No mechanism that can mount a union works in this process (see the message)."""
