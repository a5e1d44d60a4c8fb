"""The mechanisms that can mount a union, behind one small protocol, and the ladder.

The built-in backends, best first: ``kernel`` (root), ``userns`` (an ordinary user in a
user namespace), ``fuse`` (fuse-overlayfs), ``copy`` (a portable copy of the base). Each is
chosen only after a real probe on this machine. Third parties add backends through the
``pytest_overlay_add_backends`` hook (see :mod:`pytest_overlay.hookspecs`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from pytest_overlay._backends.protocol import AUTO, Backend
from pytest_overlay._errors import BackendUnavailable, OverlayError


def builtin_backends() -> list[Backend]:
    """The built-in ladder, best first. Imports lazily: most sessions need one rung."""
    from pytest_overlay._backends.copy import COPY
    from pytest_overlay._backends.fuse import FUSE
    from pytest_overlay._backends.kernel import ROOT_KERNEL, USERNS_KERNEL

    return [ROOT_KERNEL, USERNS_KERNEL, FUSE, COPY]


def backend_names(backends: Iterable[Backend] | None = None) -> list[str]:
    """``auto`` and the name of every backend, for messages and validation."""
    return [AUTO, *(b.name for b in (builtin_backends() if backends is None else backends))]


#: Given a backend, return a reason to refuse it, or None (a conftest's veto).
Veto = Callable[[Backend], "str | None"]
#: Given the candidates in ladder order (not yet probed), return the preferred one or None.
Chooser = Callable[[list[Backend]], "Backend | None"]


def _check(backend: Backend, veto: Veto | None) -> str:
    return (veto(backend) if veto else None) or backend.probe()


def select_backend(
    requested: str | Backend = AUTO,
    backends: Sequence[Backend] | None = None,
    *,
    veto: Veto | None = None,
    choose: Chooser | None = None,
) -> Backend:
    """Return the backend for *requested*, or raise :class:`BackendUnavailable` saying why.

    A name takes that rung or explains why it cannot work here. ``auto`` takes the rung
    *choose* prefers, else the best one that is not vetoed and probes fine; rungs below
    the first that works are never probed.
    """
    if not isinstance(requested, str):
        return requested
    ladder = sorted(builtin_backends() if backends is None else backends, key=lambda b: b.rank)
    if requested != AUTO:
        named = [b for b in ladder if b.name == requested]
        if not named:
            raise OverlayError(
                f"unknown overlay backend {requested!r}: choose one of "
                f"{', '.join(backend_names(ladder))}"
            )
        ladder = named
    elif choose is not None:
        candidates = [b for b in ladder if not (veto and veto(b))]
        preferred = choose(candidates)
        if preferred is not None:
            ladder = [preferred]
    reasons: list[tuple[str, str]] = []
    for backend in ladder:
        reason = _check(backend, veto)
        if not reason:
            return backend
        reasons.append((backend.name, reason))
    if requested != AUTO:
        raise BackendUnavailable(f"the {requested!r} backend cannot work here: {reasons[0][1]}")
    listing = "; ".join(f"{name}: {reason}" for name, reason in reasons)
    raise BackendUnavailable(f"no backend works here ({listing})")
