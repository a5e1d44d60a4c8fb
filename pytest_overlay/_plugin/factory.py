"""The session-wide factory that creates every stack the fixtures hand out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import final

from pytest_overlay._backends.protocol import Backend
from pytest_overlay._errors import OverlayError
from pytest_overlay._linux.workspace import safe_name
from pytest_overlay.stack import BaseLike, OverlayStack


@final
class OverlayStackFactory:
    """Mounts :class:`OverlayStack` objects with workspaces under pytest's basetemp.

    The ``overlay_stack_factory`` fixture's value, the ``tmp_path_factory`` of overlays:
    fixtures of any scope use :meth:`mount` to build stacks; any stack still mounted when
    the session ends is closed then.
    """

    def __init__(self, root: Path, backend: str | Backend, *, _ispytest: bool = False) -> None:
        if not _ispytest:
            raise TypeError(
                "OverlayStackFactory is created by pytest-overlay: request the "
                "'overlay_stack_factory' fixture instead"
            )
        self._root = root
        self._resolved_root = root.resolve()
        self._backend = backend
        self._open: list[OverlayStack] = []

    @property
    def root(self) -> Path:
        """The directory under which every stack's workspace is created."""
        return self._root

    @property
    def backend(self) -> str:
        """The name of the backend stacks are mounted with."""
        return self._backend if isinstance(self._backend, str) else self._backend.name

    def mount(
        self,
        lowers: Sequence[BaseLike],
        *,
        name: str = "stack",
        merged: str | os.PathLike[str] | None = None,
    ) -> OverlayStack:
        """Mount a new stack over *lowers* (top-most first; directories or snapshots).

        *name* prefixes the workspace directory, to find it under ``--basetemp``.
        *merged* shows the union at that new or empty directory instead of inside the
        workspace; it is left empty at close; or one of *lowers* itself, to show the union
        over that directory's own path (see :class:`~pytest_overlay.OverlayStack`).
        Close it with :meth:`OverlayStack.close` when done; the factory closes whatever is
        left at the end of the session.
        """
        safe = safe_name(name, 30, "stack")
        stack = OverlayStack(
            lowers, workspace=self._root, backend=self._backend, name=safe, merged=merged
        )
        # The stack has resolved its base directories; frozen layers of snapshots are
        # meant to live under the root, plain directories are not.
        for layer in stack._base:
            if isinstance(layer, Path) and layer.is_relative_to(self._resolved_root):
                raise OverlayError(
                    f"the base {layer} lies inside pytest-overlay's workspace directory "
                    f"{self._resolved_root}, whose contents are deleted at teardown: keep "
                    "base directories outside it (to stack on another stack's state, take a "
                    "snapshot)"
                )
        stack.mount()
        self._open = [s for s in self._open if s.mounted]
        self._open.append(stack)
        return stack

    def close_all(self) -> None:
        """Close every stack this factory mounted, newest first."""
        while self._open:
            self._open.pop().close()
