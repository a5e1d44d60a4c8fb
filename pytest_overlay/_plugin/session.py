"""Which backend this pytest session uses: the hooks, the ladder, and the cache."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import pytest

from pytest_overlay._backends import ladder as _backends
from pytest_overlay._backends.protocol import AUTO, Backend
from pytest_overlay._errors import BackendUnavailable, OverlayError, OverlayWarning
from pytest_overlay._plugin import config as _config

# The namespace code (and ctypes under it) is imported by the functions that pick or
# prepare a backend: a session that never mounts reads only the selection above them.


@dataclass
class Selection:
    """The session's backend, or why there is none; computed once, on first need."""

    requested: str
    backend: Backend | None = None
    reason: str = ""
    done: bool = False
    activated: bool = False
    extra: dict[str, object] = field(default_factory=dict)
    #: Backends that probed fine but could not work once activated, with why.
    refused: dict[str, str] = field(default_factory=dict)
    #: What fell down the ladder and why, for the report header ("" if nothing did).
    fell_back: str = ""
    warned: bool = False
    #: Decided at start-up, before collection: why the user namespace was entered then,
    #: "" when the session showed no use of the plugin, None when not decided then.
    start_reason: str | None = None


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
    if requested_backend(config) == AUTO:
        return  # nothing to check: no need to load every backend module at start-up
    names = _backends.backend_names(registered_backends(config))
    _config.choice(config, "overlay_backend", names, flag="--overlay-backend", what="backend")


def resolve(config: pytest.Config) -> Selection:
    """Pick the session's backend (once) through the hooks and the probes."""
    chosen = selection(config)
    if chosen.done:
        return chosen
    chosen.done = True
    from pytest_overlay._linux import namespace as _namespace

    if running_as_root() and _namespace.state().mode is _namespace.Mode.NONE:
        # Before the kernel backend's trial mount, so that even it cannot outlive us.
        _namespace.enter_private_mount_namespace()
    _select(config, chosen)
    return chosen


def _select(config: pytest.Config, chosen: Selection) -> None:
    from pytest_overlay._linux import namespace as _namespace

    refused = chosen.refused

    def veto(backend: Backend) -> str | None:
        return refused.get(backend.name) or veto_reason(config, backend)

    backends = registered_backends(config)
    try:
        chosen.backend = _backends.select_backend(
            chosen.requested,
            backends,
            veto=veto,
            choose=lambda candidates: config.hook.pytest_overlay_choose_backend(
                config=config, candidates=candidates
            ),
        )
    except BackendUnavailable as exc:
        chosen.reason = str(exc)
    except OverlayError as exc:
        raise pytest.UsageError(str(exc)) from None
    if chosen.requested == AUTO:
        # A rung that works on this machine but not in this process, because another
        # plugin started a thread before pytest-overlay needed the user namespace: the
        # user should hear why the session mounts with something slower.
        below = chosen.backend.rank if chosen.backend else None
        for backend in backends:
            if below is not None and backend.rank >= below:
                break
            reason = chosen.refused.get(backend.name) or backend.probe()
            if _namespace.SINGLE_THREADED in reason:
                _fall_back(chosen, backend.name, reason)
                break


def _fall_back(chosen: Selection, name: str, reason: str) -> None:
    # Said by backend_or_skip, in the setup of the first test that mounts: there the
    # warning belongs to a test, and -W error turns it into that test's error instead of
    # an internal error of the collection.
    instead = chosen.backend.name if chosen.backend else "none (tests that mount skip)"
    chosen.fell_back = f"{name} cannot work in this process ({reason}); using {instead}"


def activate(config: pytest.Config) -> None:
    """Resolve and prepare the backend while the process is still single-threaded.

    A backend that cannot work once activated (the userns rung, when another plugin has
    started a thread since the probe) gives way to the next rung that works, with an
    :class:`~pytest_overlay.OverlayWarning` saying why; a backend named by the user
    does not, and the tests that need it skip with the reason.
    """
    chosen = resolve(config)
    while chosen.backend is not None and not chosen.activated:
        backend = chosen.backend
        backend.activate()
        reason = backend.probe()
        if not reason:
            chosen.activated = True
            return
        chosen.refused[backend.name] = reason
        chosen.backend = None
        chosen.reason = f"the {backend.name!r} backend cannot work here: {reason}"
        if chosen.requested != AUTO:
            return
        _select(config, chosen)
        if not chosen.fell_back:
            _fall_back(chosen, backend.name, reason)


def start_userns(config: pytest.Config, why: str) -> None:
    """Activate the backend at start-up (an ordinary user's process, still single-threaded)
    and, in pytest-xdist's controller, let the workers inherit what it entered."""
    chosen = selection(config)
    chosen.start_reason = why
    activate(config)
    if is_xdist_controller(config):
        from pytest_overlay._linux import namespace as _namespace

        # Only there: it hands the mount capability to every program started from now on
        # (as ambient capabilities), which the workers must get and nothing else should.
        _namespace.prepare_children()


def backend_or_skip(config: pytest.Config) -> Backend:
    chosen = resolve(config)
    if chosen.fell_back and not chosen.warned:
        chosen.warned = True
        warnings.warn(OverlayWarning(f"pytest-overlay: {chosen.fell_back}"), stacklevel=2)
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
