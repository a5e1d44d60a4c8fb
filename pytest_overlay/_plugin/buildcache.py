"""A cached build: ``overlay_fixture(..., build=fn, cache=True)``.

The fixture's build is keyed (:mod:`pytest_overlay._cache.key`) and looked up in the store
(:mod:`pytest_overlay._cache.store`) under the key's build lock, so that of several xdist
workers or sessions that need it, one builds and the others wait and reuse. A hit mounts
the stored layer over the bases and skips the build; a miss builds, freezes the result
(``stack.snapshot``), publishes a copy and goes on with the frozen layer.
"""

from __future__ import annotations

import os
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_overlay._cache import key as _key
from pytest_overlay._errors import OverlayError, OverlayWarning
from pytest_overlay._plugin import cache_settings as _settings
from pytest_overlay._plugin.cache_settings import CacheMode
from pytest_overlay._plugin.factory import OverlayStackFactory
from pytest_overlay.snapshot import Snapshot
from pytest_overlay.stack import BaseLike, OverlayStack

__all__ = ["CachedBuild", "KeyLike", "cached_build"]

KeyLike = str | bytes | Callable[[], object] | None

#: The key each cached fixture's built state was stored under: a fixture built on it
#: keys on this instead of digesting its layers again (chains cache step by step).
_KEYS: weakref.WeakKeyDictionary[Snapshot, str] = weakref.WeakKeyDictionary()


@dataclass
class CachedBuild:
    stack: OverlayStack
    built: Snapshot
    release: Callable[[], None]


def _key_parts(layers: Sequence[BaseLike]) -> list[_key.BasePart]:
    parts: list[_key.BasePart] = []
    for layer in layers:
        if isinstance(layer, Snapshot):
            cached = _KEYS.get(layer)
            if cached is not None:
                parts.append(cached)
            else:
                parts.extend(layer.layers)
        else:
            parts.append(Path(layer))
    return parts


def cached_build(
    request: pytest.FixtureRequest,
    factory: OverlayStackFactory,
    layers: list[BaseLike],
    label: str,
    build: Callable[[OverlayStack], object],
    mode: CacheMode,
    key: KeyLike,
    content: bool,
) -> CachedBuild:
    """Mount the fixture's stack on its cached build, building and storing it on a miss."""
    started = time.perf_counter()
    store = _settings.store_for(request, mode)
    try:
        digest = _key.cache_key(
            _key_parts(layers), build, _key.user_key(key), factory.backend, content=content
        )
    except OSError as exc:
        raise OverlayError(f"cannot digest the bases to key the cache: {exc}") from None
    with store.building(digest):
        # Held from before the lookup to the end of the fixture: nobody evicts it meanwhile.
        use = store.use(digest)
        try:
            entry, why = store.lookup(digest)
            if why:
                warnings.warn(
                    OverlayWarning(
                        f"{label}: ignored the build cache entry {digest[:12]}: {why}; "
                        "building again"
                    ),
                    stacklevel=1,
                )
            if entry is not None:
                stack = factory.mount([entry.layer, *layers], name=label)
                built = stack.base
                outcome = "cached"
            else:
                stack = factory.mount(layers, name=label)
                try:
                    build(stack)
                    built = stack.snapshot(label)
                except BaseException:
                    stack.close()
                    raise
                try:
                    store.publish(digest, built.layer, label, time.perf_counter() - started)
                except OverlayError as exc:
                    # The build is done and good; only keeping it failed.
                    warnings.warn(
                        OverlayWarning(f"{label}: not stored in the build cache: {exc}"),
                        stacklevel=1,
                    )
                outcome = "built"
                limit = _settings.max_size(request.config) if mode is True else None
                if limit is not None:
                    store.evict(limit, keep=digest)
        except BaseException:
            os.close(use)
            raise
    _KEYS[built] = digest
    seconds = time.perf_counter() - started
    _settings.record(request.config, (label, outcome, seconds, digest, stack.backend))
    return CachedBuild(stack, built, lambda: os.close(use))
