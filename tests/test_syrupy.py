"""pytest_overlay.syrupy: change and tree snapshots through syrupy, via pytester."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import make_tree

pytest.importorskip("syrupy")

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.usefixtures("fixed_umask")

TESTS = """
import os
import pytest
from pytest_overlay.syrupy import OverlayChangesExtension, OverlayTreeExtension


@pytest.fixture
def snapshot_changes(snapshot):
    return snapshot.with_defaults(extension_class=OverlayChangesExtension)


def test_upgrade(overlay_stack, snapshot_changes):
    m = overlay_stack.merged
    (m / "config.ini").write_text("[server]\\nport = {port}\\n")
    (m / "VERSION").write_text("2.0")
    os.chmod(m / "VERSION", 0o600)
    (m / "old.log").unlink()
    (m / "blob.bin").write_bytes(bytes(range(256)))
    os.symlink("config.ini", m / "current")
    with open(m / "README", "r+"):
        pass  # copied up, unchanged: not a change
    assert overlay_stack == snapshot_changes
    assert overlay_stack.changes() == snapshot_changes


def test_tree(overlay_stack, snapshot):
    (overlay_stack.merged / "sub" / "new.txt").write_text("a\\n\\n  indented\\n")
    assert snapshot(extension_class=OverlayTreeExtension) == overlay_stack.merged
"""

CHANGES = """\
# pytest-overlay changes: <A added | M modified | D deleted> <path>  <type> <mode> [size]
A VERSION  file 0600 size=3
    | 2.0
    \\ no newline at end of file
A blob.bin  file 0644 size=256 sha256=\
40aff2e9d2d8922e47afd4648e6967497158785fbd1da870e7110266bf944880
M config.ini  file 0644 size=21
    | [server]
    | port = 8080
A current  symlink -> config.ini
D old.log
"""

TREE = """\
# pytest-overlay tree: <path>  <type> <mode> [size]
.  dir 0755
README  file 0644 size=7
    | readme
config.ini  file 0644 size=21
    | [server]
    | port = 8000
old.log  file 0644 size=0
sub  dir 0755
sub/new.txt  file 0644 size=14
    | a
    |
    |   indented
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # syrupy tells an xdist worker by these variables; when this suite runs under xdist,
    # the in-process runs would inherit them and leave the snapshot report to a controller.
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
    base = pytester.path / "data" / "base"
    make_tree(
        base,
        {
            "config.ini": "[server]\nport = 8000\n",
            "README": "readme\n",
            "old.log": "",
            "sub": {},
        },
    )
    for path in (base, base / "sub"):
        os.chmod(path, 0o755)
    for name in ("config.ini", "README", "old.log"):
        os.chmod(base / name, 0o644)
    pytester.makeini("[pytest]\noverlay_base = data/base\n")
    return pytester


def snapshots(project: pytest.Pytester) -> Path:
    return project.path / "__snapshots__" / "test_snap"


def test_update_writes_readable_snapshot_files(project: pytest.Pytester) -> None:
    project.makepyfile(test_snap=TESTS.replace("{port}", "8080"))
    project.runpytest().assert_outcomes(failed=2)  # nothing stored yet
    result = project.runpytest("--snapshot-update")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*3 snapshots generated*"])
    where = snapshots(project)
    assert sorted(p.name for p in where.iterdir()) == [
        "test_tree.tree.txt",
        "test_upgrade.1.changes.txt",
        "test_upgrade.changes.txt",
    ]
    assert (where / "test_upgrade.changes.txt").read_text() == CHANGES
    assert (where / "test_upgrade.1.changes.txt").read_text().splitlines() == [
        CHANGES.splitlines()[0],
        "M README",
        "A VERSION",
        "A blob.bin",
        "M config.ini",
        "A current",
        "D old.log",
    ]
    assert (where / "test_tree.tree.txt").read_text() == TREE
    project.runpytest().assert_outcomes(passed=2)
    assert (project.path / "data" / "base" / "config.ini").read_text() == "[server]\nport = 8000\n"


def test_a_changed_text_file_fails_with_a_line_diff(project: pytest.Pytester) -> None:
    project.makepyfile(test_snap=TESTS.replace("{port}", "8080"))
    project.runpytest("--snapshot-update").assert_outcomes(passed=2)
    project.makepyfile(test_snap=TESTS.replace("{port}", "9090"))
    result = project.runpytest("-k", "upgrade")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E * entries that differ: M config.ini",
            "E *     | ?server?",  # fnmatch reads [...] as a set
            "E *-     | port = 8080",
            "E *+     | port = 9090",
        ]
    )


def test_unused_snapshots_are_syrupys_to_report_and_delete(project: pytest.Pytester) -> None:
    tests = TESTS.replace("{port}", "8080")
    project.makepyfile(test_snap=tests)
    project.runpytest("--snapshot-update").assert_outcomes(passed=2)
    project.makepyfile(test_snap=tests[: tests.index("def test_tree")])
    result = project.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*1 snapshot unused*"])
    assert (snapshots(project) / "test_tree.tree.txt").exists()
    result = project.runpytest("--snapshot-update")
    result.stdout.fnmatch_lines(["*1 unused snapshot deleted*"])
    assert not (snapshots(project) / "test_tree.tree.txt").exists()
    assert (snapshots(project) / "test_upgrade.changes.txt").exists()


