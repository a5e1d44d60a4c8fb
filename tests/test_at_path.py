"""The overlay_at marker: unions over real paths for one test, seen by subprocesses too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import make_tree, mount_points_anywhere, tree_digest, wait_until_written

pytest_plugins = ["pytester"]


@pytest.fixture
def places(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A home with ~/.config/t and a stand-in for /etc/<dir> (root's as root)."""
    home = pytester.path / "home"
    config = make_tree(home / ".config" / "t", {"settings.ini": "a = 1\n"})
    etc = make_tree(pytester.path / "etc" / "app", {"app.conf": "x\n", "conf.d": {"1": "1"}})
    monkeypatch.setenv("HOME", str(home))
    return config, etc


def test_writes_and_deletes_land_in_the_union_and_the_real_paths_stay(
    pytester: pytest.Pytester, places: tuple[Path, Path]
) -> None:
    config, etc = places
    before = tree_digest(config), tree_digest(etc)
    pytester.makepyfile(
        f"""
        import os, subprocess, pytest

        @pytest.mark.overlay_at("~/.config/t", {str(etc)!r})
        def test_it():
            subprocess.run(
                ["sh", "-c", "echo x > ~/.config/t/file; rm -rf {etc}/*"], check=True
            )
            with open(os.path.expanduser("~/.config/t/file")) as f:
                assert f.read() == "x\\n"
            assert os.listdir({str(etc)!r}) == []

        def test_after():
            assert not os.path.exists(os.path.expanduser("~/.config/t/file"))
            assert sorted(os.listdir({str(etc)!r})) == ["app.conf", "conf.d"]
        """
    )
    pytester.runpytest("--strict-markers", "-p", "no:randomly").assert_outcomes(passed=2)
    assert (tree_digest(config), tree_digest(etc)) == before
    assert not {str(config), str(etc)} & mount_points_anywhere()


def test_changes_and_the_failure_report_section(
    pytester: pytest.Pytester, places: tuple[Path, Path]
) -> None:
    config, _ = places
    pytester.makepyfile(
        """
        import os, pytest

        @pytest.mark.overlay_at("~/.config/t")
        def test_it(overlay_at):
            path = os.path.expanduser("~/.config/t")
            with open(os.path.join(path, "settings.ini"), "a") as f:
                f.write("b = 2\\n")
            (stack,) = overlay_at.values()
            assert [str(c) for c in stack.changes()] == ["M settings.ini"]
            assert stack.merged == stack.lowers[0]
            assert False, "fails on purpose"
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [f"*overlay changes at {config}*", "1 change(s) on top of the base*", "  M settings.ini"]
    )
    assert (config / "settings.ini").read_text() == "a = 1\n"


def test_a_working_directory_inside_the_path_follows_onto_the_union(
    pytester: pytest.Pytester, places: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config, _ = places
    monkeypatch.chdir(config)
    (pytester.path / "test_cwd.py").write_text(
        "import os, pytest\n"
        f"@pytest.mark.overlay_at({str(config)!r})\n"
        "def test_it():\n"
        "    open('made-in-cwd', 'w').close()\n"
        f"    assert os.path.exists({str(config / 'made-in-cwd')!r})\n"
    )
    pytester.runpytest(str(pytester.path / "test_cwd.py")).assert_outcomes(passed=1)
    assert os.listdir(config) == ["settings.ini"]
    assert os.getcwd() == str(config)


def test_nested_paths_and_imports_from_the_path(
    pytester: pytest.Pytester, places: tuple[Path, Path]
) -> None:
    config, _ = places
    (config / "helper_mod.py").write_text("VALUE = 42\n")
    pytester.makepyfile(
        f"""
        import os, sys, pytest
        sys.path.insert(0, {str(config)!r})
        sys.dont_write_bytecode = True  # else __pycache__ shows among the changes

        @pytest.mark.overlay_at("~/.config", "~/.config/t")
        def test_it(overlay_at):
            import helper_mod
            assert helper_mod.VALUE == 42
            open(os.path.expanduser("~/.config/t/inner"), "w").close()
            open(os.path.expanduser("~/.config/outer"), "w").close()
            inner = overlay_at[__import__("pathlib").Path({str(config)!r})]
            outer = overlay_at[inner.merged.parent]
            assert [str(c) for c in inner.changes()] == ["A inner"]
            assert [str(c) for c in outer.changes()] == ["A outer"]
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    if "a union inside a fuse-overlayfs union cannot be mounted" in result.stdout.str():
        result.assert_outcomes(errors=1)  # refused, saying why and what works
    else:
        result.assert_outcomes(passed=1)
    assert sorted(os.listdir(config.parent)) == ["t"]
    assert sorted(os.listdir(config)) == ["helper_mod.py", "settings.ini"]


def test_a_missing_path_is_a_clear_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import pytest\n@pytest.mark.overlay_at('no/such/dir')\ndef test_it():\n    pass\n"
    )
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*overlay_at: */no/such/dir does not exist: *create it*"])


