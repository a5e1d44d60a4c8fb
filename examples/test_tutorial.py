"""A tutorial in test form: the classic overlayfs demonstration, one step per test.

Four read-only image layers (``layers/image-layer1`` .. ``image-layer4``) are stacked
the way a container runtime stacks an image; each test gets its own writable container
layer on top, as ``overlay_stack.upper``, and sees the union at ``overlay_stack.merged``.

Run it with ``pytest examples -v``; every step is a test you can read top to bottom.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pytest_overlay import Change, ChangeKind, OverlayStack

LAYERS = Path(__file__).parent / "layers"

# image-layer1 is the top-most lower layer, like the first entry of overlayfs's lowerdir.
pytestmark = pytest.mark.overlay(
    "layers/image-layer1", "layers/image-layer2", "layers/image-layer3", "layers/image-layer4"
)


def test_merged_view_shows_every_layer(overlay_stack: OverlayStack) -> None:
    # Step 1: a container starts. It writes its own file, which goes to its own layer.
    (overlay_stack.merged / "container-layer.txt").write_text("I am container layer\n")

    # The merged view shows all five files: four from the image, one from the container.
    assert sorted(os.listdir(overlay_stack.merged)) == [
        "container-layer.txt",
        "image-layer1.txt",
        "image-layer2.txt",
        "image-layer3.txt",
        "image-layer4.txt",
    ]
    # Only the container's own file lives in the writable (upper) layer.
    assert os.listdir(overlay_stack.upper) == ["container-layer.txt"]
    assert overlay_stack.changes() == [Change(ChangeKind.ADD, "container-layer.txt")]


def test_writing_an_image_file_copies_it_up(overlay_stack: OverlayStack) -> None:
    # Step 2: change a file that belongs to the image.
    (overlay_stack.merged / "image-layer1.txt").write_text("I am image layer1 test\n")

    # The container sees its change...
    assert (overlay_stack.merged / "image-layer1.txt").read_text() == "I am image layer1 test\n"
    # ...because the file was copied up into the writable layer and changed there...
    assert (overlay_stack.upper / "image-layer1.txt").read_text() == "I am image layer1 test\n"
    # ...while the image layer itself is unchanged.
    assert (LAYERS / "image-layer1" / "image-layer1.txt").read_text() == "I am image layer1\n"
    assert overlay_stack.changes() == [Change(ChangeKind.MODIFY, "image-layer1.txt")]


def test_deleting_an_image_file_leaves_a_whiteout(overlay_stack: OverlayStack) -> None:
    # Step 3: delete a file that belongs to a lower image layer.
    (overlay_stack.merged / "image-layer2.txt").unlink()

    # It is gone from the merged view...
    assert not (overlay_stack.merged / "image-layer2.txt").exists()
    # ...because the writable layer holds a whiteout for it: a character device 0/0...
    whiteout = os.lstat(overlay_stack.upper / "image-layer2.txt")
    assert stat.S_ISCHR(whiteout.st_mode)
    assert whiteout.st_rdev == 0
    # ...and the image layer still has the file.
    assert (LAYERS / "image-layer2" / "image-layer2.txt").read_text() == "I am image layer2\n"
    assert overlay_stack.changes() == [Change(ChangeKind.DELETE, "image-layer2.txt")]


def test_every_test_starts_from_the_pristine_image(overlay_stack: OverlayStack) -> None:
    # Step 4: the previous tests changed and deleted image files, each in a writable layer
    # of its own that was thrown away at teardown. This test sees the image as built.
    for n in range(1, 5):
        text = (overlay_stack.merged / f"image-layer{n}.txt").read_text()
        assert text == f"I am image layer{n}\n"
    assert overlay_stack.changes() == []


def test_a_subprocess_sees_the_same_union(overlay_stack: OverlayStack) -> None:
    # Step 5: the union is a real directory, so programs started by the test see it too.
    import subprocess

    subprocess.run(["rm", "image-layer3.txt"], cwd=overlay_stack.merged, check=True)
    listing = subprocess.run(
        ["ls"], cwd=overlay_stack.merged, check=True, capture_output=True, text=True
    ).stdout.split()
    assert listing == ["image-layer1.txt", "image-layer2.txt", "image-layer4.txt"]
    assert overlay_stack.changes() == [Change(ChangeKind.DELETE, "image-layer3.txt")]
