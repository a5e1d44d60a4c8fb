"""Workspaces on a tmpfs private to pytest (--overlay-workspace)."""

from __future__ import annotations

import pytest

from pytest_overlay._backends.fuse import FUSE
from tests.helpers import make_tree, tmpfs_workspaces_possible

pytest_plugins = ["pytester"]

TMPFS_MAGIC = 0x01021994

PROBE = """
import pytest
from pytest_overlay._linux import syscalls as _syscalls

@pytest.mark.overlay("base")
def test_where(overlay_stack):
    (overlay_stack.merged / "f").write_text("changed")
    kind = _syscalls.statfs_type(overlay_stack.upper)
    print("BACKEND", overlay_stack.backend, "TMPFS" if kind == 0x01021994 else "DISK")
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    make_tree(pytester.path / "base", {"f": "f"})
    pytester.makepyfile(test_where=PROBE)
    return pytester


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "TMPFS"),
        (["--overlay-workspace=tmpfs"], "TMPFS"),
        (["--overlay-workspace=disk"], "DISK"),
        (["--overlay-backend=copy"], "DISK"),
    ],
)
def test_where_the_upper_lives(project: pytest.Pytester, args: list[str], expected: str) -> None:
    result = project.runpytest("-s", *args)
    if expected == "TMPFS" and not tmpfs_workspaces_possible():
        # An ordinary user without user namespaces: fuse mounts in the host namespace,
        # where no tmpfs can be mounted. auto falls back to disk; demanding tmpfs fails.
        if args:
            result.assert_outcomes(errors=1)
            result.stdout.fnmatch_lines(["*cannot put the workspaces on tmpfs: the process*"])
            return
        expected = "DISK"
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*BACKEND * {expected}*"])
    assert (project.path / "base" / "f").read_text() == "f"


def test_tmpfs_demanded_where_it_cannot_be(project: pytest.Pytester) -> None:
    result = project.runpytest("--overlay-workspace=tmpfs", "--overlay-backend=copy")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*cannot put the workspaces on tmpfs: the copy backend*"])


def test_unknown_setting_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--overlay-workspace=ram")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown value 'ram'; choose one of: auto, tmpfs, disk*"])


def test_kept_layer_survives_the_tmpfs(project: pytest.Pytester) -> None:
    project.makepyfile(
        test_where="""
        import pytest

        @pytest.mark.overlay("base")
        def test_fails(overlay_stack):
            (overlay_stack.merged / "f").unlink()
            (overlay_stack.merged / "new").write_text("n")
            assert False
        """
    )
    result = project.runpytest(f"--basetemp={project.path / 'bt'}")
    result.assert_outcomes(failed=1)
    kept = project.path / "bt" / "overlay-kept" / "test_fails"
    assert (kept / "new").read_text() == "n"
    assert (kept / "f").is_char_device()  # the whiteout came along
    assert list((project.path / "bt" / "overlay").iterdir()) == []


FILL = """
import errno, os, time, pytest

@pytest.mark.overlay("base")
def test_fill(overlay_stack):
    start = time.monotonic()
    with pytest.raises(OSError) as info:
        with open(overlay_stack.merged / "big", "wb") as f:
            for _ in range(64):
                f.write(b"x" * (1 << 20))
                f.flush()
                os.fsync(f.fileno())
    assert info.value.errno == errno.ENOSPC
    print("FILLED in", time.monotonic() - start)

@pytest.mark.overlay("base")
def test_inodes(overlay_stack):
    with pytest.raises(OSError) as info:
        for i in range(100_000):
            (overlay_stack.merged / f"e{i}").touch()
    assert info.value.errno == errno.ENOSPC
    assert i < 10_000

@pytest.mark.overlay("base")
def test_next(overlay_stack):
    (overlay_stack.merged / "g").write_bytes(b"y" * (1 << 20))
    assert (overlay_stack.merged / "f").read_text() == "f"
