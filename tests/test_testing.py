"""pytest_overlay.testing: the state machine against the kernel mount, proof that the
machine catches broken union implementations, and the strategies it draws from."""

from __future__ import annotations

import copy
import errno
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import run_state_machine_as_test

from pytest_overlay.layers import WHITEOUT, Dir, Entry, File, Layer, Symlink, squash
from pytest_overlay.model import UnionModel
from pytest_overlay.testing import (
    AppendBytes,
    CreateSymlink,
    DirectoryOps,
    Link,
    ModelSystem,
    Operation,
    OverlayStackSystem,
    Rename,
    Truncate,
    UnionStateMachine,
    UnionSystem,
    Unlink,
    describe_difference,
    layer_stacks,
    layers,
    name_pools,
    names,
    operations,
)
from pytest_overlay.testing.strategies import TRICKY_NAMES, without_inert_whiteouts
from tests.helpers import usable_backend
from tests.kernel import fast_tmp, kernel, open_kernel

# -- the machine against the kernel ---------------------------------------------------------


class KernelMachine(UnionStateMachine):
    """The reference model next to kernel overlayfs, mounted by OverlayStack."""

    whiteouts: ClassVar[Literal["chardev", "xattr"]] = "chardev"

    def lower_layers(self, pool: Sequence[str]) -> st.SearchStrategy[list[Layer]]:
        # Whiteouts that hide nothing show up in the kernel's readdir (see docs/model.rst).
        return super().lower_layers(pool).map(without_inert_whiteouts)

    def open_system(self, lowers: Sequence[Layer], umask: int) -> UnionSystem:
        return open_kernel(lowers, umask, whiteouts=self.whiteouts)


class XattrWhiteoutKernelMachine(KernelMachine):
    """Lower layers written with xattr whiteouts (kernel >= 6.7) instead of devices."""

    whiteouts = "xattr"


class FuseMachine(KernelMachine):
    """The reference model next to fuse-overlayfs. Its upper layer has its own format
    (new directories marked opaque, marker files), so only the merged view, errors,
    changes and the lowers are compared; see DEVIATIONS in pytest_overlay._backends.protocol."""

    compare_upper = False

    def name_pool(self) -> st.SearchStrategy[tuple[str, ...]]:
        # fuse-overlayfs reserves names starting with ".wh." (deviation "wh-names-reserved").
        return name_pools().map(lambda pool: tuple(n for n in pool if not n.startswith(".wh.")))

    def operation(self, model: UnionModel) -> st.SearchStrategy[Operation]:
        # Deviation "lower-hardlinks-shared": once a snapshot freezes a hard link into a
        # lower layer, fuse-overlayfs shows a write through one name under the others.
        # Deviation "dir-rename-uncovers": moving a directory made over a deleted base
        # entry brings that entry back (or fails with EXDEV).
        # Deviation "dir-over-looping-symlink": no looping symlink may reach a lower
        # layer, not even through a snapshot.
        return (
            super()
            .operation(model)
            .filter(
                lambda op: (
                    not isinstance(op, Link)
                    and not moves_dir_over_lower(model, op)
                    and not creates_looping_symlink(model, op)
                )
            )
        )

    def lower_layers(self, pool: Sequence[str]) -> st.SearchStrategy[list[Layer]]:
        # Deviation "dir-over-looping-symlink": a directory over a looping symlink in a
        # lower layer, there from the start or made after deleting it, fails with ENOMEM.
        lowers = super().lower_layers(pool)
        return lowers.filter(lambda stack: not any(map(has_looping_symlink, stack)))

    def open_system(self, lowers: Sequence[Layer], umask: int) -> UnionSystem:
        usable_backend("fuse")
        return OverlayStackSystem.create(
            lowers, umask, whiteouts=self.whiteouts, backend="fuse", directory=fast_tmp()
        )


