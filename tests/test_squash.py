"""Deep snapshot chains are squashed: the same view, changes and diffs on fewer layers."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from pytest_overlay import OverlayStack, Snapshot
from pytest_overlay import stack as stack_module
from pytest_overlay._chain import SQUASH_BOUND, SQUASH_CAP, SQUASH_FAN, SQUASH_LEVELS
from pytest_overlay._linux.mount import MAX_LOWER_LAYERS
from tests.helpers import make_tree, tree_digest, usable_backend

BACKENDS = ["kernel", "userns"]


def _view(root: Path) -> dict[str, tuple[object, ...]]:
    """tree_digest plus what it leaves out: file link counts and user xattrs.

    Not directory link counts: overlayfs shows 1 for a directory merged from several
    layers, and the real count for one that lives in a single layer, as squashing makes
    it (see docs/snapshots.rst).
    """
    digest = tree_digest(root)
    for rel in list(digest):
        path = root / rel
        st = os.lstat(path)
        links = 0 if stat.S_ISDIR(st.st_mode) else st.st_nlink
        xattrs = sorted(os.listxattr(path, follow_symlinks=False))
        digest[rel] = (*digest[rel], links, tuple(xattrs))
    return digest


def _step(merged: Path, n: int) -> None:
    """Change number *n* of a script that touches every kind of entry overlayfs layers hold."""
    kind = n % 8
    if kind == 0:
        (merged / f"new{n}").write_text(f"new {n}")
        (merged / f"plain{n}").write_text(f"plain {n}")
    elif kind == 1:
        with open(merged / "base.txt", "a") as f:
            f.write(f"line {n}\n")
    elif kind == 2:
        # A base directory emptied and made again: opaque in the upper layer.
        shutil.rmtree(merged / "tree")
        make_tree(merged / "tree", {f"only{n}": str(n)})
    elif kind == 3:
        # A file deleted (whiteout) and, some steps later, a directory of that name.
        target = merged / "swap"
        if target.is_dir():
            shutil.rmtree(target)
            target.write_text(f"file again {n}")
        else:
            target.unlink(missing_ok=True)
            make_tree(target, {"inside": str(n)})
    elif kind == 4:
        os.chmod(merged / "base.txt", 0o600 if n % 16 == 4 else 0o644)
        os.setxattr(merged / "base.txt", "user.step", str(n).encode())
    elif kind == 5:
        link = merged / f"link{n}"
        os.link(merged / f"new{n - 5}", link)
    elif kind == 6:
        (merged / "tree" / f"deep{n}").mkdir()
        (merged / "tree" / f"deep{n}" / "f").write_text(str(n))
        os.symlink(f"deep{n}/f", merged / "tree" / f"sym{n}")
    else:
        # Not one of two hard links: the other would keep the count of 2 its layer gives
        # it, and a squash copies only what is still visible (see docs/snapshots.rst).
        for old in sorted(merged.glob("plain*"))[:1]:
            old.unlink()


class _Outcome:
    def __init__(self) -> None:
        self.depth = 0
        self.changed_views: list[int] = []
        self.reports: list[object] = []


def _run(base: Path, workspace: Path, backend: str, steps: int) -> _Outcome:
    """Run the script, a snapshot after each step; what the stack shows along the way."""
    out = _Outcome()
    with OverlayStack([base], workspace=workspace, backend=usable_backend(backend)) as stack:
        snapshots = []
        for n in range(steps):
            _step(stack.merged, n)
            before = _view(stack.merged)
            snapshots.append(stack.snapshot())
            # Mounted again, maybe on a squashed chain: nothing may look different,
            # down to mtimes, modes, link counts and xattrs.
            if _view(stack.merged) != before:
                out.changed_views.append(n)
        _step(stack.merged, steps)
        out.depth = len(stack.lowers)
        out.reports.append([(c.path, c.kind) for c in stack.changes()])
        out.reports.append([(c.path, c.kind) for c in stack.diff()])
        for snapshot in (snapshots[-1], snapshots[steps // 2]):
            out.reports.append([(c.path, c.kind) for c in snapshot.changes()])
            out.reports.append([(c.path, c.kind) for c in snapshot.diff()])
        # Every snapshot still restores to what it was: the same names and contents.
        stack.restore(snapshots[steps // 2])
        out.reports.append(
            sorted(os.path.relpath(p, stack.merged) for p in stack.merged.rglob("*"))
        )
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_squashed_chain_shows_what_the_deep_chain_shows(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = make_tree(
        tmp_path / "base",
        {"base.txt": "base\n", "swap": "file", "tree": {"a": "a", "sub": {"b": "b"}}},
    )
    # Every level squashed, the bottom one into itself more than once, and some left over.
    steps = 2 * SQUASH_FAN**SQUASH_LEVELS + 3
    squashed = _run(base, tmp_path / "ws1", backend, steps)
    monkeypatch.setattr(stack_module, "_SQUASH_OPAQUE_XATTR", {})
    deep = _run(base, tmp_path / "ws2", backend, steps)
    assert deep.depth == steps + 1  # the reference stands on one layer per snapshot
    assert squashed.depth <= SQUASH_BOUND + 2  # and the new layer, and the base
    assert squashed.changed_views == []
    assert squashed.reports == deep.reports


@pytest.mark.parametrize("backend", BACKENDS)
def test_snapshots_alone_never_reach_the_layer_limit(tmp_path: Path, backend: str) -> None:
    base = make_tree(tmp_path / "base", {"f": "base"})
    with OverlayStack([base], workspace=tmp_path / "ws", backend=usable_backend(backend)) as stack:
        for n in range(MAX_LOWER_LAYERS + 20):
            (stack.merged / "f").write_text(str(n))
            stack.snapshot()
        assert len(stack.lowers) <= SQUASH_BOUND + 2
        assert (stack.merged / "f").read_text() == str(MAX_LOWER_LAYERS + 19)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_deep_chain_stands_on_as_few_layers_as_a_shallow_one(
    tmp_path: Path, backend: str
) -> None:
    """The pattern of benchmarks/depth_cost.py: snapshot, write, restore that snapshot.

    A snapshot stands on the chain the stack goes on with, so restoring it does not undo
    a squash; the layer count is bounded by a constant, not by log(depth).
    """
    base = make_tree(tmp_path / "base", {"b": "base"})
    untouched = tree_digest(base)
    names = {"b"}
    counts = []
    with OverlayStack([base], workspace=tmp_path / "ws", backend=usable_backend(backend)) as stack:
        for n in range(300):
            (stack.merged / f"s{n}").write_text(str(n))
            names.add(f"s{n}")
            snapshot = stack.snapshot()
            assert snapshot.layers == stack.lowers
            (stack.merged / "scratch").write_text("thrown away")
            stack.restore(snapshot)
            counts.append(len(stack.lowers))
        assert {p.name for p in stack.merged.iterdir()} == names
        assert [c.path for c in snapshot.changes()] == ["s299"]
        assert (stack.merged / "s0").read_text() == "0"
    assert max(counts) <= SQUASH_BOUND + 2  # own layers, the newest one, the base
    # Deep down the chain no more layers than in the first round of squashes, but for
    # the bottom layer that holds everything older: no growth with depth.
    cycle = SQUASH_FAN**SQUASH_LEVELS
    assert max(counts[-cycle:]) <= max(counts[:cycle]) + 1
    assert tree_digest(base) == untouched  # squashes never write to the base


@pytest.mark.parametrize("backend", BACKENDS)
def test_restoring_older_snapshots_and_going_on_stays_shallow(
    tmp_path: Path, backend: str
) -> None:
    base = make_tree(tmp_path / "base", {"f": "base"})
    snapshots: list[tuple[Snapshot, set[str]]] = []
    names: set[str] = {"f"}
    with OverlayStack([base], workspace=tmp_path / "ws", backend=usable_backend(backend)) as stack:
        for n in range(300):
            (stack.merged / f"n{n}").write_text(str(n))
            names.add(f"n{n}")
            snapshots.append((stack.snapshot(), set(names)))
            if n % 3 == 2:
                # Back to a state halfway, and on from there.
                snapshot, names = snapshots[n // 2]
                stack.restore(snapshot)
                names = set(names)
            assert {p.name for p in stack.merged.iterdir()} == names
            assert len(stack.lowers) <= SQUASH_CAP + 2


def test_a_layer_that_cannot_be_read_is_left_unsquashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_overlay import _chain

    def refuse(layers: object, destination: str, opaque: object, below: object = ()) -> None:
        # Half done, as when a directory a test left mode 000 stops an ordinary user.
        os.mkdir(destination)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_chain, "squash_layers", refuse)
    base = make_tree(tmp_path / "base", {"f": "base"})
    with OverlayStack(
        [base], workspace=tmp_path / "ws", backend=usable_backend("kernel")
    ) as stack:
        for n in range(SQUASH_FAN + 2):
            (stack.merged / "f").write_text(str(n))
            stack.snapshot()
        assert len(stack.lowers) == SQUASH_FAN + 3
        assert (stack.merged / "f").read_text() == str(SQUASH_FAN + 1)
        # One frozen layer per snapshot, and nothing left of the attempts to squash.
        layers = [p for p in stack.workspace.iterdir() if p.name.startswith("layer-")]
        assert len(layers) == SQUASH_FAN + 2


def _listed_and_found(root: Path) -> list[str]:
    """Every path a listing of *root* shows, each one looked up (lstat) as it is listed."""
    shown = []
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            os.lstat(path)  # FileNotFoundError: listed, yet not there
            shown.append(path.relative_to(root).as_posix())
    return sorted(shown)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_whiteout_that_hides_nothing_below_is_not_squashed_in(
    tmp_path: Path, backend: str
) -> None:
    """Found by the state machine: b/a made and removed again within the squashed layers,
    over a base without b. Kept in the squash, its whiteout sat in a directory that only
    the squashed layer holds, which overlayfs lists as it is: ``b`` listed ``a``, whose
    lookup failed."""
    base = make_tree(tmp_path / "base", {"kept": "k"})
    with OverlayStack([base], workspace=tmp_path / "ws", backend=usable_backend(backend)) as stack:
        merged = stack.merged
        (merged / "a").write_text("")
        (merged / "b").mkdir()
        (merged / "kept").unlink()  # a whiteout that does hide a base file
        stack.snapshot()
        (merged / "a").write_text("again")
        stack.snapshot()
        (merged / "b" / "a").mkdir()
        stack.snapshot()
        (merged / "b" / "a").rmdir()
        for _ in range(SQUASH_FAN):
            (merged / "a").write_text(str(_))
            stack.snapshot()
        assert len(stack.lowers) < 1 + 4 + SQUASH_FAN, "the chain was not squashed"
        assert _listed_and_found(merged) == ["a", "b"]
        assert os.listdir(merged / "b") == []
    assert sorted(os.listdir(base)) == ["kept"]


def test_a_squash_that_fails_unexpectedly_leaves_the_union_mounted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A squash error other than OSError (a bug) shows, but the union is mounted again
    over the unsquashed layers first: the stack stays usable and closes cleanly."""
    from pytest_overlay import _chain

    def broken(layers: object, destination: str, opaque: object, below: object = ()) -> None:
        raise RuntimeError("squash bug")

    monkeypatch.setattr(_chain, "squash_layers", broken)
    base = make_tree(tmp_path / "base", {"f": "base"})
    stack = OverlayStack([base], workspace=tmp_path / "ws", backend=usable_backend("kernel"))
    with stack:
        for n in range(SQUASH_FAN):
            (stack.merged / "f").write_text(str(n))
            stack.snapshot()
        (stack.merged / "f").write_text("last")
        with pytest.raises(RuntimeError, match="squash bug"):
            stack.snapshot()
        assert stack.mounted
        assert (stack.merged / "f").read_text() == "last"
        (stack.merged / "g").write_text("still writable")
    assert stack.clean_unmount
    assert sorted(os.listdir(base)) == ["f"]
    assert (base / "f").read_text() == "base"
