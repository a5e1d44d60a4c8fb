"""Build once, run many times: the way a container image is built once and run per test.

An "install" step turns the four image layers into an installed application: it is slow
(here, a thousand files), so it runs once per session. Its result is frozen into a layer,
and every test gets its own fresh, throwaway layer on top of it, at no copying cost.

The two fixtures are declared in one line each with ``overlay_fixture``; in a real suite
they would live in ``conftest.py``. Naming the per-test one ``overlay_stack`` makes it the
stack that ``overlay_snapshot`` works on.

Run it with ``pytest examples -v``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pytest_overlay import OverlayStack, Snapshotter, overlay_fixture

INSTALLS: list[Path] = []


def install(stack: OverlayStack) -> None:
    """The expensive build: unpack an application into the image. Runs once per session."""
    INSTALLS.append(stack.merged)
    app = stack.merged / "app"
    app.mkdir()
    for n in range(1000):
        (app / f"module{n:04}.py").write_text(f"VALUE = {n}\n")
    (app / "config.ini").write_text("[app]\ndebug = false\n")
    os.chmod(app / "config.ini", 0o644)
    (stack.merged / "image-layer4.txt").unlink()  # the installer removes what it replaces


# The image layers, top-most first, installed once per session and frozen...
installed = overlay_fixture(
    "layers/image-layer1",
    "layers/image-layer2",
    "layers/image-layer3",
    "layers/image-layer4",
    scope="session",
    build=install,
)
# ...and a fresh, throwaway upper layer on that frozen state for every test.
overlay_stack = overlay_fixture("installed")


def test_every_test_starts_from_the_installed_state(overlay_stack: OverlayStack) -> None:
    app = overlay_stack.merged / "app"
    assert len(os.listdir(app)) == 1001
    assert (app / "config.ini").read_text() == "[app]\ndebug = false\n"
    assert not (overlay_stack.merged / "image-layer4.txt").exists()
    # However many tests ran before, the install ran once.
    assert len(INSTALLS) == 1


def test_change_the_config(overlay_stack: OverlayStack, overlay_snapshot: Snapshotter) -> None:
    (overlay_stack.merged / "app" / "config.ini").write_text("[app]\ndebug = true\n")
    # Only what this test did is a change; the install is part of the base.
    overlay_snapshot.assert_changed("app/config.ini")


def test_config_is_pristine_again(overlay_stack: OverlayStack) -> None:
    assert "debug = false" in (overlay_stack.merged / "app" / "config.ini").read_text()


def test_roll_back_within_a_test(
    overlay_stack: OverlayStack, overlay_snapshot: Snapshotter
) -> None:
    app = overlay_stack.merged / "app"
    (app / "plugin.py").write_text("ENABLED = True\n")
    with_plugin = overlay_snapshot()  # freeze this state: a new layer, nothing copied

    for n in range(10):
        (app / f"module{n:04}.py").unlink()
    (app / "config.ini").write_text("[app]\nbroken\n")
    assert overlay_snapshot.diff(with_plugin) != []

    overlay_snapshot.restore(with_plugin)  # everything since the snapshot is gone
    overlay_snapshot.assert_unchanged(since=with_plugin)
    assert (app / "module0000.py").exists()
    assert (app / "plugin.py").read_text() == "ENABLED = True\n"