class CopyMachine(KernelMachine):
    """The reference model next to the copy backend, which mounts nothing: it copies the
    lowers and derives the upper layer by comparison, each time the test reads it. Lower
    whiteouts are written as xattrs, which an ordinary user can create too."""

    whiteouts = "xattr"

    def upper_view(self, layer: Layer) -> Layer:
        # Deviation "added-dirs-not-opaque": a copy cannot tell a directory renamed into
        # place from one made there, so only where a base layer holds the path does the
        # opaque marker count (elsewhere it hides nothing).
        below = squash(self.chain)
        return Layer(
            {
                path: Dir(entry.mode) if isinstance(entry, Dir) and path not in below else entry
                for path, entry in layer.items()
            }
        )

    def operation(self, model: UnionModel) -> st.SearchStrategy[Operation]:
        # Deviation "dir-rename-allowed": the model refuses these with EXDEV, a copy cannot.
        # Deviation "open-without-write-unchanged": appending nothing, or truncating a file
        # to the length it has, changes nothing a copy can see; overlayfs copies it up.
        return (
            super()
            .operation(model)
            .filter(lambda op: not refused_with_exdev(model, op) and not leaves_as_is(model, op))
        )

    def open_system(self, lowers: Sequence[Layer], umask: int) -> UnionSystem:
        usable_backend("copy")
        return OverlayStackSystem.create(
            lowers, umask, whiteouts=self.whiteouts, backend="copy", directory=fast_tmp()
        )


def moves_dir_over_lower(model: UnionModel, op: Operation) -> bool:
    """Whether *op* renames a directory whose path some lower layer also holds."""
    return (
        isinstance(op, Rename)
        and isinstance(model.merged().get(op.src), Dir)
        and any(op.src in lower for lower in model.lowers)
    )


def leaves_as_is(model: UnionModel, op: Operation) -> bool:
    """Whether *op* opens a file for writing and leaves it exactly as it was (a truncate
    through a symlink is counted in, rather than resolved)."""
    if isinstance(op, AppendBytes):
        return not op.data
    if isinstance(op, Truncate):
        entry = model.merged().get(op.path)
        return isinstance(entry, Symlink) or (
            isinstance(entry, File) and len(entry.data) == op.length
        )
    return False


def refused_with_exdev(model: UnionModel, op: Operation) -> bool:
    """Whether *op* is a rename that overlayfs refuses with EXDEV (tried on a copy)."""
    if not isinstance(op, Rename):
        return False
    try:
        op.apply(copy.deepcopy(model))
    except OSError as exc:
        return exc.errno == errno.EXDEV
    return False


def symlink_loops(tree: Mapping[str, Entry], path: str) -> bool:
    """Whether resolving the symlink at *path* inside *tree* alone ends in ELOOP. The
    strategies only make relative targets without '..', so the tree is the whole world."""
    link = tree[path]
    assert isinstance(link, Symlink), path
    parts = path.split("/")[:-1]
    pending = link.target.split("/")
    hops = 1
    while pending:
        name = pending.pop(0)
        entry = tree.get("/".join([*parts, name]))
        if isinstance(entry, Symlink):
            hops += 1
            if hops > 40:  # the kernel's MAXSYMLINKS
                return True
            pending[:0] = entry.target.split("/")
        elif isinstance(entry, Dir):
            parts.append(name)
        else:
            return False  # ENOENT or ENOTDIR: resolution ends without a loop
    return False


def has_looping_symlink(layer: Layer) -> bool:
    return any(isinstance(e, Symlink) and symlink_loops(layer, p) for p, e in layer.items())


def creates_looping_symlink(model: UnionModel, op: Operation) -> bool:
    """Whether *op* makes a symlink that loops in the merged view (a snapshot would
    freeze it into a lower layer)."""
    if not isinstance(op, CreateSymlink):
        return False
    tree: dict[str, Entry] = {**model.merged(), op.path: Symlink(op.target)}
    return symlink_loops(tree, op.path)


def test_symlink_loops_finds_only_loops() -> None:
    assert symlink_loops({"a": Symlink("a")}, "a")
    assert symlink_loops({"a": Symlink("a/b")}, "a")
    assert symlink_loops({"a": Symlink("b"), "b": Symlink("a")}, "a")
    assert symlink_loops({"d": Dir(0o755), "d/a": Symlink("a")}, "d/a")
    assert not symlink_loops({"a": Symlink("d"), "d": Dir(0o755)}, "a")
    assert not symlink_loops({"a": Symlink("b")}, "a")  # dangling
    assert not symlink_loops({"a": Symlink("f/x"), "f": File(b"", 0o644)}, "a")  # ENOTDIR
    model = UnionModel([Layer.build({"d/f": File(b"")})])
    assert creates_looping_symlink(model, CreateSymlink("l", "l"))
    assert creates_looping_symlink(model, CreateSymlink("l/x", "l"))
    assert not creates_looping_symlink(model, CreateSymlink("d", "l"))


