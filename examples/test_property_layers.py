"""Property testing your own union code against the reference model.

``apply_layer_tar`` below stands for the code under test: an image tool's function that
applies an OCI layer tarball onto a plain directory (whiteouts ``.wh.NAME`` delete what
the layers below left, ``.wh..wh..opq`` empties a directory of it), so that applying an
image's layers bottom to top gives the container's root filesystem.

The check is pytest-overlay's own: :class:`~pytest_overlay.testing.UnionStateMachine`
draws random lower layers (with whiteouts, opaque directories and symlinks), applies random
file operations, and after every step compares the system under test with
:class:`~pytest_overlay.model.UnionModel`. Here the operations are recorded by a model of
the container runtime, which writes the upper layer, and the system's merged view is what
``apply_layer_tar`` makes of all the layers exported as tarballs. A wrong whiteout or
opaque-directory rule shows up as a merged view that differs from the model's.

Run it with ``pytest examples/test_property_layers.py``; see docs/property-testing.rst.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

pytest.importorskip(
    "hypothesis", reason="property tests need pip install 'pytest-overlay[hypothesis]'"
)

from hypothesis import settings
from hypothesis import strategies as st

from pytest_overlay.changes import Change
from pytest_overlay.layers import Layer, read_layer
from pytest_overlay.model import UnionModel
from pytest_overlay.oci import write_tar
from pytest_overlay.testing import (
    Operation,
    UnionStateMachine,
    UnionSystem,
    as_merged_view,
    name_pools,
)

# --- the code under test: a user's own OCI layer applier ---------------------------------

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


def remove(path: Path) -> None:
    """Delete whatever *path* is (a directory with its contents); nothing if it is absent."""
    # Symlinks first and never followed: one may dangle, loop, or point at a directory.
    if path.is_symlink():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def clear_directory(path: Path) -> None:
    """An opaque directory: nothing the layers below put in it shows through."""
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            remove(child)


def apply_whiteout(directory: Path, name: str) -> None:
    """A whiteout: *name* is gone from *directory*, whatever type it had below."""
    remove(directory / name)


def real_directory(target: Path, rel: str) -> Path | None:
    """*target*/*rel* if every component of *rel* is a real directory (no symlink to
    follow out of the tree), else None: then this layer replaces the parent anyway."""
    path = target
    for part in rel.split("/") if rel else ():
        path = path / part
        if path.is_symlink() or not path.is_dir():
            return None
    return path


def apply_layer_tar(tarball: bytes, target: Path) -> None:
    """Apply the OCI layer *tarball* onto the directory *target*."""
    with tarfile.open(fileobj=io.BytesIO(tarball)) as tar:
        members = sorted(tar.getmembers(), key=lambda m: m.name.strip("/").split("/"))
        entries = []
        # Deletions first: markers act on what the layers below left, never on entries of
        # this same layer, whatever their order in the tarball.
        for member in members:
            parent, _, name = member.name.strip("/").rpartition("/")
            if not name.startswith(WHITEOUT_PREFIX):
                entries.append(member)
                continue
            directory = real_directory(target, parent)
            if directory is None:
                continue
            if name == OPAQUE_MARKER:
                clear_directory(directory)
            else:
                apply_whiteout(directory, name.removeprefix(WHITEOUT_PREFIX))
        for member in entries:  # parents come before their children
            path = target / member.name.strip("/")
            if member.isdir():
                if path.is_symlink() or not path.is_dir():
                    remove(path)
                    path.mkdir()
                os.chmod(path, member.mode)  # the top-most layer's mode wins
            elif member.issym():
                remove(path)
                os.symlink(member.linkname, path)
            else:
                data = tar.extractfile(member)
                assert data is not None
                remove(path)
                path.write_bytes(data.read())
                os.chmod(path, member.mode)


# --- the system under test, for the state machine -----------------------------------------


class FlattenedImage:
    """A :class:`~pytest_overlay.testing.UnionSystem` whose merged view comes from
    ``apply_layer_tar``: every layer is exported as a tarball and applied bottom to top."""

    def __init__(self, lowers: Sequence[Layer], umask: int) -> None:
        self.base = tuple(lowers)
        self.runtime = UnionModel(lowers, umask=umask)  # writes the container's upper layer

    def apply(self, op: Operation) -> None:
        op.apply(self.runtime)

    def merged(self) -> Layer:
        with tempfile.TemporaryDirectory(prefix="flatten-") as scratch:
            root = Path(scratch) / "rootfs"
            root.mkdir()
            for layer in reversed((self.runtime.upper(), *self.base)):  # bottom first
                tarball = io.BytesIO()
                write_tar(layer, tarball)
                apply_layer_tar(tarball.getvalue(), root)
            return as_merged_view(read_layer(root))

    def upper(self) -> Layer:
        return self.runtime.upper()

    def lowers(self) -> Sequence[Layer]:
        return self.base

    def changes(self) -> list[Change] | None:
        return None  # the flattener makes no change list of its own

    def close(self) -> None:
        pass


class FlattenMachine(UnionStateMachine):
    # The upper layer is the runtime's, not the flattener's: only the merged view is ours.
    compare_upper = False

    def name_pool(self) -> st.SearchStrategy[tuple[str, ...]]:
        # Names starting with ".wh." are whiteout markers in a tarball: no OCI layer can
        # hold them (write_tar refuses them), so no image has them.
        return name_pools().map(lambda pool: tuple(n for n in pool if not n.startswith(".wh.")))

    def open_system(self, lowers: Sequence[Layer], umask: int) -> UnionSystem:
        return FlattenedImage(lowers, umask)


TestFlattenedImage = FlattenMachine.TestCase
TestFlattenedImage.settings = settings(max_examples=40, stateful_step_count=15, deadline=None)
