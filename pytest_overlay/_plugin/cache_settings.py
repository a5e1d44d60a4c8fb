"""The build cache in pytest: options, where the store lives, housekeeping, the report.

``overlay_fixture(..., build=fn, cache=True)`` keys the build (:mod:`pytest_overlay.
_cache.key`), looks the key up in the store (:mod:`pytest_overlay._cache.store`) under
its build lock, and either mounts the stored layer over the bases or builds, publishes and
uses the result. ``cache="session"`` does the same with a store in the session's basetemp,
shared by its xdist workers and by nothing else, so each session builds once however many
workers it has.

Each fixture's outcome ("built" or "cached", with its setup time) travels to the xdist
controller in the setup report's ``user_properties`` and is listed at the end of the run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, cast, final

import pytest

from pytest_overlay._errors import OverlayError
from pytest_overlay._linux import tmpfs as _tmpfs

if TYPE_CHECKING:
    # Loaded when the cache is first used: plugin.py imports this module in every session.
    from pytest_overlay._cache.store import CacheStore, Entry

__all__ = ["CacheMode", "addoption", "store_for"]

CacheMode = bool | Literal["session"]

#: A setup report's user_properties entry: (fixture, "built" | "cached", seconds, key).
PROPERTY: Final = "pytest_overlay_build"
#: One cached fixture's setup: (fixture, "built" | "cached", seconds, key, backend).
Event = tuple[str, str, float, str, str]
_EVENTS = pytest.StashKey[list[Event]]()
_PENDING = pytest.StashKey[list[Event]]()
_CLEARED = pytest.StashKey[str]()

_DEFAULT_DIR: Final = "overlay-build-cache"
#: The name the per-session Reporter is registered under.
REPORTER: Final = "pytest-overlay-build-cache"


def addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("overlay")
    group.addoption(
        "--overlay-cache-clear",
        action="store_true",
        default=False,
        help="remove every entry of the build cache (overlay_fixture(cache=True)) that no "
        "running session uses, before the tests run.",
    )
    group.addoption(
        "--overlay-cache-info",
        action="store_true",
        default=False,
        help="list the entries of the build cache (size, age, hits), then exit.",
    )
    group.addoption(
        "--overlay-cache-export",
        metavar="DIR",
        default=None,
        help="write every build cache entry to DIR as an OCI image layout, then exit.",
    )
    group.addoption(
        "--overlay-cache-import",
        metavar="DIR",
        default=None,
        help="verify and add the entries of the OCI image layout DIR to the build cache, "
        "then exit.",
    )
    parser.addini(
        "overlay_cache_dir",
        help="where the build cache lives (default: .pytest_cache/d/overlay-build-cache); "
        "relative to the configuration file's directory",
        default="",
    )
    parser.addini(
        "overlay_cache_max_size",
        help="evict least recently used build cache entries above this size (bytes, or "
        "with K, M, G; default: no limit)",
        default="",
    )


# --- where the store lives ---------------------------------------------------------------


def cache_dir(config: pytest.Config) -> Path:
    """The persistent cache directory: ``overlay_cache_dir``, or one in pytest's cache."""
    setting = str(config.getini("overlay_cache_dir") or "").strip()
    if setting:
        base = config.inipath.parent if config.inipath else config.rootpath
        return base / Path(setting).expanduser()
    cache = getattr(config, "cache", None)
    if cache is None:
        raise OverlayError(
            "the build cache lives in pytest's cache directory by default, but the "
            "cacheprovider plugin is disabled (-p no:cacheprovider): set overlay_cache_dir"
        )
    return Path(cache.mkdir(_DEFAULT_DIR))


def max_size(config: pytest.Config) -> int | None:
    setting = str(config.getini("overlay_cache_max_size") or "").strip()
    if not setting:
        return None
    try:
        return _tmpfs.parse_size(setting, 0)
    except ValueError:
        raise pytest.UsageError(
            f"overlay_cache_max_size: {setting!r} is not a size: write bytes with an "
            "optional K, M or G suffix (for example 2G)"
        ) from None


def store_for(request: pytest.FixtureRequest, mode: CacheMode) -> CacheStore:
    from pytest_overlay._cache.store import CacheStore

    config = request.config
    if mode == "session":
        factory: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
        basetemp = factory.getbasetemp()
        # An xdist worker's basetemp is <session basetemp>/popen-gwN: share the parent.
        root = basetemp.parent if hasattr(config, "workerinput") else basetemp
        return CacheStore(root / "overlay-session-cache")
    return CacheStore(cache_dir(config))


# --- the report --------------------------------------------------------------------------


def record(config: pytest.Config, event: Event) -> None:
    config.stash.setdefault(_PENDING, []).append(event)


def attach(report: pytest.TestReport, config: pytest.Config) -> None:
    """Put the outcomes of cached fixtures set up for this test into its setup report."""
    pending = config.stash.get(_PENDING, None)
    if not pending:
        return
    # A new list: report.user_properties is the item's own list, not a copy.
    report.user_properties = [*report.user_properties, *((PROPERTY, p) for p in pending)]
    pending.clear()


