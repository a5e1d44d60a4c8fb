"""``--overlay-protect``: its options, the checked paths, and the report-header line.

What every session reads at start-up, kept apart from the unions themselves
(:mod:`.protect`), which are loaded only when some path is given.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_overlay._plugin import session as _session

PATHS = pytest.StashKey[list[Path]]()


def addoption(parser: pytest.Parser) -> None:
    parser.getgroup("overlay").addoption(
        "--overlay-protect",
        dest="overlay_protect",
        action="append",
        default=[],
        metavar="PATH",
        help="make directory PATH copy-on-write for the whole session (repeatable): the "
        "suite's writes there land in a throwaway layer, the real directory is never "
        "touched, and the terminal summary lists them per test. Replaces the ini "
        "overlay_protect.",
    )
    parser.addini(
        "overlay_protect",
        type="linelist",
        help="directories copy-on-write for the whole session, one per line, relative "
        "to the configuration file's directory (see --overlay-protect)",
    )
    parser.addini(
        "overlay_protect_strict",
        type="bool",
        default=False,
        help="fail the session when it wrote into a protected path (false)",
    )


def paths(config: pytest.Config) -> list[Path]:
    """The protected directories, checked; a usage error names a bad one and the fix."""
    if PATHS in config.stash:
        return config.stash[PATHS]
    given: list[str] = config.getoption("overlay_protect", None) or []
    if given:
        start, flag = config.invocation_params.dir, "--overlay-protect"
    else:
        given = config.getini("overlay_protect")
        start = config.inipath.parent if config.inipath else config.rootpath
        flag = "overlay_protect"
    found: list[Path] = []
    for raw in given:
        path = Path(os.path.abspath(start / Path(raw).expanduser()))
        if not path.is_dir():
            what = "does not exist" if not path.exists() else "is not a directory"
            raise pytest.UsageError(
                f"{flag} {raw}: {path} {what}; name an existing directory (relative paths "
                f"resolve against {start})"
            )
        path = path.resolve()
        if path == Path(path.anchor):
            raise pytest.UsageError(
                f"{flag} {raw}: the root of the filesystem cannot be protected (it holds "
                "pytest's own temporary files and /proc); name the checkout or data directory"
            )
        found.append(path)
    found = sorted(dict.fromkeys(found), key=lambda p: len(p.parts))
    basetemp = config.option.basetemp
    for path in found:
        if basetemp and Path(os.path.abspath(basetemp)).resolve().is_relative_to(path):
            raise pytest.UsageError(
                f"--basetemp={basetemp} lies inside the protected {path}: pytest-overlay's "
                "workspaces and the tests' tmp_path must be on the real disk; choose a "
                "basetemp outside it (the default, under the system temporary directory, is)"
            )
    config.stash[PATHS] = found
    return found


def strict(config: pytest.Config) -> bool:
    return bool(config.getini("overlay_protect_strict"))


def header(config: pytest.Config) -> str | None:
    found = config.stash.get(PATHS, [])
    if not found:
        return None
    return (
        f"overlay: protected for this session (copy-on-write, listed at the end): "
        f"{', '.join(map(str, found))}; written there for real: the cache directory, "
        "--junitxml, .coverage*; not listed: __pycache__"
        + ("; overlay_protect_strict: a write fails the session" if strict(config) else "")
    )


def shared_namespace(backend: str) -> str:
    return (
        f"--overlay-protect under pytest-xdist: the {backend} backend mounts in the "
        "machine's own mount namespace here (no user namespace), where the workers' unions "
        "over the same path would stack on one another; run without -n, or as root, or "
        "where user namespaces are allowed"
    )


def check_xdist(config: pytest.Config) -> None:
    """In pytest-xdist's controller, after start-up chose the namespace: refuse what the
    workers could not do (a worker's usage error would only make xdist restart it)."""
    if not config.stash.get(PATHS, []) or not _session.is_xdist_controller(config):
        return
    from pytest_overlay._linux import namespace as _namespace

    if _session.running_as_root() or _namespace.state().mode is _namespace.Mode.USERNS:
        return
    chosen = _session.resolve(config)
    raise pytest.UsageError(shared_namespace(chosen.backend.name if chosen.backend else "no"))
