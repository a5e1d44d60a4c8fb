"""The ways a test can get a private, writable view of a base directory, as pytest projects.

Each configuration becomes a small generated pytest project: a ``conftest.py`` with a
recorder plugin (per-test setup + call + teardown durations, taken from the reports) and
the configuration's fixture, and a test module whose N tests each append one byte to one
existing file of the base through that fixture. Plugin autoloading is off in these runs,
so every configuration loads exactly the plugin it names with ``-p``.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from bases import PROBE_FILE


@dataclass(frozen=True)
class Config:
    key: str
    label: str
    #: Plugins to load (``-p``), as module names.
    plugins: tuple[str, ...] = ()
    #: Extra pytest command-line arguments.
    args: tuple[str, ...] = ()
    #: Parameters of the test function besides ``i``.
    fixture: str = "tmp_path"
    #: Expression giving the directory that shows the base, from the fixture value.
    root: str = "tmp_path"
    #: The file the test appends to, relative to ``root``.
    rel: str = PROBE_FILE
    #: Code added to conftest.py (fixtures); ``BASE`` is defined there.
    conftest: str = ""
    #: Decorators for the test function.
    decorators: tuple[str, ...] = ()
    #: pytest.ini lines.
    ini: tuple[str, ...] = ()
    #: Whether the test module must sit next to a ``test_bench`` link to the base.
    datadir_link: bool = False
    #: A "copy" of the base whose cost grows with it (run fewer tests on big bases).
    copies: bool = False
    #: Not how the product works today: a change under evaluation, reported apart.
    proposal: str = ""


RECORDER = """\
import json
import os
import time

import pytest

BASE = {base!r}
_reports = {{}}
_clock = {{}}


def pytest_sessionstart(session):
    _clock["start"] = time.perf_counter()


def pytest_runtest_logreport(report):
    entry = _reports.setdefault(report.nodeid, {{"outcome": "passed", "phases": {{}}}})
    entry["phases"][report.when] = report.duration
    if report.outcome != "passed":
        entry["outcome"] = report.outcome
        entry["detail"] = str(report.longrepr)[-2000:]


def pytest_sessionfinish(session):
    with open(os.environ["BENCH_OUT"], "w") as f:
        json.dump(
            {{"tests": _reports, "session": time.perf_counter() - _clock["start"]}}, f
        )
"""

BARE_OVERLAY = """
import ctypes
import shutil
import tempfile
from pathlib import Path

# The same mount the kernel backend makes, with nothing around it: raw syscalls through
# ctypes (x86_64 numbers), three mkdirs, and one rmtree. With ON_TMPFS the workspaces go on
# a tmpfs mounted for the session, as the product's default puts them: each overlay row is
# compared with a bare mount on the same filesystem.
ON_TMPFS = {on_tmpfs}
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _ok(result):
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


@pytest.fixture(scope="session")
def _bare_parent(tmp_path_factory):
    _ok(_libc.unshare(0x00020000))  # CLONE_NEWNS
    _ok(_libc.mount(b"none", b"/", None, ctypes.c_ulong(0x4000 | 1 << 18), None))
    parent = tmp_path_factory.mktemp("bare")
    if ON_TMPFS:
        _ok(_libc.mount(b"tmpfs", bytes(parent), b"tmpfs", 0, b"mode=0700"))
    yield parent
    if ON_TMPFS:
        _ok(_libc.umount2(bytes(parent), 0))


@pytest.fixture
def bare_overlay(_bare_parent):
    root = tempfile.mkdtemp(dir=_bare_parent)
    upper, work, merged = root + "/upper", root + "/work", root + "/merged"
    for path in (upper, work, merged):
        os.mkdir(path)
    fs_fd = _ok(_libc.syscall(430, b"overlay", 1))  # fsopen
    for key, value in ((b"lowerdir+", BASE), (b"upperdir", upper), (b"workdir", work)):
        _ok(_libc.syscall(431, fs_fd, 1, key, value.encode(), 0))  # FSCONFIG_SET_STRING
    _ok(_libc.syscall(431, fs_fd, 0, b"volatile", None, 0))  # FSCONFIG_SET_FLAG
    _ok(_libc.syscall(431, fs_fd, 6, None, None, 0))  # FSCONFIG_CMD_CREATE
    mount_fd = _ok(_libc.syscall(432, fs_fd, 1, 0))  # fsmount
    os.close(fs_fd)
    _ok(_libc.syscall(429, mount_fd, b"", -100, merged.encode(), 4))  # move_mount
    os.close(mount_fd)
    yield Path(merged)
    _ok(_libc.umount2(merged.encode(), 0))
    shutil.rmtree(root)
"""

COPYTREE = """
import shutil


@pytest.fixture
def copied_base(tmp_path):
    return shutil.copytree(BASE, tmp_path / "base")
"""

PYFAKEFS = """
from pathlib import Path


@pytest.fixture
def fake_base(fs):
    fs.add_real_directory(BASE, read_only=False, lazy_read={lazy})
    return Path(BASE)
