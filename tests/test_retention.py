"""Keeping upper layers of failed tests, and the 'overlay changes' report section."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from pytest_overlay import Change, ChangeKind
from pytest_overlay._plugin.retention import REPORT_LIMIT, Keeper, eoverflow_note, report_section
from tests.helpers import make_tree

pytest_plugins = ["pytester"]

SUITE = """
import pytest

pytestmark = pytest.mark.overlay("base")

@pytest.mark.parametrize("n", range(4))
def test_fails(overlay_stack, n):
    (overlay_stack.merged / "f.txt").write_text(f"broken {n}")
    (overlay_stack.merged / "made").write_text("new")
    assert False, "boom"

def test_passes(overlay_stack):
    (overlay_stack.merged / "made").write_text("new")
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    make_tree(pytester.path / "base", {"f.txt": "f"})
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def _kept(pytester: pytest.Pytester) -> list[Path]:
    root = pytester.path / "bt" / "overlay-kept"
    return sorted(root.iterdir()) if root.exists() else []


def test_failure_report_lists_changes_and_the_kept_layer(project: pytest.Pytester) -> None:
    result = project.runpytest(f"--basetemp={project.path / 'bt'}")
    result.assert_outcomes(failed=4, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*- overlay changes -*",
            "2 change(s) on top of the base (A added, M modified, D deleted):",
            "  M f.txt",
            "  A made",
            f"upper layer kept at: {project.path / 'bt' / 'overlay-kept'}/test_fails_*",
        ]
    )
    # Default policy 'failed', count 3: the three most recent failures are kept.
    kept = _kept(project)
    assert [p.name for p in kept] == ["test_fails_1_", "test_fails_2_", "test_fails_3_"]
    assert (kept[0] / "f.txt").read_text() == "broken 1"
    assert (project.path / "base" / "f.txt").read_text() == "f"


def test_keep_all_and_count(project: pytest.Pytester) -> None:
    project.makeini("[pytest]\noverlay_retention_count = 10\n")
    project.runpytest(f"--basetemp={project.path / 'bt'}", "--overlay-keep=all")
    assert [p.name for p in _kept(project)] == [
        "test_fails_0_",
        "test_fails_1_",
        "test_fails_2_",
        "test_fails_3_",
        "test_passes",
    ]


def test_keep_none(project: pytest.Pytester) -> None:
    result = project.runpytest(f"--basetemp={project.path / 'bt'}", "--overlay-keep=none")
    result.stdout.fnmatch_lines(["*the upper layer is deleted at teardown (keep it with*"])
    assert _kept(project) == []
    assert list((project.path / "bt" / "overlay").iterdir()) == []


def test_bad_policy_and_count_are_usage_errors(project: pytest.Pytester) -> None:
    result = project.runpytest("--overlay-keep=some")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown policy 'some'; choose one of: failed, all, none*"])
    project.makeini("[pytest]\noverlay_retention_count = -1\n")
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*overlay_retention_count: '-1' is not a whole number*"])


def test_report_section_is_capped() -> None:
    changes = [Change(ChangeKind.ADD, f"f{i:03}") for i in range(REPORT_LIMIT + 7)]
    text = report_section(changes, Path("/kept"))
    assert text.splitlines()[REPORT_LIMIT] == f"  A f{REPORT_LIMIT - 1:03}"
    assert "... and 7 more" in text
    assert text.endswith("upper layer kept at: /kept")


def test_keeper_drops_the_oldest(tmp_path: Path) -> None:
    keeper = Keeper("all", 2, tmp_path / "kept")
    paths = []
    for name in ("a", "b", "c"):
        path = keeper.destination(name)
        make_tree(path, {"x": name})
        keeper.kept(path)
        paths.append(path)
    assert [p.exists() for p in paths] == [False, True, True]
    assert keeper.destination("b") == tmp_path / "kept" / "b-2"
    assert not Keeper("failed", 0, tmp_path).wants(True)
    assert Keeper("failed", 1, tmp_path).wants(True)
    assert not Keeper("failed", 1, tmp_path).wants(False)
    assert set(os.listdir(tmp_path / "kept")) == {"b", "c"}


def _readable_by_nobody(path: Path) -> bool:
    """Whether uid/gid 65534 (a second local user) can read *path* (needs root)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            path.read_bytes()
        except OSError:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


SECRET_SUITE = """
import pytest

@pytest.mark.overlay("base")
def test_writes_a_credential(overlay_stack):
    (overlay_stack.merged / "token").write_text("s3cret")
    assert False
"""


# "auto" puts the workspace on a tmpfs wherever one can be mounted (the kept layer is
# then copied off it); "disk" keeps it on disk (the layer is moved).
@pytest.mark.parametrize("workspace", ["auto", "disk"])
def test_kept_layers_are_private_to_their_owner(pytester: pytest.Pytester, workspace: str) -> None:
    # A kept upper holds whatever the test wrote (credentials in fixtures, say): other
    # local users must not read it, whether it was moved or copied off the tmpfs, and
    # even where the basetemp above it is open to them.
    make_tree(pytester.path / "base", {"f.txt": "f"})
    os.chmod(pytester.path / "base", 0o755)
    pytester.makepyfile(test_secret=SECRET_SUITE)
    outer = Path(tempfile.mkdtemp(prefix="pytest-overlay-kept-"))
    try:
        basetemp = outer / "bt"
        result = pytester.runpytest(f"--basetemp={basetemp}", f"--overlay-workspace={workspace}")
        result.assert_outcomes(failed=1)
        kept_root = basetemp / "overlay-kept"
        (kept,) = kept_root.iterdir()
        assert (kept / "token").read_text() == "s3cret"
        assert os.stat(kept_root).st_mode & 0o077 == 0
        if os.geteuid() == 0:
            os.chmod(outer, 0o755)
            os.chmod(basetemp, 0o755)
            assert not _readable_by_nobody(kept / "token")
    finally:
        shutil.rmtree(outer)


def test_eoverflow_note_only_for_userns_and_eoverflow() -> None:
    error = OSError(errno.EOVERFLOW, os.strerror(errno.EOVERFLOW), "/m/d/f")
    wrapped = RuntimeError("setup step failed")
    wrapped.__cause__ = error
    note = eoverflow_note("userns", wrapped, "")
    assert note.startswith(f"EOVERFLOW ({os.strerror(errno.EOVERFLOW)}) on /m/d/f:")
    assert "--overlay-backend=copy" in note
    # What a subprocess printed counts too; the path is then unknown.
    assert eoverflow_note("userns", None, f"cp: cannot create 'x': {os.strerror(75)}")
    assert eoverflow_note("userns", OSError(errno.EACCES, "Permission denied"), "") == ""
    assert eoverflow_note("fuse", error, "") == ""
    assert eoverflow_note("kernel", error, "") == ""
