"""``pytest --overlay-info``: what each backend can do on this machine, and how to fix it."""

from __future__ import annotations

import os
import platform

import pytest

from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._plugin import session as _session


def header_line(config: pytest.Config) -> str:
    """The one report-header line naming the backend this session uses."""
    chosen = _session.resolve(config)
    if chosen.backend is None:
        return f"overlay: no backend ({chosen.reason})"
    return f"overlay: backend {chosen.backend.name} ({chosen.backend.description})"


def report(config: pytest.Config) -> str:
    """A table of every registered backend: whether it works here and, if not, why."""
    backends = _session.registered_backends(config)
    chosen = _session.resolve(config)
    who = "root" if _session.running_as_root() else f"uid {os.getuid()}"
    lines = [
        f"pytest-overlay on {platform.system()} {platform.release()}, running as {who}",
        f"requested backend: {chosen.requested}",
        "",
    ]
    width = max(len(b.name) for b in backends)
    for backend in backends:
        reason = _session.veto_reason(config, backend) or backend.probe()
        mark = "ok " if not reason else "no "
        picked = "  <- chosen" if backend is chosen.backend else ""
        lines.append(f"  {mark} {backend.name:<{width}}  {backend.description}{picked}")
        if reason:
            lines.append(f"      {'':<{width}}  {reason}")
    lines.append("")
    if chosen.backend is None:
        lines.append(f"no backend: {chosen.reason}")
    else:
        lines.append(f"tests that use overlay_stack mount through: {chosen.backend.name}")
    state = _namespace.state()
    if state.reason:
        lines.append(f"namespace: {state.reason}")
    return "\n".join(lines)
