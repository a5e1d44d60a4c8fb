"""Property testing of union filesystems against :class:`~pytest_overlay.model.UnionModel`.

Like ``zarr.testing``, this ships in the package so that other projects (a layer applier,
a FUSE filesystem, an image builder) can run the same checks on their own code: implement
:class:`UnionSystem` (or reuse :class:`DirectorySystem`) and subclass
:class:`UnionStateMachine`. Importing this module needs Hypothesis, which comes with the
``hypothesis`` extra: ``pip install 'pytest-overlay[hypothesis]'``.
"""

try:
    import hypothesis  # noqa: F401 - only to say what is missing, before the kit needs it
except ImportError as exc:
    raise ImportError(
        "pytest_overlay.testing needs Hypothesis, which is not installed: "
        "pip install 'pytest-overlay[hypothesis]' (or pip install hypothesis)",
        name=exc.name,
    ) from exc

from pytest_overlay.testing.ops import (
    AppendBytes,
    Chmod,
    CreateSymlink,
    FileSystemOps,
    Link,
    Mkdir,
    Operation,
    Rename,
    Rmdir,
    Truncate,
    Unlink,
    WriteBytes,
)
from pytest_overlay.testing.stateful import (
    SnapshotCapable,
    UnionStateMachine,
    describe_difference,
)
from pytest_overlay.testing.strategies import (
    layer_stacks,
    layers,
    name_pools,
    names,
    operation_sequences,
    operations,
    symlink_targets,
    without_inert_whiteouts,
)
from pytest_overlay.testing.systems import (
    DirectoryOps,
    DirectorySystem,
    ModelSystem,
    OverlayStackSystem,
    UnionSystem,
    as_merged_view,
)

__all__ = [
    "AppendBytes",
    "Chmod",
    "CreateSymlink",
    "DirectoryOps",
    "DirectorySystem",
    "FileSystemOps",
    "Link",
    "Mkdir",
    "ModelSystem",
    "Operation",
    "OverlayStackSystem",
    "Rename",
    "Rmdir",
    "SnapshotCapable",
    "Truncate",
    "UnionStateMachine",
    "UnionSystem",
    "Unlink",
    "WriteBytes",
    "as_merged_view",
    "describe_difference",
    "layer_stacks",
    "layers",
    "name_pools",
    "names",
    "operation_sequences",
    "operations",
    "symlink_targets",
    "without_inert_whiteouts",
]
