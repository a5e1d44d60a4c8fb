"""A session that never uses pytest-overlay runs as with ``-p no:overlay``; threads started
by other plugins make the ladder fall to a rung that works, with a warning.

Namespaces are per process, so every run here is a subprocess.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux.inherit import INHERIT_ENV
from tests.helpers import auto_backend, make_tree

pytest_plugins = ["pytester"]

# What an unrelated test can observe of the process it runs in, written to a file (under
# pytest-xdist a worker's output does not reach us).
OBSERVE = """
import json, os

def test_unrelated(worker_id):
    seen = {
        "mnt": os.readlink("/proc/self/ns/mnt"),
        "user": os.readlink("/proc/self/ns/user"),
        "passwd_uid": os.stat("/etc/passwd").st_uid,
    }
    with open("/proc/self/mountinfo") as f:
        seen["mounts"] = f.read().count(chr(10))
    with open(os.environ["OBSERVED"], "w") as f:
        json.dump(seen, f)
"""

# Records every backend the ladder looks at: a probe would call this hook first.
RECORD_SELECTION = """
import os
from pathlib import Path

def pytest_overlay_veto_backend(config, backend):
    with open(os.environ["SELECTED"], "a") as f:
        f.write(backend.name + "\\n")
    return None
"""

# Another plugin that starts a thread in pytest_configure, as pytest-rerunfailures does
# whenever pytest-xdist is installed.
THREAD_AT_CONFIGURE = """
import threading

_stop = threading.Event()

def pytest_configure(config):
    threading.Thread(target=_stop.wait, name="other-plugin", daemon=True).start()

def pytest_unconfigure(config):
    _stop.set()
"""

# A thread that runs before any plugin is configured: not even start-up can enter then.
THREAD_AT_IMPORT = """
import threading

_stop = threading.Event()
threading.Thread(target=_stop.wait, name="imported-plugin", daemon=True).start()

def pytest_unconfigure(config):
    _stop.set()
"""

OVERLAY_TEST = """
import pytest

@pytest.mark.overlay("base")
def test_mounts(overlay_stack):
    (overlay_stack.merged / "new").write_text("x")
    assert [str(c) for c in overlay_stack.changes()] == ["A new"]
    print("BACKEND", overlay_stack.backend)