"""


def overlay(backend: str) -> Config:
    return Config(
        key=f"overlay-{backend}",
        label=f"pytest-overlay ({backend})",
        plugins=("pytest_overlay.plugin",),
        args=(f"--overlay-backend={backend}",),
        fixture="overlay_stack",
        root="overlay_stack.merged",
        ini=("overlay_base = {base}",),
    )


#: The pytest-datadir drop-in: pytest-datadir's datadir fixture, served as a union.
OVERLAY_DATADIR = Config(
    key="overlay-datadir",
    label="pytest-overlay datadir (overlay_datadir drop-in)",
    plugins=("pytest_overlay.plugin",),
    fixture="datadir",
    root="datadir",
    datadir_link=True,
    ini=("overlay_datadir = true",),
)
EMPTY = Config(key="empty", label="empty test (pytest's own cost)", fixture="")
#: The same empty test with the plugin loaded: what a test that does not use it pays.
EMPTY_WITH_PLUGIN = Config(
    key="empty-plugin",
    label="empty test, pytest-overlay loaded",
    plugins=("pytest_overlay.plugin",),
    fixture="",
)
PROPOSALS: tuple[Config, ...] = ()
#: The kernel backend with its workspaces on disk (the default before tmpfs workspaces).
KERNEL_ON_DISK = Config(
    key="overlay-kernel-disk",
    label="pytest-overlay (kernel), workspaces on disk",
    plugins=("pytest_overlay.plugin",),
    args=("--overlay-backend=kernel", "--overlay-workspace=disk"),
    fixture="overlay_stack",
    root="overlay_stack.merged",
    ini=("overlay_base = {base}",),
)
REFERENCE = Config(
    key="tmp_path",
    label="tmp_path, no base (reference)",
    rel="new.bin",
)
BARE = Config(
    key="bare-ctypes",
    label="bare ctypes mount+umount, tmpfs",
    fixture="bare_overlay",
    root="bare_overlay",
    conftest=BARE_OVERLAY.replace("{on_tmpfs}", "True"),
)
#: Compared with the kernel backend's disk-workspace row.
BARE_DISK = Config(
    key="bare-ctypes-disk",
    label="bare ctypes mount+umount, disk",
    fixture="bare_overlay",
    root="bare_overlay",
    conftest=BARE_OVERLAY.replace("{on_tmpfs}", "False"),
)
COMPETITORS = (
    Config(
        key="copytree",
        label="tmp_path + shutil.copytree",
        fixture="copied_base",
        root="copied_base",
        conftest=COPYTREE,
        copies=True,
    ),
    Config(
        key="datadir",
        label="pytest-datadir datadir",
        plugins=("pytest_datadir.plugin",),
        fixture="datadir",
        root="datadir",
        datadir_link=True,
        copies=True,
    ),
    Config(
        key="lazy_datadir",
        label="pytest-datadir lazy_datadir",
        plugins=("pytest_datadir.plugin",),
        fixture="lazy_datadir",
        root="lazy_datadir",
        datadir_link=True,
    ),
    Config(
        key="datafiles",
        label="pytest-datafiles",
        plugins=("pytest_datafiles",),
        fixture="datafiles",
        root="datafiles",
        decorators=("@pytest.mark.datafiles(BASE)",),
        copies=True,
    ),
    Config(
        key="pyfakefs-lazy",
        label="pyfakefs, base mapped lazily",
        plugins=("pyfakefs.pytest_plugin",),
        fixture="fake_base",
        root="fake_base",
        conftest=PYFAKEFS.format(lazy=True),
    ),
    Config(
        key="pyfakefs-eager",
        label="pyfakefs, base mapped eagerly",
        plugins=("pyfakefs.pytest_plugin",),
        fixture="fake_base",
        root="fake_base",
        conftest=PYFAKEFS.format(lazy=False),
        copies=True,
    ),
)

TEST_MODULE = """\
import os

import pytest
from conftest import BASE

N = int(os.environ.get("BENCH_N", "0"))


{decorators}@pytest.mark.parametrize("i", range(N))
def test_write(i{fixture}):
{body}
"""
WRITE = """\
    root = {root}
    with open(root / {rel!r}, "ab") as f:
        f.write(b"x")"""


def write_project(config: Config, base: Path, directory: Path) -> Path:
    """Lay out the pytest project for *config* over *base* in *directory*."""
    directory.mkdir(parents=True)
    (directory / "conftest.py").write_text(
        RECORDER.format(base=str(base)) + textwrap.dedent(config.conftest)
    )
    decorators = "".join(f"{d}\n" for d in config.decorators)
    body = WRITE.format(root=config.root, rel=config.rel) if config.fixture else "    pass"
    fixture = f", {config.fixture}" if config.fixture else ""
    (directory / "test_bench.py").write_text(
        TEST_MODULE.format(decorators=decorators, fixture=fixture, body=body)
    )
    ini = "\n".join(line.format(base=base) for line in config.ini)
    (directory / "pytest.ini").write_text(f"[pytest]\n{ini}\n")
    if config.datadir_link:
        # pytest-datadir's data directory is the test module's path without ".py".
        (directory / "test_bench").symlink_to(base, target_is_directory=True)
    return directory