def test_a_malformed_marker_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("import pytest\n@pytest.mark.overlay_at(3)\ndef test_it():\n    pass\n")
    result = pytester.runpytest()
    result.stderr.fnmatch_lines(["*overlay_at got 3 (int); each must be a path*"])


def test_the_copy_backend_skips_naming_what_would_work(
    pytester: pytest.Pytester, places: tuple[Path, Path]
) -> None:
    pytester.makepyfile(
        "import pytest\n@pytest.mark.overlay_at('~/.config/t')\ndef test_it():\n    pass\n"
    )
    result = pytester.runpytest("--overlay-backend=copy", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*copy backend cannot show a union over*use the kernel backend*"])


@pytest.mark.skipif(os.geteuid() == 0, reason="about an ordinary user")
def test_a_root_owned_path_as_an_ordinary_user_fails_saying_why(
    pytester: pytest.Pytester,
) -> None:
    root_owned = Path("/etc/skel")
    # In the user namespace root shows as 65534 (unmapped): another owner, either way.
    if not root_owned.is_dir() or root_owned.stat().st_uid == os.geteuid():
        pytest.skip("needs /etc/skel owned by another user")
    before = tree_digest(root_owned)
    pytester.makepyfile(
        "import pytest\n@pytest.mark.overlay_at('/etc/skel')\ndef test_it():\n    pass\n"
    )
    result = pytester.runpytest()  # userns, or fuse where user namespaces are refused
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*/etc/skel belongs to uid *, not to you*EOVERFLOW*"])
    assert tree_digest(root_owned) == before


def test_sigkill_mid_test_leaves_the_real_path_and_no_mount(
    pytester: pytest.Pytester, places: tuple[Path, Path]
) -> None:
    config, etc = places
    before = tree_digest(config), tree_digest(etc)
    ready = pytester.path / "ready"
    pytester.makepyfile(
        f"""
        import os, time, pytest

        @pytest.mark.overlay_at("~/.config/t", {str(etc)!r})
        def test_it():
            with open(os.path.expanduser("~/.config/t/settings.ini"), "a") as f:
                f.write("dirty")
            os.unlink({str(etc / "app.conf")!r})
            open({str(ready)!r}, "w").close()
            time.sleep(60)
        """
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:rerunfailures", "-q"],
        cwd=pytester.path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_written(run, ready)
    assert {str(config), str(etc)} <= mount_points_anywhere()  # mounted, in pytest's namespace
    run.send_signal(signal.SIGKILL)
    run.wait()
    # A private namespace dies with pytest; fuse-overlayfs mounted through fusermount3 (no
    # user namespace) is unmounted by pytest-overlay's watcher, a moment later.
    deadline = time.monotonic() + 10
    while {str(config), str(etc)} & mount_points_anywhere():
        assert time.monotonic() < deadline, "a mount outlived the killed pytest"
        time.sleep(0.05)
    assert (tree_digest(config), tree_digest(etc)) == before


def test_covering_the_test_directory_keeps_the_checkout_clean(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os, pytest
        pytestmark = pytest.mark.overlay_at(".")

        def test_build():
            os.makedirs(os.path.join(os.path.dirname(__file__), "build"))
            with open(os.path.join(os.path.dirname(__file__), "build", "out.txt"), "w") as f:
                f.write("out")
            assert False, "fails to show the section"
        """
    )
    before = sorted(os.listdir(pytester.path))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [f"*overlay changes at {pytester.path}*", "  A build", "  A build/out.txt"]
    )
    assert sorted(os.listdir(pytester.path)) == before
