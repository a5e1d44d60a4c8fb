"""The package's one exception type, carrying what went wrong and how to fix it."""

from __future__ import annotations

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
