"""The package's exception types and its warning category, each saying what went wrong and
how to fix it, and the helper that keeps their listings short."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pytest


class OverlayError(Exception):
    """A union could not be set up, used or torn down.

    The message names the problem and the fix; the base directories are never touched
    when this is raised.
    """


class BackendUnavailable(OverlayError):
    """No mechanism that can mount a union works in this process (see the message)."""


class OverlayWarning(pytest.PytestWarning):
    """pytest-overlay's warnings: something works, but probably not as meant.

    Make them errors with ``-W error::pytest_overlay.OverlayWarning``.
    """


def layer_list(
    layers: Sequence[object], *, shown: int = 3, also: Collection[int] = (), numbered: bool = False
) -> str:
    """*layers* for a message: a stack may have 500, so only the top *shown* ones and those
    at the indices in *also* (e.g. named by a mount helper's error), then how many more."""
    keep = sorted({*range(min(shown, len(layers))), *(i for i in also if 0 <= i < len(layers))})
    parts = [f"{i}: {layers[i]}" if numbered else str(layers[i]) for i in keep]
    if len(keep) < len(layers):
        parts.append(f"... {len(layers) - len(keep)} more of {len(layers)} layers")
    return "[" + ", ".join(parts) + "]"