def test_under_xdist(project: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    tests = TESTS.replace("{port}", "8080")
    project.makepyfile(test_snap=tests)
    # In a subprocess: an xdist controller raises capabilities for the programs it starts.
    project.runpytest_subprocess("-n", "2", "--snapshot-update").assert_outcomes(passed=2)
    assert (snapshots(project) / "test_upgrade.changes.txt").read_text() == CHANGES
    assert (snapshots(project) / "test_tree.tree.txt").read_text() == TREE
    # test_tree gone and a planted change: workers report both to the controller (the
    # failed assertion also leaves test_upgrade's second snapshot unused).
    changed = tests.replace("port = 8080", "port = 9090")
    project.makepyfile(test_snap=changed[: changed.index("def test_tree")])
    result = project.runpytest_subprocess("-n", "2")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E *-     | port = 8080", "E *+     | port = 9090"])
    if _syrupy_version() >= (6, 0):  # 5.x left the report out under xdist
        result.stdout.fnmatch_lines(["*1 snapshot failed. 2 snapshots unused*"])


def _syrupy_version() -> tuple[int, ...]:
    from importlib.metadata import version

    return tuple(int(part) for part in version("syrupy").split(".")[:2])


def test_bad_data_names_what_each_extension_takes(project: pytest.Pytester) -> None:
    # syrupy turns an error in serialising into a failed assertion that shows it.
    project.makepyfile(
        test_bad="""
        from pytest_overlay.syrupy import OverlayChangesExtension, OverlayTreeExtension

        def test_path_as_changes(overlay_stack, snapshot):
            assert snapshot(extension_class=OverlayChangesExtension) == overlay_stack.merged

        def test_stack_as_tree(overlay_stack, snapshot):
            assert snapshot(extension_class=OverlayTreeExtension) == overlay_stack

        def test_file_as_tree(overlay_stack, snapshot):
            assert snapshot(extension_class=OverlayTreeExtension) == (
                overlay_stack.merged / "README"
            )

        def test_exclude(overlay_stack, snapshot):
            tree = snapshot(extension_class=OverlayTreeExtension, exclude=lambda **kw: False)
            assert tree == overlay_stack.merged
        """
    )
    result = project.runpytest("--snapshot-update", "-vv")
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines_random(
        [
            "*TypeError: OverlayChangesExtension compares an OverlayStack, a Snapshot or a "
            "list of Change, not PosixPath: for a directory use OverlayTreeExtension",
            "*TypeError: OverlayTreeExtension compares a directory path, not OverlayStack: "
            "pass e.g. overlay_stack.merged; for changes use OverlayChangesExtension",
            "*ValueError: OverlayTreeExtension needs a directory, and */README is not one",
            "*TypeError: pytest-overlay's syrupy extensions do not take exclude or include:*",
        ]
    )
    assert not (project.path / "__snapshots__").exists()


def test_import_without_syrupy_names_the_extra() -> None:
    code = "import sys; sys.modules['syrupy'] = None; import pytest_overlay.syrupy"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert (
        "ImportError: pytest_overlay.syrupy needs syrupy (5.0 or newer): "
        "pip install 'pytest-overlay[syrupy]'"
    ) in result.stderr


def test_tree_lines_for_every_kind_of_entry(tmp_path: Path) -> None:
    from pytest_overlay.syrupy import OverlayTreeExtension

    root = tmp_path / "tree"
    make_tree(root, {"a dir": {"no-eol.txt": "last"}, "empty": "", "crlf.txt": "x\r\n"})
    (root / "big.txt").write_text("y\n" * 9000)  # 18000 bytes: over the 16 KiB limit
    (root / "nul.bin").write_bytes(b"a\0b")
    (root / "link").symlink_to("a dir/no-eol.txt")
    os.mkfifo(root / "pipe")
    for path in root.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, 0o750 if path.is_dir() else 0o640)
    os.chmod(root, 0o700)
    text = OverlayTreeExtension().serialize(root)
    assert text.splitlines()[1:] == [
        ".  dir 0700",
        '"a dir"  dir 0750',
        '"a dir/no-eol.txt"  file 0640 size=4',
        "    | last",
        "    \\ no newline at end of file",
        f"big.txt  file 0640 size=18000 sha256={_sha256(root / 'big.txt')}",
        f"crlf.txt  file 0640 size=3 sha256={_sha256(root / 'crlf.txt')}",
        "empty  file 0640 size=0",
        'link  symlink -> "a dir/no-eol.txt"',
        f"nul.bin  file 0640 size=3 sha256={_sha256(root / 'nul.bin')}",
        "pipe  fifo 0640",
    ]


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()
