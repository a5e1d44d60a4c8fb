"""The build cache: overlay_fixture(..., build=fn, cache=True) across sessions and workers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_overlay import overlay_fixture
from tests.helpers import make_tree

pytest_plugins = ["pytester"]

CONFTEST = """
import os, time
from pathlib import Path
from pytest_overlay import overlay_fixture

LOG = Path(__file__).parent / "builds.log"

def log(name):
    with open(LOG, "a") as f:
        f.write(name + "\\n")

def install(stack):
    log("install")
    if os.environ.get("BUILD_MARKER"):
        Path(os.environ["BUILD_MARKER"]).write_text("started")
    for i in range(50):
        (stack.merged / "app" / f"module{i}.py").write_text(f"value = {i}\\n")
    (stack.merged / "old.txt").unlink()
    time.sleep(float(os.environ.get("BUILD_SLEEP", "0")))
    (stack.merged / "complete").write_text("yes")

installed = overlay_fixture("data/base", scope="session", build=install, cache=CACHE, key=KEY)
app = overlay_fixture("installed")
"""

TESTS = """
import time

def check(app):
    merged = app.merged
    assert (merged / "complete").read_text() == "yes"
    assert (merged / "app" / "module49.py").read_text() == "value = 49\\n"
    assert (merged / "app" / "main.py").read_text() == "main\\n"
    assert not (merged / "old.txt").exists()
    assert not (merged / "mine").exists()
    (merged / "mine").write_text("x")

def test_a(app):
    check(app)

def test_b(app):
    check(app)
    time.sleep(0.2)  # so that under -n 2 both workers get a test

def test_c(app):
    check(app)
    time.sleep(0.2)

def test_d(app):
    check(app)
