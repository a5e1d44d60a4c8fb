"""OverlayStack(merged=<a lower>): the union shown over its own lower directory."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_overlay import BackendUnavailable, ChangeKind, OverlayError, OverlayStack
from pytest_overlay._backends.protocol import Backend
from tests.helpers import make_tree, tree_digest

A, M, D = ChangeKind.ADD, ChangeKind.MODIFY, ChangeKind.DELETE


@pytest.fixture
def real(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "real", {"keep.txt": "keep\n", "sub": {"f": "f\n"}})


@pytest.fixture
def back_home() -> Iterator[None]:
    cwd = os.getcwd()
    yield
    os.chdir(cwd)


def _in_place(real: Path, tmp_path: Path, backend: Backend) -> OverlayStack:
    stack = OverlayStack([real], workspace=tmp_path / "ws", backend=backend, merged=real)
    if "not-a-mount-point" in backend.deviations:
        with pytest.raises(BackendUnavailable, match="use the kernel backend"):
            stack.mount()
        pytest.skip("the copy backend refuses, as tested")
    return stack.mount()


def test_writes_land_in_the_upper_and_the_real_directory_returns(
    backend: Backend, real: Path, tmp_path: Path
) -> None:
    before = tree_digest(real)
    stack = _in_place(real, tmp_path, backend)
    try:
        assert stack.in_place
        assert stack.merged == real
        subprocess.run(
            ["sh", "-c", f"echo x > {real}/new; rm -rf {real}/sub; echo y >> {real}/keep.txt"],
            check=True,
        )
        assert sorted(os.listdir(real)) == ["keep.txt", "new"]
        assert [(c.kind, c.path) for c in stack.changes()] == [
            (M, "keep.txt"),
            (A, "new"),
            (D, "sub"),
        ]
        snap = stack.snapshot()
        (real / "later").write_text("later")
        stack.restore(snap)
        assert sorted(os.listdir(real)) == ["keep.txt", "new"]
        assert [c.path for c in stack.diff()] == ["keep.txt", "new", "sub"]
    finally:
        stack.close()
    assert tree_digest(real) == before


@pytest.mark.usefixtures("back_home")
def test_a_working_directory_inside_moves_onto_the_union_and_back(
    backend: Backend, real: Path, tmp_path: Path
) -> None:
    os.chdir(real / "sub")
    stack = _in_place(real, tmp_path, backend)
    try:
        # Without the move, "f" here would be the covered directory's, and a write a
        # write to the real directory.
        Path("made-here").write_text("x")
        assert (real / "sub" / "made-here").exists()
        os.mkdir("only-in-union")
        os.chdir("only-in-union")
        stack.reset()  # remounting with the working directory inside is not busy
        assert os.getcwd() == str(real / "sub")
    finally:
        stack.close()
    assert stack.clean_unmount
    assert os.getcwd() == str(real / "sub")
    assert sorted(os.listdir(".")) == ["f"]


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(OverlayError, match="does not exist"):
        OverlayStack([tmp_path / "nope"], merged=tmp_path / "nope")


def test_a_second_lower_inside_the_path_is_refused(real: Path) -> None:
    with pytest.raises(OverlayError, match="lies inside lower layer"):
        OverlayStack([real / "sub", real], merged=real)
