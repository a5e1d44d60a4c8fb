"""Many layers: one limit on every backend, checked before any work, with short messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_overlay import OverlayError, OverlayStack
from pytest_overlay._backends.ladder import builtin_backends
from pytest_overlay._linux.mount import MAX_LOWER_LAYERS
from tests.helpers import make_tree, usable_backend

BACKENDS = [b.name for b in builtin_backends()]


def _layers(root: Path, n: int) -> list[Path]:
    return [make_tree(root / f"layer{i:03}", {f"f{i}": str(i)}) for i in range(n)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_more_layers_than_overlayfs_stacks_are_refused_on_every_backend(
    tmp_path: Path, backend: str
) -> None:
    layers = _layers(tmp_path / "l", MAX_LOWER_LAYERS + 1)
    with pytest.raises(OverlayError, match=f"501 lower layers.*at most {MAX_LOWER_LAYERS}"):
        OverlayStack(layers, workspace=tmp_path / "ws", backend=usable_backend(backend))
    assert not (tmp_path / "ws").exists()


def test_too_many_layers_are_refused_before_looking_at_any(tmp_path: Path) -> None:
    # None of these exist: a refusal that names the count, not a missing layer, shows that
    # no layer was resolved (or compared with another) before counting.
    missing = [tmp_path / f"missing{i}" for i in range(MAX_LOWER_LAYERS + 1)]
    with pytest.raises(OverlayError, match="501 lower layers"):
        OverlayStack(missing)


def test_snapshots_count_with_all_their_layers(tmp_path: Path) -> None:
    half = MAX_LOWER_LAYERS // 2 + 1
    a = _layers(tmp_path / "a", half)
    b = _layers(tmp_path / "b", half)
    with OverlayStack(a, workspace=tmp_path / "ws", backend="copy") as s:
        snap = s.base
        with pytest.raises(OverlayError, match=f"{2 * half} lower layers"):
            OverlayStack([snap, *b])


@pytest.mark.parametrize(
    ("order", "inner", "outer"),
    [
        (["x/y/z", "other", "x"], "x/y/z", "x"),
        (["x", "other", "x/y/z"], "x/y/z", "x"),
        (["other", "x/y", "x/y/z/w"], "x/y/z/w", "x/y"),
    ],
)
def test_nested_layers_are_found_wherever_they_stand(
    tmp_path: Path, order: list[str], inner: str, outer: str
) -> None:
    make_tree(tmp_path, {"x": {"y": {"z": {"w": {}}}}, "other": {}, "x-y": {}})
    with pytest.raises(OverlayError, match="lies inside") as caught:
        OverlayStack([tmp_path / p for p in order])
    assert str(caught.value).startswith(
        f"lower layer {tmp_path / inner} lies inside lower layer {tmp_path / outer}"
    )


def test_sibling_names_that_share_a_prefix_are_not_nested(tmp_path: Path) -> None:
    # "x-y" sorts between "x" and "x/y" as a string; as paths, none lies inside another.
    make_tree(tmp_path, {"x": {"f": "x"}, "x-y": {}, "xa": {}})
    OverlayStack([tmp_path / "x", tmp_path / "x-y", tmp_path / "xa"])


def test_a_stack_of_many_layers_has_a_short_repr_and_short_errors(tmp_path: Path) -> None:
    layers = _layers(tmp_path / "l", MAX_LOWER_LAYERS - 1)
    # The top three layers and the mount point at most, not all 499 paths (37,039 characters
    # here before the listings were capped).
    short = 6 * len(str(tmp_path / "l" / "layer000")) + 100
    with OverlayStack(layers, workspace=tmp_path / "ws", backend="copy") as s:
        assert len(repr(s)) < short
        (s.merged / "a").write_text("a")
        s.snapshot()  # the 500th layer
        (s.merged / "b").write_text("b")
        with pytest.raises(OverlayError, match="at most 500") as caught:
            s.snapshot()
        assert len(str(caught.value)) < short


def test_layer_listings_in_messages_are_capped() -> None:
    from pytest_overlay._errors import layer_list

    paths = [f"/l/{i}" for i in range(500)]
    assert layer_list(paths[:2]) == "[/l/0, /l/1]"
    assert layer_list(paths) == "[/l/0, /l/1, /l/2, ... 497 more of 500 layers]"
    # A layer the mount helper's error names is listed too, with its index.
    assert layer_list(paths, also={250}, numbered=True) == (
        "[0: /l/0, 1: /l/1, 2: /l/2, 250: /l/250, ... 496 more of 500 layers]"
    )