"""


def write_project(
    pytester: pytest.Pytester, *, cache: str = "True", key: str = "None", extra: str = ""
) -> None:
    make_tree(
        pytester.path / "data" / "base",
        {"app": {"main.py": "main\n"}, "old.txt": "old\n"},
    )
    conftest = CONFTEST.replace("CACHE", cache).replace("KEY", key) + extra
    (pytester.path / "conftest.py").write_text(conftest)
    (pytester.path / "test_app.py").write_text(TESTS)


def builds(pytester: pytest.Pytester) -> list[str]:
    log = pytester.path / "builds.log"
    return log.read_text().split() if log.exists() else []


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-v", *args)


def setup(result: pytest.RunResult, fixture: str) -> tuple[str, float, str]:
    """How *fixture* was set up: built or cached, in how many ms, by which backend."""
    for line in result.outlines:
        found = re.match(rf"\s+{fixture}: (built|cached) in ([0-9.]+) ms \(key \w+, (\w+)\)", line)
        if found:
            return found[1], float(found[2]), found[3]
    raise AssertionError(f"no build cache line for {fixture} in:\n{result.stdout.str()}")


def cache_root(pytester: pytest.Pytester) -> Path:
    return pytester.path / ".pytest_cache" / "d" / "overlay-build-cache"


def test_second_run_reuses_the_build_at_least_50_times_faster(pytester: pytest.Pytester) -> None:
    write_project(pytester)
    first = run(pytester, "-s")
    first.assert_outcomes(passed=4)
    assert builds(pytester) == ["install"]
    outcome, built_ms, _ = setup(first, "installed")
    assert outcome == "built"
    assert built_ms > 1000
    second = run(pytester)
    second.assert_outcomes(passed=4)
    assert builds(pytester) == ["install"], "the second run built again"
    outcome, cached_ms, backend = setup(second, "installed")
    assert outcome == "cached"
    second.stdout.fnmatch_lines(["build cache: 0 built, 1 cached (installed cached)"])
    # The goal of issue 17: a build of over a second is set up at least 50x faster. A
    # hit is a key, a check and a mount; kernel mounts take a few ms, but fuse-overlayfs
    # starts a daemon (10-60 ms measured here under load) and the copy backend copies
    # the layers, which no cache can avoid: for them a looser bound that still fails if
    # the build ran again.
    expected = 50 if backend in ("kernel", "userns") else 10
    assert built_ms / cached_ms >= expected, (built_ms, cached_ms, backend)


@pytest.fixture(autouse=True)
def _slow_build(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.name.startswith("test_second_run"):
        monkeypatch.setenv(
            "BUILD_SLEEP", "2.5"
        )  # margin: a hit may take 50 ms on a busy CI machine


def test_xdist_workers_build_once_and_share_it(pytester: pytest.Pytester) -> None:
    write_project(pytester)
    result = run(pytester, "-n", "2")
    result.assert_outcomes(passed=4)
    assert builds(pytester) == ["install"]
    assert set(re.findall(r"\[(gw\d)\]", result.stdout.str())) == {"gw0", "gw1"}
    result.stdout.fnmatch_lines(
        ["build cache: 1 built, 1 cached (installed built, installed cached)"]
    )
    run(pytester, "-n", "2").assert_outcomes(passed=4)
    assert builds(pytester) == ["install"]


def test_session_cache_builds_once_per_session_under_xdist(pytester: pytest.Pytester) -> None:
    write_project(pytester, cache='"session"')
    run(pytester, "-n", "2").assert_outcomes(passed=4)
    assert builds(pytester) == ["install"]
    # Nothing is kept for the next session: it builds again, once.
    run(pytester, "-n", "2").assert_outcomes(passed=4)
    assert builds(pytester) == ["install", "install"]
    assert not cache_root(pytester).exists()


def test_a_change_of_base_build_source_or_key_rebuilds(pytester: pytest.Pytester) -> None:
    write_project(pytester, key='"v1"')
    run(pytester).assert_outcomes(passed=4)
    run(pytester).assert_outcomes(passed=4)
    assert len(builds(pytester)) == 1
    # A base file's content (size and mtime) changes.
    (pytester.path / "data" / "base" / "app" / "main.py").write_text("main\n")
    os.utime(pytester.path / "data" / "base" / "app" / "main.py", ns=(1, 1))
    run(pytester).assert_outcomes(passed=4)
    assert len(builds(pytester)) == 2
    # The build function's source changes (a comment is enough: the source is keyed).
    conftest = pytester.path / "conftest.py"
    conftest.write_text(conftest.read_text().replace('log("install")', 'log("install")  # v2'))
    run(pytester).assert_outcomes(passed=4)
    assert len(builds(pytester)) == 3
    # The key changes.
    conftest.write_text(conftest.read_text().replace('key="v1"', 'key="v2"'))
    run(pytester).assert_outcomes(passed=4)
    assert len(builds(pytester)) == 4
    # And nothing changes: cached.
    run(pytester).assert_outcomes(passed=4)
    assert len(builds(pytester)) == 4


def test_a_callable_key_is_called_each_session(pytester: pytest.Pytester) -> None:
    write_project(pytester, key="lambda: (Path(__file__).parent / 'lock.txt').read_bytes()")
    (pytester.path / "lock.txt").write_text("deps 1")
    run(pytester).assert_outcomes(passed=4)
    run(pytester).assert_outcomes(passed=4)
    assert len(builds(pytester)) == 1
    (pytester.path / "lock.txt").write_text("deps 2")
    run(pytester).assert_outcomes(passed=4)
    assert len(builds(pytester)) == 2


def test_sigkill_during_a_build_leaves_no_entry_that_is_used(pytester: pytest.Pytester) -> None:
    write_project(pytester)
    marker = pytester.path / "marker"
    env = {**os.environ, "BUILD_SLEEP": "60", "BUILD_MARKER": str(marker)}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "pytester", str(pytester.path)],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the inner run ended before building"
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.05)
        # Let the build write part of its files, then kill it mid-build.
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert builds(pytester) == ["install"]
    assert not list((cache_root(pytester) / "entries").iterdir())
    result = run(pytester)
    result.assert_outcomes(passed=4)
    assert builds(pytester) == ["install", "install"]
    assert setup(result, "installed")[0] == "built"
    assert len(list((cache_root(pytester) / "entries").iterdir())) == 1
    # What the killed build left in tmp/ was removed by the next builder of that key.
    assert not list((cache_root(pytester) / "tmp").iterdir())


def test_a_damaged_entry_is_ignored_and_rebuilt(pytester: pytest.Pytester) -> None:
    write_project(pytester)
    run(pytester).assert_outcomes(passed=4)
    (entry,) = (cache_root(pytester) / "entries").iterdir()
    (entry / "layer" / "app" / "module49.py").write_text("value = 666\n")
    result = run(pytester)
    result.assert_outcomes(passed=4, warnings=1)
    result.stdout.fnmatch_lines(
        ["*installed: ignored the build cache entry *: its layer does not match its digest*"]
    )
    assert len(builds(pytester)) == 2
    run(pytester).assert_outcomes(passed=4)
    assert len(builds(pytester)) == 2


def test_an_entry_for_another_key_is_refused(pytester: pytest.Pytester) -> None:
    write_project(pytester)
    run(pytester).assert_outcomes(passed=4)
    (entry,) = (cache_root(pytester) / "entries").iterdir()
    meta = json.loads((entry / "meta.json").read_text())
    meta["key"] = "0" * 64
    (entry / "meta.json").write_text(json.dumps(meta))
    result = run(pytester)
    result.assert_outcomes(passed=4, warnings=1)
    result.stdout.fnmatch_lines(["*its meta.json is for another key or cache format*"])
    assert len(builds(pytester)) == 2


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_entries_and_cache_dirs_of_another_user_are_refused(pytester: pytest.Pytester) -> None:
    write_project(pytester)
    run(pytester).assert_outcomes(passed=4)
    (entry,) = (cache_root(pytester) / "entries").iterdir()
    os.chown(entry, 4242, 4242)
    result = run(pytester)
    result.assert_outcomes(passed=4, warnings=1)
    result.stdout.fnmatch_lines(["*owned by uid 4242, not by this user*"])
    assert len(builds(pytester)) == 2
    os.chown(cache_root(pytester), 4242, 4242)
    result = run(pytester)
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(["*the build cache directory * belongs to uid 4242*"])


def test_the_cache_directory_is_private(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\noverlay_cache_dir = my-cache\n")
    write_project(pytester)
    run(pytester).assert_outcomes(passed=4)
    assert (pytester.path / "my-cache" / "entries").is_dir()
    assert (pytester.path / "my-cache").stat().st_mode & 0o777 == 0o700
    assert not cache_root(pytester).exists()


def test_clear_and_info(pytester: pytest.Pytester) -> None:
    write_project(pytester)
    run(pytester).assert_outcomes(passed=4)
    run(pytester).assert_outcomes(passed=4)
    info = pytester.runpytest_subprocess("--overlay-cache-info")
    assert info.ret == 0
    info.stdout.fnmatch_lines(
        [
            "pytest-overlay build cache: *overlay-build-cache",
            "1 entries, *",
            "  * installed *1 hits",
        ]
    )
    result = run(pytester, "--overlay-cache-clear")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["build cache cleared: 1 entries removed", "*1 built*"])
    assert len(builds(pytester)) == 2
    assert info.stdout.str().count("installed") == 1


EVICTION = """
def other(stack):
    log("other")
    (stack.merged / "big").write_bytes(b"x" * 300_000)

