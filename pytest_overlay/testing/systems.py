"""Systems under test for the state machine: the protocol and three implementations.

- :class:`ModelSystem`: the model itself (a template, and a check of the machine).
- :class:`DirectorySystem`: any union that shows up as directories on disk (merged,
  upper, lowers), driven with :mod:`os` calls through :class:`DirectoryOps`.
- :class:`OverlayStackSystem`: the kernel mount made by
  :class:`~pytest_overlay.stack.OverlayStack`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from pytest_overlay._layers.changes import Change
from pytest_overlay._layers.io import read_layer, write_layer
from pytest_overlay._layers.layer import Dir, Layer
from pytest_overlay.model import UnionModel
from pytest_overlay.testing.ops import Operation

if TYPE_CHECKING:
    from pytest_overlay.snapshot import Snapshot
    from pytest_overlay.stack import OverlayStack

__all__ = [
    "DirectoryOps",
    "DirectorySystem",
    "ModelSystem",
    "OverlayStackSystem",
    "UnionSystem",
    "as_merged_view",
]


class UnionSystem(Protocol):
    """What :class:`~pytest_overlay.testing.UnionStateMachine` needs from a union.

    :meth:`apply` raises :class:`OSError` exactly where the kernel would. The other
    methods read state back as :class:`~pytest_overlay.layers.Layer` values.
    """

    def apply(self, op: Operation) -> None:
        """Perform *op* on the merged view."""
        ...

    def merged(self) -> Layer:
        """The merged tree as a reader sees it (no whiteouts; opaque flags are ignored)."""
        ...

    def upper(self) -> Layer:
        """The upper layer as stored: copy-ups, whiteouts, opaque directories."""
        ...

    def lowers(self) -> Sequence[Layer]:
        """The lower layers as stored now, top-most first (they must never change)."""
        ...

    def changes(self) -> list[Change] | None:
        """The system's own change list for the upper layer, or None if it has none."""
        ...

    def close(self) -> None:
        """Release everything; called once at the end of each run."""
        ...


def as_merged_view(layer: Layer) -> Layer:
    """*layer* with opaque flags cleared: they mean nothing in a merged directory."""
    return Layer(
        {
            path: Dir(entry.mode) if isinstance(entry, Dir) else entry
            for path, entry in layer.items()
        }
    )


class ModelSystem:
    """The model as a system under test: the machine must pass against it."""

    def __init__(self, lowers: Sequence[Layer], umask: int) -> None:
        self.model = UnionModel(lowers, umask=umask)

    def apply(self, op: Operation) -> None:
        op.apply(self.model)

    def merged(self) -> Layer:
        return self.model.merged()

    def upper(self) -> Layer:
        return self.model.upper()

    def lowers(self) -> Sequence[Layer]:
        return self.model.lowers

    def changes(self) -> list[Change] | None:
        return self.model.changes()

    def close(self) -> None:
        pass


class DirectoryOps:
    """:class:`~pytest_overlay.testing.FileSystemOps` on a real directory, via :mod:`os`.

    Every call runs with the process umask set to *umask* and restores it after. Paths
    must be relative without ``..``, which keeps the calls under *root* (the symlinks
    the strategies draw never contain ``..`` or start with ``/`` either).
    """

    def __init__(self, root: str | os.PathLike[str], umask: int) -> None:
        self.root = Path(root)
        self.umask = umask

    def _path(self, rel: str) -> Path:
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ValueError(f"{rel!r} would leave {self.root}")
        return self.root / rel

    @contextmanager
    def _umask(self) -> Iterator[None]:
        previous = os.umask(self.umask)
        try:
            yield
        finally:
            os.umask(previous)

    def write_bytes(self, path: str, data: bytes, /) -> None:
        with self._umask(), open(self._path(path), "wb") as f:
            f.write(data)

    def append_bytes(self, path: str, data: bytes, /) -> None:
        with self._umask(), open(self._path(path), "ab") as f:
            f.write(data)

    def truncate(self, path: str, length: int, /) -> None:
        os.truncate(self._path(path), length)

    def mkdir(self, path: str, mode: int = 0o777, /) -> None:
        with self._umask():
            os.mkdir(self._path(path), mode)

    def rmdir(self, path: str, /) -> None:
        os.rmdir(self._path(path))

    def unlink(self, path: str, /) -> None:
        os.unlink(self._path(path))

    def rename(self, src: str, dst: str, /) -> None:
        os.rename(self._path(src), self._path(dst))

    def symlink(self, target: str, path: str, /) -> None:
        os.symlink(target, self._path(path))

    def chmod(self, path: str, mode: int, /) -> None:
        os.chmod(self._path(path), mode)

    def link(self, src: str, dst: str, /) -> None:
        # link(2) semantics: a symlink is linked itself, not its target.
        os.link(self._path(src), self._path(dst), follow_symlinks=False)


