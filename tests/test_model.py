"""UnionModel: named edge cases with literal expectations, checked on the model and on the
kernel mount alike, plus properties of the model on its own.

Each case is a small script in the style of continuity's diff tests: lower layers (top-most
first), operations with the errno each must fail with (or None), and the exact upper layer
and change list left behind. The expectations were measured on Linux 6.18.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant

from pytest_overlay.changes import diff_upper
from pytest_overlay.layers import (
    WHITEOUT,
    Dir,
    Entry,
    File,
    Layer,
    Symlink,
    read_layer,
    squash,
    write_layer,
)
from pytest_overlay.model import UnionModel, UnmodelledError
from pytest_overlay.testing import (
    AppendBytes,
    Chmod,
    CreateSymlink,
    FileSystemOps,
    Link,
    Mkdir,
    ModelSystem,
    Operation,
    Rename,
    Rmdir,
    Truncate,
    UnionStateMachine,
    Unlink,
    WriteBytes,
    layer_stacks,
    name_pools,
    operation_sequences,
)
from tests.kernel import kernel, kernel_stack


@dataclass(frozen=True)
class Case:
    id: str
    lowers: Sequence[Mapping[str, Entry]]
    #: (operation, expected errno name or None for success)
    ops: Sequence[tuple[Operation, str | None]]
    upper: Mapping[str, Entry]
    changes: Sequence[str]
    umask: int = 0o022
    #: Where an unprivileged (user namespace, userxattr) mount answers differently:
    #: operation index -> errno name.
    unprivileged_errors: Mapping[int, str] = field(default_factory=dict)

    def errors(self, *, unprivileged: bool) -> list[str | None]:
        expected = [error for _, error in self.ops]
        for index, error in (self.unprivileged_errors if unprivileged else {}).items():
            expected[index] = error
        return expected


def ok(*ops: Operation) -> list[tuple[Operation, str | None]]:
    return [(op, None) for op in ops]


F, D, S, WH = File, Dir, Symlink, WHITEOUT

CASES = [
    Case(
        "write-new-file-in-lower-dir-copies-up-parent",
        [{"d/f": F(b"f")}],
        ok(WriteBytes("d/g", b"g")),
        {"d": D(), "d/g": F(b"g")},
        ["M d", "A d/g"],
    ),
    Case(
        "write-copies-up-file-keeping-mode-and-its-parents",
        [{"d/sub/f": F(b"old", 0o600), "d/other": F()}],
        ok(WriteBytes("d/sub/f", b"new")),
        {"d": D(), "d/sub": D(), "d/sub/f": F(b"new", 0o600)},
        ["M d", "M d/sub", "M d/sub/f"],
    ),
    Case(
        "append-copies-up",
        [{"f": F(b"ab")}],
        ok(AppendBytes("f", b"c")),
        {"f": F(b"abc")},
        ["M f"],
    ),
    Case(
        "append-nothing-still-copies-up",
        [{"f": F(b"ab")}],
        ok(AppendBytes("f", b"")),
        {"f": F(b"ab")},
        ["M f"],
    ),
    Case(
        "truncate-to-same-length-still-copies-up",
        [{"f": F(b"ab")}],
        ok(Truncate("f", 2)),
        {"f": F(b"ab")},
        ["M f"],
    ),
    Case(
        "chmod-copies-up-a-dir-not-its-contents",
        [{"d/f": F(b"f")}],
        ok(Chmod("d", 0o700)),
        {"d": D(0o700)},
        ["M d"],
    ),
    Case(
        "chmod-same-mode-still-copies-up", [{"f": F()}], ok(Chmod("f", 0o644)), {"f": F()}, ["M f"]
    ),
    Case(
        "unlink-lower-file-leaves-whiteout",
        [{"d/f": F()}],
        ok(Unlink("d/f")),
        {"d": D(), "d/f": WH},
        ["M d", "D d/f"],
    ),
    Case(
        "unlink-upper-only-file-leaves-nothing",
        [{"d": D()}],
        ok(WriteBytes("d/new", b"x"), Unlink("d/new")),
        {"d": D()},
        ["M d"],
    ),
    Case(
        "rm-rf-then-mkdir-makes-an-opaque-dir",
        [{"d/f": F(), "d/sub/g": F()}],
        ok(Unlink("d/sub/g"), Rmdir("d/sub"), Unlink("d/f"), Rmdir("d"), Mkdir("d")),
        {"d": D(opaque=True)},
        ["M d", "D d/f", "D d/sub"],
    ),
    Case(
        "rmdir-of-dir-whose-upper-holds-only-whiteouts",
        [{"d/f": F()}],
        ok(Unlink("d/f"), Rmdir("d")),
        {"d": WH},
        ["D d"],
    ),
    Case("rmdir-non-empty-fails-untouched", [{"d/f": F()}], [(Rmdir("d"), "ENOTEMPTY")], {}, []),
    Case(
        "new-dirs-are-not-opaque",
        [{"d": D()}],
        ok(Mkdir("n"), Mkdir("d/n")),
        {"d": D(), "d/n": D(), "n": D()},
        ["M d", "A d/n", "A n"],
    ),
    Case(
        "mkdir-over-a-lower-whiteout-is-not-opaque",
        [{"w": WH}, {"w/z": F()}],
        ok(Mkdir("w")),
        {"w": D()},
        ["A w"],
    ),
    Case(
        "file-in-higher-layer-hides-dir-below",
        [{"x": F(b"file")}, {"x/deep": F(b"deep")}],
        [(WriteBytes("x/deep", b"?"), "ENOTDIR"), *ok(Unlink("x"), Mkdir("x"))],
        {"x": D(opaque=True)},
        ["M x"],
    ),
    Case(
        "dir-in-higher-layer-does-not-merge-with-file-below",
        [{"x/a": F()}, {"x": F(b"file")}],
        ok(WriteBytes("x/b", b"")),
        {"x": D(), "x/b": F()},
        ["M x", "A x/b"],
    ),
    Case(
        "whiteout-in-a-middle-layer",
        [{"top": F()}, {"d": D(), "d/a": WH}, {"d/a": F(b"hidden"), "d/b": F(b"b")}],
        [
            *ok(Unlink("d/b"), WriteBytes("d/a", b"new")),
            # d/a was hidden below, so removing it again needs no whiteout.
            *ok(Unlink("d/a")),
        ],
        {"d": D(), "d/b": WH},
        ["M d", "D d/b"],
    ),
    Case(
        "copy-up-of-an-opaque-lower-dir-is-not-opaque",
        [{"od": D(opaque=True), "od/k": F()}, {"od/under": F()}],
        ok(Chmod("od", 0o700)),
        {"od": D(0o700)},
        ["M od"],
    ),
    Case(
        "rename-of-a-lower-file",
        [{"a": F(b"A"), "b": F(b"B")}],
        ok(Rename("a", "c")),
        {"a": WH, "c": F(b"A")},
        ["D a", "A c"],
    ),
    Case(
        "rename-of-a-lower-file-over-another",
        [{"a": F(b"A"), "b": F(b"B")}],
        ok(Rename("a", "b")),
        {"a": WH, "b": F(b"A")},
        ["D a", "M b"],
    ),
    Case(
        "rename-over-a-whiteout",
        [{"a": F(b"A"), "b": F(b"B")}],
        ok(Unlink("b"), WriteBytes("c", b"C"), Rename("c", "b")),
        {"b": F(b"C")},
        ["M b"],
    ),
    Case(
        "rename-of-a-lower-dir-is-exdev",
        [{"d/f": F()}],
        [(Rename("d", "e"), "EXDEV"), (Rename("d", "d2"), "EXDEV")],
        {},
        [],
    ),
    Case(
        "rename-of-a-copied-up-dir-is-exdev",
        [{"d/f": F()}],
        [*ok(Chmod("d", 0o700)), (Rename("d", "e"), "EXDEV")],
        {"d": D(0o700)},
        ["M d"],
    ),
    Case(
        "new-dir-moved-into-a-merged-dir-becomes-opaque",
        [{"d/f": F()}],
        ok(Mkdir("n"), Mkdir("n/i"), Rename("n/i", "d/i")),
        {"d": D(), "d/i": D(opaque=True), "n": D()},
        ["M d", "A d/i", "A n"],
    ),
    Case(
        "new-dir-renamed-in-the-root-becomes-opaque",
        [{"f": F()}],
        ok(Mkdir("n"), Rename("n", "m")),
        {"m": D(opaque=True)},
        ["A m"],
    ),
    Case(
        "new-dir-renamed-inside-a-new-dir-stays-plain",
        [{"f": F()}],
        ok(Mkdir("n"), Mkdir("n/a"), Rename("n/a", "n/b")),
        {"n": D(), "n/b": D()},
        ["A n", "A n/b"],
    ),
    Case(
        "new-dir-renamed-over-an-empty-lower-dir",
        [{"e": D()}],
        ok(Mkdir("n"), WriteBytes("n/x", b""), Rename("n", "e")),
        {"e": D(opaque=True), "e/x": F()},
        ["M e", "A e/x"],
    ),
    Case(
        "failed-rename-onto-non-empty-upper-dir-still-marks-the-source-opaque",
        [{"f": F()}],
        [*ok(Mkdir("a"), WriteBytes("a/x", b""), Mkdir("b")), (Rename("b", "a"), "ENOTEMPTY")],
        {"a": D(), "a/x": F(), "b": D(opaque=True)},
        ["A a", "A a/x", "A b"],
    ),
    Case(
        "rename-errors-in-kernel-order",
        [{"d/f": F(), "g": F()}],
        [
            (Rename("d", "d/q"), "EINVAL"),  # into itself, before EXDEV
            (Rename("d/f", "d"), "ENOTEMPTY"),  # onto its own ancestor, before EISDIR
            (Rename("g", "d"), "EISDIR"),
            (Rename("d", "g"), "ENOTDIR"),  # before EXDEV
            (Rename("nope", "x"), "ENOENT"),
            (Rename("nope", "g/x"), "ENOTDIR"),  # target's parent first
        ],
        {},
        [],
    ),
    Case("rename-to-itself-copies-nothing-up", [{"a": F()}], ok(Rename("a", "a")), {}, []),
    Case(
        "link-of-a-lower-file-copies-it-up-and-shares-the-copy",
        [{"a": F(b"A")}],
        ok(Link("a", "b"), WriteBytes("b", b"B"), Chmod("a", 0o600)),
        {"a": F(b"B", 0o600), "b": F(b"B", 0o600)},
        ["M a", "A b"],
    ),
    Case(
        "rename-between-two-names-of-one-file-does-nothing",
        [{"a": F(b"A"), "d": D()}],
        ok(
            *(WriteBytes("n", b"N"), Link("n", "m"), Rename("n", "m")),
            *(Link("a", "b"), Link("a", "d/c"), Rename("b", "d/c"), Rename("a", "b")),
            *(Rename("a", "z"), Rename("z", "b")),
        ),
        {
            "a": WH,
            "b": F(b"A"),
            "d": D(),
            "d/c": F(b"A"),
            "m": F(b"N"),
            "n": F(b"N"),
            "z": F(b"A"),
        },
        ["D a", "A b", "M d", "A d/c", "A m", "A n", "A z"],
        # Unprivileged, the name a copied-up file was copied up through ("a", then "z") is
        # a different overlay inode from the names linked to it later (measured).
        unprivileged_errors={6: "ESTALE", 8: "ESTALE"},
    ),
    Case(
        "link-of-a-symlink-links-the-symlink",
        [{"s": S("t"), "t": F()}],
        ok(Link("s", "s2")),
        {"s": S("t"), "s2": S("t")},
        ["M s", "A s2"],
    ),
    Case(
        "link-errors",
        [{"d": D(), "a": F()}],
        [(Link("d", "x"), "EPERM"), (Link("d", "a"), "EEXIST"), (Link("nope", "x"), "ENOENT")],
        {},
        [],
    ),
    Case(
        "write-through-a-dangling-symlink-creates-its-target",
        [{"s": S("t")}],
        ok(WriteBytes("s", b"via")),
        {"t": F(b"via")},
        ["A t"],
    ),
    Case(
        "chmod-through-a-symlink-copies-up-the-target",
        [{"s": S("d/f"), "d/f": F()}],
        ok(Chmod("s", 0o600)),
        {"d": D(), "d/f": F(b"", 0o600)},
        ["M d", "M d/f"],
    ),
    Case(
        "operations-inside-a-symlinked-dir",
        [{"s": S("d"), "d/f": F(b"f")}],
        ok(Rename("s/f", "s/g"), Mkdir("s/n")),
        {"d": D(), "d/f": WH, "d/g": F(b"f"), "d/n": D()},
        ["M d", "D d/f", "A d/g", "A d/n"],
    ),
    Case(
        "symlink-loop",
        [{"l": S("l")}],
        [(WriteBytes("l", b""), "ELOOP"), (Mkdir("l/x"), "ELOOP"), *ok(Unlink("l"))],
        {"l": WH},
        ["D l"],
    ),
    Case(
        "type-errors",
        [{"d": D(), "f": F()}],
        [
            (Mkdir("f"), "EEXIST"),
            (Unlink("d"), "EISDIR"),
            (Rmdir("f"), "ENOTDIR"),
            (WriteBytes("d", b""), "EISDIR"),
            (WriteBytes("f/x", b""), "ENOTDIR"),
            (Truncate("d", 0), "EISDIR"),
            (Truncate("f", -1), "EINVAL"),
            (Mkdir("x/y"), "ENOENT"),
            (CreateSymlink("t", "f"), "EEXIST"),
            (Chmod("nope", 0o755), "ENOENT"),
        ],
        {},
        [],
    ),
    Case(
        "umask-applies-to-new-files-and-dirs",
        [{"d": D()}],
        ok(Mkdir("n", 0o777), WriteBytes("f", b""), Mkdir("m", 0o750)),
        {"f": F(b"", 0o600), "m": D(0o700), "n": D(0o700)},
        ["A f", "A m", "A n"],
        umask=0o077,
    ),
]


def outcome(op: Operation, fs: FileSystemOps) -> str | None:
    try:
        op.apply(fs)
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return None


def run_script(case: Case, fs: FileSystemOps) -> list[str | None]:
    return [outcome(op, fs) for op, _ in case.ops]


@pytest.mark.parametrize("unprivileged", [False, True], ids=["root", "unprivileged"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_model(case: Case, unprivileged: bool) -> None:
    lowers = [Layer.build(lower) for lower in case.lowers]
    model = UnionModel(lowers, umask=case.umask, unprivileged=unprivileged)
    assert run_script(case, model) == case.errors(unprivileged=unprivileged)
    assert model.upper() == Layer(case.upper)
    assert [str(c) for c in model.changes()] == list(case.changes)
    # Applying the upper layer bottom-up gives what the model reads top-down.
    assert squash([model.upper(), *model.lowers]) == model.merged()


# -- the same cases on the kernel -----------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kernel(case: Case) -> None:
    lowers = [Layer.build(lower) for lower in case.lowers]
    with kernel(lowers, case.umask) as system:
        assert run_script(case, system.ops) == case.errors(unprivileged=system.unprivileged)
        assert system.upper() == Layer(case.upper)
        assert [str(c) for c in system.changes() or []] == list(case.changes)
        model = UnionModel(lowers, umask=case.umask, unprivileged=system.unprivileged)
        run_script(case, model)
        assert system.merged() == model.merged()
        assert list(system.lowers()) == lowers


def test_lower_hard_links_break_on_copy_up(tmp_path: Path) -> None:
    # A Layer has no link identity, so this takes real directories: from_dirs.
    base = tmp_path / "base"
    base.mkdir()
    (base / "f").write_bytes(b"F")
    os.link(base / "f", base / "alias")
    model = UnionModel.from_dirs([base])
    model.write_bytes("f", b"new")
    assert model.merged()["alias"] == File(b"F")
    assert model.upper() == Layer({"f": File(b"new")})
    with kernel_stack([base]) as stack:
        (stack.merged / "f").write_bytes(b"new")
        assert (stack.merged / "alias").read_bytes() == b"F"
        assert read_layer(stack.upper) == model.upper()


# -- the model on its own -------------------------------------------------------------------


def test_from_dirs_reads_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    top = Layer.build({"gone": WH, "od": D(opaque=True), "od/k": F(b"k")})
    bottom = Layer.build({"gone": F(b"g"), "od/hidden": F(), "keep": F(b"keep")})
    write_layer(top, tmp_path / "top")
    write_layer(bottom, tmp_path / "bottom")
    model = UnionModel.from_dirs([tmp_path / "top", tmp_path / "bottom"])
    assert model.lowers == (top, bottom)
    assert model.merged() == Layer.build({"keep": F(b"keep"), "od/k": F(b"k")})


def test_lookup_answers_like_lstat() -> None:
    model = UnionModel([Layer.build({"d/f": F(b"x"), "s": S("d")})])
    assert model.lookup("s") == S("d")
    assert model.lookup("s/f") == F(b"x")  # a symlink before the last component is followed
    assert model.lookup("d/nope") is None
    with pytest.raises(FileNotFoundError):
        model.lookup("nope/x")
    with pytest.raises(NotADirectoryError):
        model.lookup("d/f/x")


@pytest.mark.parametrize("target", ["/etc", "../outside", "d/../../outside"])
def test_symlinks_out_of_the_tree_are_unmodelled_and_change_nothing(target: str) -> None:
    model = UnionModel([Layer.build({"d/f": F(), "out": S(target)})])
    with pytest.raises(UnmodelledError):
        model.write_bytes("out/x" if target == "/etc" else "out", b"")
    assert model.upper() == Layer()


def test_operations_reject_unnormalised_paths() -> None:
    model = UnionModel([Layer.build({"f": F()})])
    with pytest.raises(ValueError, match="normalised"):
        model.unlink("./f")
    with pytest.raises(ValueError, match="non-empty"):
        model.mkdir("")


def test_umask_is_validated() -> None:
    with pytest.raises(ValueError, match="umask"):
        UnionModel([], umask=0o1000)


def test_errors_are_the_os_subclasses_with_both_names() -> None:
    model = UnionModel([Layer.build({"a": F()})])
    with pytest.raises(FileNotFoundError) as info:
        model.rename("nope", "b")
    assert (info.value.filename, info.value.filename2) == ("nope", "b")


@given(st.data())
def test_changes_agree_with_diff_upper_on_the_models_own_upper(data: st.DataObject) -> None:
    # The model's upper layers are the realistic ones (what the kernel leaves), so this
    # checks changes.diff_upper on disk against the pure diff where it matters most.
    pool = data.draw(name_pools())
    lowers = data.draw(layer_stacks(pool))
    model = UnionModel(lowers)
    for op in data.draw(operation_sequences(lowers, pool)):
        with contextlib.suppress(OSError):
            op.apply(model)
    with tempfile.TemporaryDirectory(prefix="pytest-overlay-model-") as name:
        root = Path(name)
        write_layer(model.upper(), root / "upper")
        for index, lower in enumerate(lowers):
            write_layer(lower, root / f"lower{index}")
        paths = [root / f"lower{index}" for index in range(len(lowers))]
        assert diff_upper(root / "upper", paths) == model.changes()


class SquashMachine(UnionStateMachine):
    """Random scripts on the model alone: the upper layer it reports, applied bottom-up
    onto the lowers, must give the merged view it reports."""

    def open_system(self, lowers: Sequence[Layer], umask: int) -> ModelSystem:
        return ModelSystem(lowers, umask)

    @invariant()
    def upper_applied_to_lowers_is_merged(self) -> None:
        if self.model is not None:
            assert squash([self.model.upper(), *self.model.lowers]) == self.model.merged()


TestSquash = SquashMachine.TestCase
TestSquash.settings = settings(stateful_step_count=30)


def test_a_file_written_again_under_a_directory_made_again_is_added() -> None:
    # docs/model.rst: A means the lowers as seen through the upper layer lack the path;
    # the opaque d hides the lower d/f, so writing d/f again adds it.
    fs = UnionModel([Layer({"d": Dir(), "d/f": File(b"old"), "d/g": File(b"g")})])
    fs.unlink("d/f")
    fs.unlink("d/g")
    fs.rmdir("d")
    fs.mkdir("d", 0o755)
    fs.write_bytes("d/f", b"new")
    assert [str(c) for c in fs.changes()] == ["M d", "A d/f", "D d/g"]