# Two test cases so that xdist can run them side by side. Runs per case come from the
# Hypothesis profile (tests/conftest.py): 25 by default, 200 with HYPOTHESIS_PROFILE=ci.
TestKernelUnion = KernelMachine.TestCase
TestKernelUnion.settings = settings(stateful_step_count=40)
TestKernelUnionXattrWhiteouts = XattrWhiteoutKernelMachine.TestCase
TestKernelUnionXattrWhiteouts.settings = settings(stateful_step_count=40)
# fuse-overlayfs is slower per operation, and every step of the copy backend rescans the
# copy: shorter runs, but as many as the profile asks for, so that a nightly search covers
# every backend alike.
TestFuseUnion = FuseMachine.TestCase
TestFuseUnion.settings = settings(stateful_step_count=30)
TestCopyUnion = CopyMachine.TestCase
TestCopyUnion.settings = settings(stateful_step_count=30)


# -- the machine catches broken implementations ---------------------------------------------


class ForgetsWhiteouts(ModelSystem):
    """Deletes lower files without leaving a whiteout, as a naive layer applier might."""

    def apply(self, op: Operation) -> None:
        super().apply(op)
        if isinstance(op, Unlink):
            upper = self.model._upper
            if upper.get(op.path) == WHITEOUT:
                upper.remove(op.path)


class RenamesLowerDirs(ModelSystem):
    """Lets a lower directory be renamed (like redirect_dir=on, or a copying backend)."""

    def apply(self, op: Operation) -> None:
        try:
            super().apply(op)
        except OSError as exc:
            if not (isinstance(op, Rename) and exc.errno == errno.EXDEV):
                raise


class WritesThrough(ModelSystem):
    """Reports a lower layer that changed under it."""

    def lowers(self) -> Sequence[Layer]:
        first, *rest = self.model.lowers
        return [first.with_entries({"written-through": File(b"oops")}), *rest]


def machine_for(system: type[ModelSystem]) -> type[UnionStateMachine]:
    class Machine(UnionStateMachine):
        def open_system(self, lowers: Sequence[Layer], umask: int) -> UnionSystem:
            return system(lowers, umask)

    return Machine


QUICK = settings(
    max_examples=300,
    stateful_step_count=20,
    database=None,
    derandomize=True,
    report_multiple_bugs=False,
    phases=[Phase.generate],  # the first failure is enough; shrinking costs seconds
    suppress_health_check=list(HealthCheck),
    deadline=None,
)


@pytest.mark.parametrize(
    ("system", "complaint"),
    [
        (ForgetsWhiteouts, r"merged view differs from the model.*fs\.unlink\("),
        (RenamesLowerDirs, r"fs\.rename\(.*the model says OSError EXDEV, the system says ok"),
        (WritesThrough, r"lower layer 0 \(must never change\).*'written-through'"),
    ],
    ids=["no-whiteouts", "dir-rename", "lower-modified"],
)
def test_machine_catches_a_broken_system(system: type[ModelSystem], complaint: str) -> None:
    # The message also carries the falsifying script, so a failure reads as one.
    with pytest.raises(AssertionError, match=re.compile(complaint, re.DOTALL)):
        run_quickly(machine_for(system))


def test_machine_needs_open_system() -> None:
    with pytest.raises(NotImplementedError, match="must implement open_system"):
        run_quickly(UnionStateMachine)


def run_quickly(machine: type[UnionStateMachine]) -> None:
    run_state_machine_as_test(machine, settings=QUICK)  # type: ignore[no-untyped-call,unused-ignore]


# -- systems --------------------------------------------------------------------------------


def test_kernel_system_removes_its_directory(tmp_path: Path) -> None:
    with kernel([Layer.build({"d/f": File(b"x")})]) as system:
        root = system._root
        system.ops.write_bytes("d/f", b"y")
        assert root.is_dir()
    assert not root.exists()


def test_directory_ops_stay_under_their_root(tmp_path: Path) -> None:
    ops = DirectoryOps(tmp_path / "root", 0o022)
    for path in ["../escape", "/etc/passwd", "a/../../b"]:
        with pytest.raises(ValueError, match="would leave"):
            ops.write_bytes(path, b"")


def test_directory_ops_apply_their_umask(tmp_path: Path) -> None:
    ops = DirectoryOps(tmp_path, 0o077)
    ops.mkdir("d")
    ops.write_bytes("d/f", b"x")
    assert os.stat(tmp_path / "d").st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "d" / "f").st_mode & 0o777 == 0o600