class DirectorySystem:
    """A union that lives on disk: operations go to *merged*, state is read back from
    *merged*, *upper* and *lowers* with :func:`~pytest_overlay.layers.read_layer`.

    Subclass it for a FUSE filesystem or any other mount; override :meth:`changes` if
    the system reports its own change list, and :meth:`close` to unmount.
    """

    def __init__(
        self,
        merged: str | os.PathLike[str],
        upper: str | os.PathLike[str],
        lowers: Sequence[str | os.PathLike[str]],
        umask: int,
    ) -> None:
        self.merged_path = Path(merged)
        self.upper_path = Path(upper)
        self.lower_paths = tuple(Path(p) for p in lowers)
        self.ops = DirectoryOps(self.merged_path, umask)

    def apply(self, op: Operation) -> None:
        op.apply(self.ops)

    def merged(self) -> Layer:
        return as_merged_view(read_layer(self.merged_path))

    def upper(self) -> Layer:
        return read_layer(self.upper_path)

    def lowers(self) -> Sequence[Layer]:
        return [read_layer(p) for p in self.lower_paths]

    def changes(self) -> list[Change] | None:
        return None

    def close(self) -> None:
        pass


class OverlayStackSystem(DirectorySystem):
    """The kernel's overlayfs, mounted by :class:`~pytest_overlay.stack.OverlayStack`.

    :meth:`create` writes the lowers into a fresh temporary directory and mounts them;
    :meth:`close` unmounts and deletes everything. Mount failures propagate
    (:class:`~pytest_overlay.OverlayError` and its subclass ``BackendUnavailable``).
    """

    def __init__(self, stack: OverlayStack, root: Path, umask: int) -> None:
        super().__init__(stack.merged, stack.upper, stack.lowers, umask)
        self.stack = stack
        self._root = root

    @classmethod
    def create(
        cls,
        lowers: Sequence[Layer],
        umask: int,
        *,
        whiteouts: Literal["chardev", "xattr"] = "chardev",
        backend: str = "auto",
        directory: str | os.PathLike[str] | None = None,
    ) -> OverlayStackSystem:
        """Write *lowers* to disk, mount them under a fresh upper layer, return the system.

        Everything goes into a new temporary directory inside *directory* (default: the
        system's temporary directory; a tmpfs such as ``/dev/shm`` makes runs faster).
        *whiteouts* is the form lower-layer whiteouts are written in (see
        :func:`~pytest_overlay.layers.write_layer`).
        """
        # Imported here: the stack pulls in the mount machinery, which a user who points
        # the machine at their own system does not need.
        from pytest_overlay.stack import OverlayStack

        root = Path(tempfile.mkdtemp(prefix="pytest-overlay-machine-", dir=directory))
        try:
            paths = []
            for index, layer in enumerate(lowers):
                path = root / f"lower{index}"
                write_layer(layer, path, whiteouts=whiteouts)
                paths.append(path)
            stack = OverlayStack(paths, workspace=root, backend=backend).mount()
        except BaseException:
            _remove_tree(root)
            raise
        return cls(stack, root, umask)

    @property
    def unprivileged(self) -> bool:
        """Whether the union was mounted in a user namespace (``userxattr``), not by root."""
        return self.stack.backend == "userns"

    def upper(self) -> Layer:
        # Through the stack, which brings a copy backend's upper layer up to date first.
        return read_layer(self.stack.upper)

    def changes(self) -> list[Change] | None:
        return self.stack.changes()

    def snapshot(self) -> Snapshot:
        """Freeze the state with :meth:`OverlayStack.snapshot`; the token is the Snapshot."""
        snap = self.stack.snapshot()
        self.upper_path = self.stack.upper  # each mount gets a fresh upper directory
        return snap

    def restore(self, token: Snapshot, /) -> None:
        self.stack.restore(token)
        self.upper_path = self.stack.upper

    def close(self) -> None:
        try:
            self.stack.close()
        finally:
            _remove_tree(self._root)


def _remove_tree(root: Path) -> None:
    # A layer may hold directories without write permission, which would stop rmtree
    # for a non-root owner: open them up first.
    def open_up(directory: str) -> None:
        os.chmod(directory, 0o700)
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    open_up(entry.path)

    if root.exists():
        open_up(str(root))
        shutil.rmtree(root)