other_built = overlay_fixture("data/base", scope="session", build=other, cache=True)
"""


def test_least_recently_used_entries_are_evicted_over_the_limit(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\noverlay_cache_max_size = 400K\n")
    write_project(pytester, extra=EVICTION)
    (pytester.path / "test_other.py").write_text("def test_other(other_built): pass\n")
    run(pytester, "test_app.py").assert_outcomes(passed=4)
    time.sleep(0.05)
    # Building "other" takes the cache over 400K: the older "install" entry goes.
    run(pytester, "test_other.py").assert_outcomes(passed=1)
    run(pytester, "test_app.py").assert_outcomes(passed=4)
    assert builds(pytester) == ["install", "other", "install"]
    entries = pytester.runpytest_subprocess("--overlay-cache-info")
    entries.stdout.fnmatch_lines(["1 entries, * (overlay_cache_max_size = 400.0 KiB)"])


def test_export_and_import_as_an_oci_layout(pytester: pytest.Pytester, tmp_path: Path) -> None:
    write_project(pytester)
    run(pytester).assert_outcomes(passed=4)
    layout = tmp_path / "layout"
    exported = pytester.runpytest_subprocess(f"--overlay-cache-export={layout}")
    exported.stdout.fnmatch_lines(["exported 1 build cache entries to *"])
    index = json.loads((layout / "index.json").read_text())
    (image,) = index["manifests"]
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    pytester.runpytest_subprocess("--overlay-cache-clear", "--co")
    assert not list((cache_root(pytester) / "entries").iterdir())
    imported = pytester.runpytest_subprocess(f"--overlay-cache-import={layout}")
    imported.stdout.fnmatch_lines(["imported 1 build cache entries from *"])
    result = run(pytester)
    result.assert_outcomes(passed=4)
    assert setup(result, "installed")[0] == "cached"
    key = image["annotations"]["org.opencontainers.image.ref.name"]
    assert f"(key {key[:12]}, " in result.stdout.str()


def test_import_refuses_a_tampered_layer(pytester: pytest.Pytester, tmp_path: Path) -> None:
    write_project(pytester)
    run(pytester).assert_outcomes(passed=4)
    layout = tmp_path / "layout"
    pytester.runpytest_subprocess(f"--overlay-cache-export={layout}")
    manifest_digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest[7:]).read_text())
    blob = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    data = bytearray(blob.read_bytes())
    data[600] ^= 1
    blob.write_bytes(bytes(data))
    result = pytester.runpytest_subprocess(f"--overlay-cache-import={layout}")
    assert result.ret != 0
    result.stderr.fnmatch_lines(["*layer of *: blob * does not match its digest or size*"])


CHAIN = """
def configure(stack):
    log("configure")
    (stack.merged / "configured").write_text("yes")