"""

ordinary_user = pytest.mark.skipif(
    os.geteuid() == 0, reason="user namespaces are entered by ordinary users only"
)


def _userns_works() -> str:
    """ "" if this user can mount in a user namespace (from a fresh process), else why not."""
    return _namespace.cached_probe()


def _observe(pytester: pytest.Pytester, *args: str) -> dict[str, object]:
    out = pytester.path / "observed.json"
    out.unlink(missing_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OBSERVED", os.fspath(out))
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)
    observed: dict[str, object] = json.loads(out.read_text())
    return observed


@pytest.mark.parametrize("xdist", [False, True], ids=["plain", "xdist"])
def test_unused_plugin_leaves_the_process_alone(pytester: pytest.Pytester, xdist: bool) -> None:
    """Same namespaces, same owners, same mounts as with the plugin disabled."""
    if xdist:
        pytest.importorskip("xdist")
    pytester.makepyfile(test_unrelated=OBSERVE)
    # Without pytest-rerunfailures, whose thread would hide the namespace the controller
    # used to enter (test_rerunfailures_installed covers it).
    args = ("-p", "no:rerunfailures", *(("-n", "2") if xdist else ()))
    without = _observe(pytester, *args, "-p", "no:overlay")
    with_plugin = _observe(pytester, *args)
    assert with_plugin == without
    # The subprocesses start in whatever namespace this test process is in.
    assert without["user"] == os.readlink("/proc/self/ns/user")


def test_unused_plugin_probes_nothing(pytester: pytest.Pytester) -> None:
    """The report header of a session that mounts nothing costs no probe, no trial mount."""
    pytester.makepyfile("def test_unrelated():\n    pass\n")
    pytester.makeconftest(RECORD_SELECTION)
    selected = pytester.path / "selected"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SELECTED", os.fspath(selected))
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["overlay: backend chosen when a test first mounts*"])
    assert not selected.exists(), selected.read_text()


def test_header_names_the_backend_once_chosen(pytester: pytest.Pytester) -> None:
    """A named backend is checked at start-up, so the header can say which it is."""
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--overlay-backend=copy")
    result.stdout.fnmatch_lines(["overlay: backend copy (*"])


@ordinary_user
def test_xdist_controller_enters_the_namespace_when_the_suite_mounts(
    pytester: pytest.Pytester,
) -> None:
    pytest.importorskip("xdist")
    if why := _userns_works():
        pytest.skip(f"no user namespaces here: {why}")
    make_tree(pytester.path / "base", {"f": "f"})
    pytester.makepyfile(test_mounting=OVERLAY_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2", "-rA", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "overlay: backend userns (*); *user namespace entered at start-up "
            "(test_mounting.py uses pytest-overlay): files of unmapped owners show as nobody*"
        ]
    )


@ordinary_user
def test_xdist_controller_says_when_it_enters_nothing(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_unrelated=OBSERVE)
    out = pytester.path / "observed.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OBSERVED", os.fspath(out))
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["overlay: backend chosen when a test first mounts*overlay_userns = start enters one*"]
    )


@ordinary_user
def test_overlay_userns_start_enters_at_start_up(pytester: pytest.Pytester) -> None:
    if why := _userns_works():
        pytest.skip(f"no user namespaces here: {why}")
    pytester.makepyfile(test_unrelated=OBSERVE)
    without = _observe(pytester, "-p", "no:overlay")
    observed = _observe(pytester, "--overlay-userns=start")
    assert observed["user"] != without["user"]
    # The documented cost of entering: root's files show as the overflow uid.
    assert observed["passwd_uid"] == 65534


@ordinary_user
def test_overlay_userns_never_mounts_without_a_user_namespace(pytester: pytest.Pytester) -> None:
    make_tree(pytester.path / "base", {"f": "f"})
    pytester.makepyfile(test_mounting=OVERLAY_TEST + "\n" + OBSERVE)
    pytester.makeini("[pytest]\noverlay_userns = never\n")
    out = pytester.path / "observed.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OBSERVED", os.fspath(out))
        result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "-W", "error")
    result.assert_outcomes(passed=2)
    assert _backend_used(result) in ("fuse", "copy")
    assert json.loads(out.read_text())["user"] == os.readlink("/proc/self/ns/user")


def _backend_used(result: pytest.RunResult) -> str:
    """The backend OVERLAY_TEST printed: fuse where fusermount3 can mount from where the
    run started, else copy (inside another user namespace, as under pytest-xdist here)."""
    lines = [line for line in result.outlines if "BACKEND " in line]
    assert len(lines) == 1, result.outlines
    return lines[0].split("BACKEND ", 1)[1].split()[0]


def test_overlay_userns_rejects_unknown_values(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--overlay-userns=sometimes")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--overlay-userns / overlay_userns: unknown value 'sometimes'; choose one of: auto*"]
    )


@ordinary_user
def test_a_thread_from_another_plugin_falls_down_the_ladder(pytester: pytest.Pytester) -> None:
    if auto_backend() != "userns":
        pytest.skip("the userns rung does not work here anyway")
    make_tree(pytester.path / "base", {"f": "f"})
    pytester.makeconftest(THREAD_AT_CONFIGURE)
    pytester.makepyfile(test_mounting=OVERLAY_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", "-rA")
    # Before: skipped with "load pytest-overlay before the plugin that starts them".
    result.assert_outcomes(passed=1, warnings=1)
    used = _backend_used(result)
    assert used in ("fuse", "copy")
    result.stdout.fnmatch_lines(
        [
            "*OverlayWarning: pytest-overlay: userns cannot work in this process (the "
            "process already runs * threads (other-plugin*overlay_userns = start*); "
            f"using {used}",
        ]
    )
    # A warning filter can make the fallback a failure: the test errors at setup, and the
    # session goes on (no internal error).
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-W", "error::pytest_overlay.OverlayWarning"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["E *OverlayWarning: pytest-overlay: userns cannot work*"])
    assert "INTERNALERROR" not in result.stdout.str()
    # The fix the warning names works: the namespace is entered before the thread starts.
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-s", "-W", "error", "--overlay-userns=start"
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*BACKEND userns*"])


@ordinary_user
def test_overlay_info_tells_the_truth_about_threads(pytester: pytest.Pytester) -> None:
    if auto_backend() != "userns":
        pytest.skip("the userns rung does not work here anyway")
    pytester.makeconftest(THREAD_AT_CONFIGURE)
    result = pytester.runpytest_subprocess("--overlay-info")
    result.stdout.fnmatch_lines(["*no  userns*", "*already runs * threads (other-plugin*"])
    assert "tests that use overlay_stack mount through: userns" not in result.stdout.str()


@pytest.mark.parametrize("when", ["configure", "import"])
def test_named_backend_does_not_fall_back(pytester: pytest.Pytester, when: str) -> None:
    """--overlay-backend=NAME is prepared at start-up, before other plugins' threads, and
    is a promise: where it cannot work, that is a usage error, not another rung."""
    wanted = "kernel" if os.geteuid() == 0 else "userns"
    if auto_backend() != wanted:
        pytest.skip(f"the {wanted} rung does not work here anyway")
    make_tree(pytester.path / "base", {"f": "f"})
    pytester.makeconftest(THREAD_AT_CONFIGURE if when == "configure" else THREAD_AT_IMPORT)
    pytester.makepyfile(test_mounting=OVERLAY_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--overlay-backend={wanted}")
    if os.geteuid() == 0 or when == "configure":
        # Root's private mount namespace does not care about threads, and a thread
        # started in another plugin's pytest_configure comes too late to matter.
        result.assert_outcomes(passed=1)
    else:
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(
            ["*--overlay-backend=userns: *already runs * threads (imported-plugin*"]
        )


def test_rerunfailures_installed(pytester: pytest.Pytester) -> None:
    """The real plugin that starts a thread at configure, when both are installed."""
    pytest.importorskip("pytest_rerunfailures")
    pytest.importorskip("xdist")
    make_tree(pytester.path / "base", {"f": "f"})
    pytester.makepyfile(test_mounting=OVERLAY_TEST)
    # Loaded back explicitly: this suite keeps it out of the sessions pytester runs.
    result = pytester.runpytest_subprocess("-p", "rerunfailures", "-p", "no:cacheprovider", "-s")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["plugins: *rerunfailures*"])
    if os.geteuid() != 0 and auto_backend() == "userns":
        assert "BACKEND userns" not in result.stdout.str()
        result.stdout.fnmatch_lines(["*OverlayWarning*userns cannot work in this process*"])


def _ambient_capabilities() -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith("CapAmb:"))
    return int(line.split()[1], 16)


def test_start_up_hands_capabilities_to_xdist_workers_only(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entering at start-up outside pytest-xdist's controller gives no capability to the
    programs the tests start (it once leaked into every later subprocess)."""
    monkeypatch.delenv(INHERIT_ENV, raising=False)
    before = _ambient_capabilities()
    pytester.makepyfile("def test_unrelated():\n    pass\n")
    # In-process: whatever the start-up does, it does to this process.
    pytester.runpytest(f"--overlay-backend={auto_backend()}").assert_outcomes(passed=1)
    pytester.runpytest("--overlay-userns=start").assert_outcomes(passed=1)
    assert _ambient_capabilities() == before == 0
    assert INHERIT_ENV not in os.environ


