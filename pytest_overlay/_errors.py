"""The package's exception types and its warning category, each saying what went wrong and
how to fix it, and the helper that keeps their listings short."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING


class OverlayError(Exception):
    """A union could not be set up, used or torn down.

    The message names the problem and the fix; the base directories are never touched
    when this is raised.
    """


class BackendUnavailable(OverlayError):
    """No mechanism that can mount a union works in this process (see the message)."""


if TYPE_CHECKING:
    import pytest

    class OverlayWarning(pytest.PytestWarning):
        """Something pytest-overlay worked around; the message says what and how to avoid it."""

else:

    def __getattr__(name: str) -> type:
        # pytest is imported only when the warning is first needed: the package is also
        # used outside pytest (OverlayStack as a context manager), which should not pay
        # for importing pytest.
        if name != "OverlayWarning":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        import pytest

        class OverlayWarning(pytest.PytestWarning):
            """Something pytest-overlay worked around; the message says what and how to
            avoid it."""

        OverlayWarning.__module__ = "pytest_overlay"
        OverlayWarning.__qualname__ = "OverlayWarning"
        globals()[name] = OverlayWarning
        return OverlayWarning


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
