"""OverlayStack: one union of read-only lower layers under a throwaway upper layer."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import final

from pytest_overlay import _backends
from pytest_overlay._backends import Backend
from pytest_overlay._errors import OverlayError
from pytest_overlay._workspace import Workspace, create_workspace, remove_workspace
from pytest_overlay.changes import Change

__all__ = ["OverlayStack"]

LayerLike = str | os.PathLike[str]


def _check_lower(raw: LayerLike) -> Path:
    path = Path(raw)
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError:
        raise OverlayError(
            f"lower layer {str(raw)!r} does not exist: create it, or fix the path "
            f"(relative paths resolve against {os.getcwd()})"
        ) from None
    except (RuntimeError, OSError) as exc:
        # Python < 3.13 reports a symlink loop as RuntimeError, later ones as ELOOP.
        if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
            raise OverlayError(
                f"lower layer {str(raw)!r} is a symlink loop: point it at a directory"
            ) from None
        raise OverlayError(f"lower layer {str(raw)!r} cannot be read: {exc.strerror}") from None
    if not resolved.is_dir():
        raise OverlayError(
            f"lower layer {str(raw)!r} is not a directory: a layer is a directory tree"
        )
    return resolved


def _check_layout(lowers: Sequence[Path], workspace: Path | None) -> None:
    seen: dict[Path, int] = {}
    for index, lower in enumerate(lowers):
        if lower in seen:
            raise OverlayError(
                f"lower layer {lower} is given twice (positions {seen[lower]} and {index}): "
                "list each layer once"
            )
        seen[lower] = index
    for a in lowers:
        for b in lowers:
            if a != b and b.is_relative_to(a):
                raise OverlayError(
                    f"lower layer {b} lies inside lower layer {a}: layers must be disjoint "
                    "directories"
                )
    if workspace is not None:
        resolved = workspace.resolve()
        for lower in lowers:
            if resolved.is_relative_to(lower):
                raise OverlayError(
                    f"the workspace {resolved} lies inside lower layer {lower}: the upper "
                    "layer would write into the base; choose a workspace outside it"
                )


@final
class OverlayStack:
    """A union of read-only *lowers* (top-most first, like ``lowerdir``) and a fresh upper.

    Use it as a context manager, or call :meth:`mount` and :meth:`close`. Everything
    written under :attr:`merged` lands in :attr:`upper`; the lowers are never modified.
    Closing unmounts the union and deletes the upper layer, work and merged directories.

    *workspace* is the directory under which a fresh ``stack-*`` directory is created per
    mount (default: a new temporary directory). *backend* is ``"auto"`` (the best that
    works here), a backend name (``"kernel"``, ``"userns"``, ``"fuse"``, ``"copy"``) or a
    backend object.
    """

    def __init__(
        self,
        lowers: Sequence[LayerLike],
        *,
        workspace: LayerLike | None = None,
        backend: str | Backend = "auto",
        name: str = "stack",
    ) -> None:
        if isinstance(lowers, (str, os.PathLike)):
            raise TypeError(
                "OverlayStack takes a sequence of lower layers: write OverlayStack([path])"
            )
        if not lowers:
            raise OverlayError("an overlay needs at least one lower layer")
        self.lowers: tuple[Path, ...] = tuple(_check_lower(p) for p in lowers)
        self._workspace_parent = Path(workspace) if workspace is not None else None
        _check_layout(self.lowers, self._workspace_parent)
        self._requested = backend
        self._name = name
        self._space: Workspace | None = None
        self._backend: Backend | None = None
        #: False if the last unmount found the union busy and detached it lazily.
        self.clean_unmount = True

    def __repr__(self) -> str:
        state = f"mounted at {self._space.merged}" if self._space else "not mounted"
        layers = ", ".join(str(p) for p in self.lowers)
        return f"<OverlayStack [{layers}] {state}>"

    @property
    def mounted(self) -> bool:
        return self._space is not None

    def _require(self) -> Workspace:
        if self._space is None:
            raise OverlayError(
                "this OverlayStack is not mounted: use 'with OverlayStack(...) as stack:' "
                "or call stack.mount() first"
            )
        return self._space

    @property
    def merged(self) -> Path:
        """The union: the lowers as seen through the upper layer. Read and write here."""
        return self._require().merged

    @property
    def upper(self) -> Path:
        """The writable layer that receives every change made under :attr:`merged`."""
        return self._require().upper

    @property
    def work(self) -> Path:
        """Overlayfs's private scratch directory (same filesystem as :attr:`upper`)."""
        return self._require().work

    @property
    def workspace(self) -> Path:
        """The directory holding ``upper``, ``work`` and ``merged`` for this mount."""
        return self._require().root

    @property
    def backend(self) -> str:
        """Short name of the mechanism that mounted the union, e.g. ``"kernel"``."""
        if self._backend is None:
            return _backends.select_backend(self._requested).name
        return self._backend.name

    def mount(self) -> OverlayStack:
        """Create a fresh workspace and mount the union on it; return self."""
        if self._space is not None:
            raise OverlayError(f"{self!r} is already mounted: close it before mounting again")
        backend = _backends.select_backend(self._requested)
        space = create_workspace(self._workspace_parent, self.lowers[0], prefix=self._name)
        try:
            backend.mount(self.lowers, space)
        except BaseException:
            remove_workspace(space.root)
            raise
        self._space, self._backend = space, backend
        return self

    def close(self) -> None:
        """Unmount the union and delete its workspace. Safe to call more than once."""
        space, self._space = self._space, None
        if space is None:
            return
        assert self._backend is not None
        self.clean_unmount = self._backend.unmount(space)
        remove_workspace(space.root)

    def __enter__(self) -> OverlayStack:
        return self.mount() if self._space is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def changes(self) -> list[Change]:
        """What the upper layer changes relative to the lowers, parents before children."""
        space = self._require()
        assert self._backend is not None
        return self._backend.changes(self.lowers, space)
