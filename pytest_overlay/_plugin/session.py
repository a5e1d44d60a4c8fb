"""Which backend this pytest session uses: the hooks, the ladder, and the cache."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from pytest_overlay._backends import ladder as _backends
from pytest_overlay._backends.protocol import AUTO, Backend
from pytest_overlay._errors import BackendUnavailable, OverlayError
from pytest_overlay._plugin import config as _config


@dataclass
class Selection:
    """The session's backend, or why there is none; computed once, on first need."""

    requested: str
    backend: Backend | None = None
    reason: str = ""
    done: bool = False
    activated: bool = False
    extra: dict[str, object] = field(default_factory=dict)


_KEY = pytest.StashKey[Selection]()


def requested_backend(config: pytest.Config) -> str:
    return _config.option(config, "overlay_backend", AUTO)


def registered_backends(config: pytest.Config) -> list[Backend]:
    """Every backend the plugins registered, in ladder order (by rank)."""
    found: dict[str, Backend] = {}
    for group in config.hook.pytest_overlay_add_backends(config=config):
        for backend in group or ():
            if not isinstance(backend, Backend):
                raise pytest.UsageError(
                    f"pytest_overlay_add_backends returned {backend!r}, which lacks the "
                    "Backend protocol (name, rank, description, deviations, probe, activate, "
                    "mount, unmount, changes)"
                )
            other = found.get(backend.name)
            if other is not None and other is not backend:
                raise pytest.UsageError(
                    f"two overlay backends are named {backend.name!r}: {other!r} and "
                    f"{backend!r}; rename one"
                )
            found[backend.name] = backend
    return sorted(found.values(), key=lambda b: b.rank)


def veto_reason(config: pytest.Config, backend: Backend) -> str | None:
    reasons = config.hook.pytest_overlay_veto_backend(config=config, backend=backend)
    return next((f"vetoed: {r}" for r in reasons if r), None)


def selection(config: pytest.Config) -> Selection:
    if _KEY not in config.stash:
        config.stash[_KEY] = Selection(requested_backend(config))
    return config.stash[_KEY]


def validate(config: pytest.Config) -> None:
    """Refuse an unknown backend name at start-up (a usage error, exit status 4)."""
    names = _backends.backend_names(registered_backends(config))
    _config.choice(config, "overlay_backend", names, flag="--overlay-backend", what="backend")


def resolve(config: pytest.Config) -> Selection:
    """Pick the session's backend (once) through the hooks and the probes."""
    chosen = selection(config)
    if chosen.done:
        return chosen
    chosen.done = True
    try:
        chosen.backend = _backends.select_backend(
            chosen.requested,
            registered_backends(config),
            veto=lambda b: veto_reason(config, b),
            choose=lambda candidates: config.hook.pytest_overlay_choose_backend(
                config=config, candidates=candidates
            ),
        )
    except BackendUnavailable as exc:
        chosen.reason = str(exc)
    except OverlayError as exc:
        raise pytest.UsageError(str(exc)) from None
    return chosen


def activate(config: pytest.Config) -> None:
    """Resolve and prepare the backend while the process is still single-threaded."""
    chosen = resolve(config)
    if chosen.backend is not None and not chosen.activated:
        chosen.activated = True
        chosen.backend.activate()


def backend_or_skip(config: pytest.Config) -> Backend:
    chosen = resolve(config)
    if chosen.backend is None:
        pytest.skip(f"pytest-overlay cannot mount here: {chosen.reason}")
    if not chosen.activated:
        activate(config)
    return chosen.backend


def is_xdist_controller(config: pytest.Config) -> bool:
    return (
        getattr(config.option, "dist", "no") != "no"
        and not hasattr(config, "workerinput")
        and bool(
            getattr(config.option, "numprocesses", None) or getattr(config.option, "tx", None)
        )
    )


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
