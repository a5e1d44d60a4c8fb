"""Layers: one directory of an overlay stack as an immutable path -> entry mapping.

The representation (:class:`Layer`, :class:`File`, :class:`Dir`, :class:`Symlink`,
:data:`WHITEOUT`, :func:`apply_layer`, :func:`squash`, :func:`diff_layer`) is pure;
:func:`read_layer` and :func:`write_layer` are the I/O. OCI tarballs are in
:mod:`pytest_overlay.oci`.
"""

from pytest_overlay._layers.io import default_xattr_namespace, read_layer, write_layer
from pytest_overlay._layers.layer import (
    WHITEOUT,
    Dir,
    Entry,
    File,
    Layer,
    LayerError,
    Symlink,
    Whiteout,
    apply_layer,
    squash,
)
from pytest_overlay._layers.union import diff_layer

__all__ = [
    "WHITEOUT",
    "Dir",
    "Entry",
    "File",
    "Layer",
    "LayerError",
    "Symlink",
    "Whiteout",
    "apply_layer",
    "default_xattr_namespace",
    "diff_layer",
    "read_layer",
    "squash",
    "write_layer",
]