configured = overlay_fixture("installed", scope="session", build=configure, cache=True)
"""


def test_a_chain_of_cached_fixtures_caches_step_by_step(pytester: pytest.Pytester) -> None:
    write_project(pytester, extra=CHAIN)
    (pytester.path / "test_chain.py").write_text(
        "def test_chain(configured):\n"
        "    assert (configured.merged / 'configured').read_text() == 'yes'\n"
        "    assert (configured.merged / 'complete').read_text() == 'yes'\n"
    )
    run(pytester, "test_chain.py").assert_outcomes(passed=1)
    run(pytester, "test_chain.py").assert_outcomes(passed=1)
    assert builds(pytester) == ["install", "configure"]
    # Only the upper step's source changes: the lower step stays cached.
    conftest = pytester.path / "conftest.py"
    conftest.write_text(conftest.read_text().replace('log("configure")', 'log("configure")  #'))
    run(pytester, "test_chain.py").assert_outcomes(passed=1)
    assert builds(pytester) == ["install", "configure", "configure"]
    # The base changes: both steps build again.
    (pytester.path / "data" / "base" / "new").write_text("n")
    run(pytester, "test_chain.py").assert_outcomes(passed=1)
    assert builds(pytester) == ["install", "configure", "configure", "install", "configure"]


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="pass the build function too"):
        overlay_fixture("data", cache=True)
    with pytest.raises(ValueError, match="give True"):
        overlay_fixture("data", build=print, cache="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="only matter with cache=True"):
        overlay_fixture("data", build=print, key="k")


def test_a_bad_max_size_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\noverlay_cache_max_size = lots\n")
    write_project(pytester)
    result = run(pytester)
    result.stderr.fnmatch_lines(["*overlay_cache_max_size: 'lots' is not a size*"])


def test_the_fast_digest_sees_metadata_and_the_content_digest_sees_data(tmp_path: Path) -> None:
    from pytest_overlay._layers.digest import tree_digest

    tree = make_tree(tmp_path / "t", {"a": "one", "d": {"b": "two"}, "l": ("symlink", "a")})
    fast, full = tree_digest(tree), tree_digest(tree, content=True)
    st = (tree / "a").stat()
    # Same size, mtime restored: only the content digest can tell.
    (tree / "a").write_text("ONE")
    os.utime(tree / "a", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert tree_digest(tree) == fast
    assert tree_digest(tree, content=True) != full
    (tree / "d" / "b").chmod(0o600)
    assert tree_digest(tree) != fast
    (tree / "l").unlink()
    (tree / "l").symlink_to("d")
    changed = tree_digest(tree)
    os.utime(tree, ns=(1, 1))  # the root's own mtime is not part of it
    assert tree_digest(tree) == changed
