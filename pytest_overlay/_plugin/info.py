"""``pytest --overlay-info``: what each backend can do on this machine, and how to fix it."""

from __future__ import annotations

import os
import platform

import pytest

from pytest_overlay._linux import tmpfs as _tmpfs
from pytest_overlay._plugin import config as _config
from pytest_overlay._plugin import session as _session

_UNMAPPED = "files of unmapped owners show as nobody; overlay_userns = never opts out"


def header_line(config: pytest.Config) -> str:
    """The report-header line: the backend, if already chosen, and what start-up changed.

    It never probes: a session that mounts nothing must not pay for a trial mount. The
    backend is named once something chose it (a named backend, or pytest-xdist's
    controller preparing its workers); otherwise it is picked when a test first mounts.
    """
    chosen = _session.selection(config)
    if not chosen.done:
        text = "overlay: backend chosen when a test first mounts (see pytest --overlay-info)"
        if chosen.start_reason == "":
            text += (
                "; no user namespace entered for the pytest-xdist workers, as no test seems "
                "to use pytest-overlay (overlay_userns = start enters one)"
            )
        return text
    if chosen.backend is None:
        return f"overlay: no backend ({chosen.reason})"
    text = f"overlay: backend {chosen.backend.name} ({chosen.backend.description})"
    if chosen.fell_back:
        text += f"; {chosen.fell_back}"
    if _on_tmpfs(config, chosen.backend.name):
        text += f"; {_config.tmpfs_limits(config).describe()}"
    # Loaded by now (choosing the backend did): a session that never mounts skips it.
    from pytest_overlay._linux import namespace as _namespace

    if chosen.start_reason and _namespace.state().mode is _namespace.Mode.USERNS:
        text += f"; user namespace entered at start-up ({chosen.start_reason}): {_UNMAPPED}"
    return text


def _on_tmpfs(config: pytest.Config, backend: str) -> bool:
    # Whether workspaces may go on a tmpfs: the header says no more than it knows yet.
    return backend in _tmpfs.MOUNTING_BACKENDS and _config.workspace_setting(config) != "disk"


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
        reason = (
            chosen.refused.get(backend.name)
            or _session.veto_reason(config, backend)
            or backend.probe()
        )
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
        if _on_tmpfs(config, chosen.backend.name):
            lines.append(
                f"{_config.tmpfs_limits(config).describe()} (where a private mount "
                "namespace can hold one; overlay_tmpfs_size changes it)"
            )
    from pytest_overlay._linux import namespace as _namespace

    state = _namespace.state()
    if state.reason:
        lines.append(f"namespace: {state.reason}")
    return "\n".join(lines)