def collect(report: pytest.TestReport, config: pytest.Config) -> None:
    """On the controller (or a plain session): remember each outcome a report carries."""
    for name, value in report.user_properties:
        if name == PROPERTY:
            # What attach() put there; xdist may turn the tuple into a list on the way.
            label, outcome, seconds, key, backend = (
                str(v) for v in cast("Sequence[object]", value)
            )
            event = (label, outcome, float(seconds), key, backend)
            config.stash.setdefault(_EVENTS, []).append(event)


def summary_lines(config: pytest.Config) -> list[str]:
    lines: list[str] = []
    cleared = config.stash.get(_CLEARED, "")
    if cleared:
        lines.append(cleared)
    events = config.stash.get(_EVENTS, [])
    if not events:
        return lines
    built = sum(1 for e in events if e[1] == "built")
    lines.append(
        f"build cache: {built} built, {len(events) - built} cached "
        f"({', '.join(sorted({f'{e[0]} {e[1]}' for e in events}))})"
    )
    if config.getoption("verbose") > 0:
        for label, outcome, seconds, key, backend in events:
            lines.append(
                f"  {label}: {outcome} in {seconds * 1000:.1f} ms (key {key[:12]}, {backend})"
            )
    return lines


@final
class Reporter:
    """Registered per session: clears the cache at start if asked, lists outcomes at the end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        max_size(config)  # a bad value is a usage error at start-up, not at the first build

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # Here, not in pytest_configure: pytest's cache (config.cache) exists only now.
        if self.config.option.overlay_cache_clear and not hasattr(self.config, "workerinput"):
            clear_at_start(self.config)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        lines = summary_lines(self.config)
        if lines:
            terminalreporter.write_sep("-", "pytest-overlay build cache")
            for line in lines:
                terminalreporter.write_line(line)


#: The name the Collector is registered under.
COLLECTOR: Final = "pytest-overlay-build-cache-collector"


@final
class Collector:
    """Files each build outcome a setup report carries, for the summary at the end.

    A hook on every test's reports: registered only where they can carry one, in a
    process whose tests use the plugin, and in pytest-xdist's controller.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "setup" and report.user_properties:
            collect(report, self.config)


def register_collector(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(COLLECTOR):
        config.pluginmanager.register(Collector(config), COLLECTOR)


def command(config: pytest.Config) -> int | None:
    """Run ``--overlay-cache-info``, ``-export`` or ``-import`` and return the exit code."""
    option = config.option
    actions = (option.overlay_cache_info, option.overlay_cache_export, option.overlay_cache_import)
    if not any(actions):
        return None
    config._do_configure()
    try:
        if option.overlay_cache_import:
            print(import_entries(config, Path(option.overlay_cache_import)))
        if option.overlay_cache_export:
            print(export_entries(config, Path(option.overlay_cache_export)))
        if option.overlay_cache_info:
            print(info(config))
    except OverlayError as exc:
        raise pytest.UsageError(str(exc)) from None
    finally:
        config._ensure_unconfigure()
    return 0


def export_entries(config: pytest.Config, target: Path) -> str:
    from pytest_overlay._cache import transfer as _transfer
    from pytest_overlay._cache.store import CacheStore

    store = CacheStore(cache_dir(config))
    entries = store.entries()
    _transfer.export_layout(entries, target)
    return f"exported {len(entries)} build cache entries to {target} (an OCI image layout)"


def import_entries(config: pytest.Config, source: Path) -> str:
    from pytest_overlay._cache import transfer as _transfer
    from pytest_overlay._cache.store import CacheStore

    store = CacheStore(cache_dir(config))
    imported = _transfer.import_layout(store, source)
    return f"imported {len(imported)} build cache entries from {source} into {store.root}"


# --- housekeeping ------------------------------------------------------------------------


def clear_at_start(config: pytest.Config) -> None:
    """``--overlay-cache-clear``: empty the persistent store before any test runs."""
    from pytest_overlay._cache.store import CacheStore

    try:
        store = CacheStore(cache_dir(config))
    except OverlayError as exc:
        raise pytest.UsageError(f"--overlay-cache-clear: {exc}") from None
    removed, busy = store.clear()
    note = f"build cache cleared: {len(removed)} entries removed"
    if busy:
        note += f", {len(busy)} kept because another session is using them"
    config.stash[_CLEARED] = note


def _size(size: int) -> str:
    for unit, length in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= length:
            return f"{size / length:.1f} {unit}"
    return f"{size} B"


def _age(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit}"
    return f"{seconds:.0f} s"


def info(config: pytest.Config) -> str:
    """The text of ``--overlay-cache-info``."""
    from pytest_overlay._cache.store import CacheStore

    store = CacheStore(cache_dir(config))
    entries = list(reversed(store.entries()))
    now = time.time()
    total = sum(e.size for e in entries)
    limit = max_size(config)
    lines = [
        f"pytest-overlay build cache: {store.root}",
        f"{len(entries)} entries, {_size(total)}"
        + (f" (overlay_cache_max_size = {_size(limit)})" if limit else ""),
    ]
    for entry in entries:
        lines.append(_describe(entry, now))
    return "\n".join(lines)


def _describe(entry: Entry, now: float) -> str:
    return (
        f"  {entry.key[:12]}  {entry.fixture:<24} {_size(entry.size):>10}  "
        f"{entry.files} entries, built {_age(now - entry.created)} ago, "
        f"last used {_age(now - entry.last_used)} ago, {entry.hits} hits"
    )