def test_describe_difference_names_each_path() -> None:
    expected = Layer.build({"a": File(b"1"), "d": Dir(opaque=True)})
    actual = Layer.build({"a": File(b"2"), "d": Dir(), "x": WHITEOUT})
    assert describe_difference(expected, actual) == "\n".join(
        [
            "  'a': expected File(b'1', mode=0o644), got File(b'2', mode=0o644)",
            "  'd': expected Dir(mode=0o755, opaque=True), got Dir(mode=0o755)",
            "  'x': expected None, got WHITEOUT",
        ]
    )


def test_a_file_named_like_the_opaque_marker_is_just_a_file() -> None:
    lowers = [Layer.build({"d/keep": File(b"k")})]
    model = UnionModel(lowers)
    model.write_bytes("d/.wh..wh..opq", b"")
    with kernel(lowers) as system:
        system.ops.write_bytes("d/.wh..wh..opq", b"")
        assert system.upper() == model.upper()
        assert [str(c) for c in system.changes() or []] == ["M d", "A d/.wh..wh..opq"]


def test_a_marker_named_file_in_an_opaque_directory_is_just_a_file() -> None:
    lowers = [Layer.build({"d/keep": File(b"k")})]
    model = UnionModel(lowers)
    model.unlink("d/keep")
    model.rmdir("d")
    model.mkdir("d")
    model.write_bytes("d/.wh..wh..opq", b"")
    with kernel(lowers) as system:
        system.ops.unlink("d/keep")
        system.ops.rmdir("d")
        system.ops.mkdir("d")
        system.ops.write_bytes("d/.wh..wh..opq", b"")
        assert [str(c) for c in system.changes() or []] == [str(c) for c in model.changes()]


# -- strategies -----------------------------------------------------------------------------

#: For find(): stop at the first example that shows the strategy can reach a case.
SEARCH = settings(database=None, max_examples=5000, phases=[Phase.generate])


@given(names())
def test_names_are_legal_file_names(name: str) -> None:
    assert name not in ("", ".", "..")
    assert "/" not in name
    assert "\0" not in name
    assert len(name.encode()) <= 255


@pytest.mark.parametrize(
    "wanted",
    [
        lambda n: " " in n,
        lambda n: n.startswith("-"),
        lambda n: n.startswith(".wh."),
        lambda n: not n.isascii(),
        lambda n: n not in TRICKY_NAMES and len(n) > 1,  # arbitrary text too
    ],
    ids=["space", "leading-dash", "wh-prefix", "unicode", "arbitrary"],
)
def test_names_reach_the_awkward_cases(wanted: Callable[[str], bool]) -> None:
    find(names(), wanted, settings=SEARCH)


def test_layers_reach_whiteouts_opaque_dirs_and_depth() -> None:
    def rich(layer: Layer) -> bool:
        entries = list(layer.values())
        return (
            WHITEOUT in entries
            and any(isinstance(e, Dir) and e.opaque for e in entries)
            and any(path.count("/") == 2 for path in layer)
        )

    find(layers(), rich, settings=SEARCH)


@pytest.mark.parametrize("kind", [op.__name__ for op in Operation.__subclasses__()])
def test_operations_reach_every_kind(kind: str) -> None:
    model = UnionModel([Layer.build({"d/f": File(b"x"), "g": File()})])
    find(
        operations(model, ("a", "b")),
        lambda op: type(op).__name__ == kind,
        settings=SEARCH,
    )


def test_operations_aim_mostly_at_existing_paths() -> None:
    # Operations on names that exist are what exercise copy-up; a uniform draw of random
    # paths would mostly hit ENOENT.
    model = UnionModel([Layer.build({"d/f": File(b"x"), "g": File()})])
    hits = []

    @given(operations(model, ("zz",)))
    @settings(database=None, max_examples=200, derandomize=True)
    def record(op: Operation) -> None:
        path = op.path if isinstance(op, CreateSymlink) else op.arguments()[0]
        hits.append(model.lookup(str(path)) is not None)

    record()
    assert sum(hits) > len(hits) / 3


@given(st.data())
def test_pruning_inert_whiteouts_keeps_the_union(data: st.DataObject) -> None:
    lowers = data.draw(layer_stacks(data.draw(name_pools())))
    pruned = without_inert_whiteouts(lowers)
    assert squash(pruned) == squash(lowers)
    assert WHITEOUT not in pruned[-1].values()  # nothing below the lowest layer to hide


def test_model_system_is_a_union_system() -> None:
    system: UnionSystem = ModelSystem([Layer.build({"f": File()})], 0o022)
    system.apply(Unlink("f"))
    assert system.upper() == Layer({"f": WHITEOUT})
    assert [str(c) for c in system.changes() or []] == ["D f"]
    assert system.merged() == Layer()
