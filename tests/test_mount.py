"""Mounting through the new mount API and classic mount(2): escaping, limits, errors."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_overlay import BackendUnavailable, OverlayError
from pytest_overlay._backends import ladder as _backends
from pytest_overlay._linux import mount as _mount
from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux.workspace import create_workspace, remove_workspace
from tests.helpers import make_tree, overlay_mounts


@pytest.fixture
def flags() -> tuple[str, ...]:
    """Mount flags for this process, after making sure it may mount at all."""
    try:
        backend = _backends.select_backend()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))
    if backend.name not in ("kernel", "userns"):
        pytest.skip(f"no kernel mount here; the {backend.name} backend would be used")
    backend.activate()  # an ordinary user enters the user namespace here
    return ("userxattr",) if backend.name == "userns" else ()


def _mounted(
    lowers: list[Path], parent: Path, flags: tuple[str, ...], new_api: bool
) -> Iterator[Path]:
    space = create_workspace(parent, lowers[0])
    with _namespace.mount_privileges():
        api = _mount.mount_overlay(
            lowers, space.upper, space.work, space.merged, flags=flags, use_new_api=new_api
        )
    assert api == ("fsopen" if new_api else "mount")
    try:
        yield space.merged
    finally:
        with _namespace.mount_privileges():
            assert _mount.unmount(space.merged)
        remove_workspace(space.root)


def _new_api() -> bool:
    # Probed with the mount capability raised, as mount_overlay does.
    with _namespace.mount_privileges():
        return _mount._new_api_supported()


def test_escape_classic() -> None:
    assert _mount.escape_classic("/a b/c:d,e\\f") == "/a b/c\\:d\\,e\\\\f"


def test_classic_options_layout() -> None:
    data = _mount.classic_options(
        [Path("/l:1"), Path("/l2")], Path("/u,p"), Path("/w"), ["userxattr", "volatile"]
    )
    assert data == "lowerdir=/l\\:1:/l2,upperdir=/u\\,p,workdir=/w,userxattr,volatile"


def test_classic_options_refuse_what_the_kernel_would_truncate() -> None:
    lowers = [Path("/" + "x" * 100 + str(i)) for i in range(60)]
    with pytest.raises(OverlayError, match=r"classic mount\(2\) only carries \d+") as info:
        _mount.classic_options(lowers, Path("/u"), Path("/w"), [])
    assert "60 lower layers" in str(info.value)


def test_too_many_layers_refused_before_mounting(tmp_path: Path) -> None:
    lowers = [tmp_path] * (_mount.MAX_LOWER_LAYERS + 1)
    with pytest.raises(OverlayError, match="at most 500"):
        _mount.mount_overlay(lowers, tmp_path, tmp_path, tmp_path)


@pytest.mark.parametrize("new_api", [True, False], ids=["fsopen", "mount2"])
def test_special_characters_in_paths(
    tmp_path: Path, flags: tuple[str, ...], new_api: bool
) -> None:
    if new_api and not _new_api():
        pytest.skip("the kernel lacks lowerdir+ (needs >= 6.8)")
    weird = tmp_path / "a b:c,d\\e"
    lowers = [make_tree(weird / "one", {"one": "1"}), make_tree(weird / "two", {"two": "2"})]
    for merged in _mounted(lowers, weird / "ws,x:y", flags, new_api):
        assert sorted(os.listdir(merged)) == ["one", "two"]
        assert any(m.endswith("merged") for m in overlay_mounts())


def test_five_hundred_layers_on_new_api(tmp_path: Path, flags: tuple[str, ...]) -> None:
    if not _new_api():
        pytest.skip("the kernel lacks lowerdir+ (needs >= 6.8)")
    lowers = [make_tree(tmp_path / f"{i:03}", {f"f{i}": ""}) for i in range(500)]
    for merged in _mounted(lowers, tmp_path / "ws", flags, True):
        assert len(os.listdir(merged)) == 500


def test_long_layer_paths_pass_through_proc_fd(tmp_path: Path, flags: tuple[str, ...]) -> None:
    if not _new_api():
        pytest.skip("the kernel lacks lowerdir+ (needs >= 6.8)")
    deep = tmp_path
    while len(os.fsencode(deep)) < 300:
        deep = deep / ("d" * 50)
    lower = make_tree(deep, {"here": "yes"})
    for merged in _mounted([lower], tmp_path / "ws", flags, True):
        assert (merged / "here").read_text() == "yes"


def test_kernel_error_is_explained(tmp_path: Path, flags: tuple[str, ...]) -> None:
    space = create_workspace(tmp_path, tmp_path)
    try:
        with pytest.raises(OSError, match="No such file"), _namespace.mount_privileges():
            _mount.mount_overlay(
                [tmp_path / "missing"], space.upper, space.work, space.merged, flags=flags
            )
    finally:
        remove_workspace(space.root)