# Written at the very end of the session, after every hook of the plugin has run.
LOADED_MODULES = """
import json, os, sys

def pytest_unconfigure(config):
    with open(os.environ["LOADED"], "w") as f:
        json.dump(sorted(sys.modules), f)
"""


def test_a_session_that_never_mounts_loads_no_mount_code(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start-up cost is mostly imports: the namespace, mount and workspace code (and ctypes
    under them) load with the first mount, not with the plugin."""
    pytester.makeconftest(LOADED_MODULES)
    pytester.makepyfile("def test_unrelated():\n    pass\n")
    loaded = tmp_path / "loaded.json"
    monkeypatch.setenv("LOADED", str(loaded))
    # Other installed plugins may load ctypes themselves: only this plugin is measured.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    # Set when this suite runs as an ordinary user under -n: a worker's namespace to adopt.
    monkeypatch.delenv(INHERIT_ENV, raising=False)
    result = pytester.runpytest_subprocess(
        "-p", "pytest_overlay.plugin", "--basetemp", str(tmp_path / "bt")
    )
    result.assert_outcomes(passed=1)
    modules = set(json.loads(loaded.read_text()))
    assert "pytest_overlay.plugin" in modules
    mounting = {
        "ctypes",
        "pytest_overlay._linux.namespace",
        "pytest_overlay._linux.syscalls",
        "pytest_overlay._linux.mount",
        "pytest_overlay._linux.workspace",
        "pytest_overlay._layers.changes",
        "pytest_overlay._plugin.protect",
        "pytest_overlay.stack",
    }
    assert modules & mounting == set()