"""


@pytest.mark.parametrize("backend", ["auto", "fuse"])
def test_a_full_tmpfs_workspace_gives_enospc_and_the_next_test_passes(
    project: pytest.Pytester, backend: str
) -> None:
    if not tmpfs_workspaces_possible():
        pytest.skip("no private tmpfs here (fuse in the host namespace)")
    if backend == "fuse" and FUSE.probe():
        pytest.skip(f"fuse does not work here: {FUSE.probe()}")
    project.makepyfile(test_fill=FILL)
    project.makeini("[pytest]\noverlay_tmpfs_size = 16M\n")
    # In a subprocess with a deadline: a backend that blocked on the full upper instead
    # of failing the write must fail this test, not hang it.
    result = project.runpytest_subprocess(
        "-s", f"--overlay-backend={backend}", "test_fill.py", timeout=120
    )
    result.assert_outcomes(passed=3)
    assert (project.path / "base" / "f").read_text() == "f"
    assert sorted(p.name for p in (project.path / "base").iterdir()) == ["f"]


@pytest.mark.parametrize("value", ["lots", "12Q", "-5M", "0", "150%"])
def test_a_bad_tmpfs_size_is_a_usage_error(project: pytest.Pytester, value: str) -> None:
    project.makeini(f"[pytest]\noverlay_tmpfs_size = {value}\n")
    result = project.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*overlay_tmpfs_size: {value!r} is not a size*"])


def test_default_limits_share_the_available_memory_with_a_floor() -> None:
    from pytest_overlay._linux import tmpfs

    gib = 1 << 30
    assert tmpfs.default_size(available=8 * gib, workers=1) == 4 * gib
    assert tmpfs.default_size(available=8 * gib, workers=4) == gib
    # Many workers on little memory: never below the floor, so a test can still write.
    assert tmpfs.default_size(available=gib, workers=64) == tmpfs.FLOOR
    assert tmpfs.inodes_for(gib) == gib // 4096
    assert tmpfs.inodes_for(1 << 20) == tmpfs.MIN_INODES


def test_available_memory_heeds_a_cgroup_limit(tmp_path: pytest.TempPathFactory) -> None:
    from pathlib import Path

    from pytest_overlay._linux import tmpfs

    root = Path(str(tmp_path))
    (root / "meminfo").write_text("MemTotal: 16000000 kB\nMemAvailable: 8000000 kB\n")
    (root / "memory.max").write_text(f"{2 << 30}\n")
    (root / "memory.current").write_text(f"{1 << 30}\n")
    assert tmpfs.available_memory(root / "meminfo", root) == 1 << 30
    (root / "memory.max").write_text("max\n")
    assert tmpfs.available_memory(root / "meminfo", root) == 8000000 * 1024
    # cgroup v1's memory controller.
    v1 = root / "v1"
    v1.mkdir()
    (v1 / "memory.limit_in_bytes").write_text(f"{3 << 30}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{1 << 30}\n")
    assert tmpfs.available_memory(root / "meminfo", v1) == 2 << 30


def test_header_and_info_show_the_limits(project: pytest.Pytester) -> None:
    from tests.helpers import auto_backend

    backend = auto_backend()
    if backend == "copy":
        pytest.skip("the copy backend keeps its workspaces on disk")
    project.makeini("[pytest]\noverlay_tmpfs_size = 16M\n")
    result = project.runpytest(f"--overlay-backend={backend}", "-p", "no:xdist")
    headers = [line for line in result.stdout.lines if line.startswith("overlay: backend")]
    assert len(headers) == 1
    assert (
        "; tmpfs workspaces up to 16 MiB and 4096 inodes per pytest process, "
        "overlay_tmpfs_size = 16M" in headers[0]
    )
    info = project.runpytest("--overlay-info")
    info.stdout.fnmatch_lines(["tmpfs workspaces up to 16 MiB and 4096 inodes per pytest*"])
    disk = project.runpytest(f"--overlay-backend={backend}", "--overlay-workspace=disk")
    assert "tmpfs workspaces" not in disk.stdout.str()
