"""Bases owned by someone else, mounted by an ordinary user (issue 11, items 1 and 10).

Inside the user namespace of the userns backend (and of fuse for an ordinary user) only
the user's own uid and gid are mapped: everything else shows as 65534, cannot be chowned
to (EINVAL), and kernel overlayfs cannot copy it up (EOVERFLOW).

Each scenario runs in a forked child that is an ordinary user, so it starts with a
process that has entered no namespace yet. As root the child drops to :data:`CHILD_ID`
and the base is made root-owned here; as an ordinary user the child stays that user and
the base is a system directory owned by root (the standard library's).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_overlay import OverlayStack
from pytest_overlay._backends.ladder import builtin_backends, select_backend
from pytest_overlay._linux import namespace as _namespace
from pytest_overlay._linux import syscalls as _syscalls
from pytest_overlay._linux.workspace import create_workspace
from tests.helpers import make_tree

pytest_plugins = ["pytester"]

#: The uid and gid a root run's child drops to: in no passwd file, so nobody else's.
CHILD_ID = 4242
Result = dict[str, object]
PR_SET_DUMPABLE = 4


def _forget_process_state() -> None:
    # A forked child inherits what the parent learned (a private mount namespace as root,
    # cached probes); as a new user it must find all of that out again.
    _namespace._state = _namespace.State(_namespace.Mode.NONE)
    _namespace._probe_result = None
    for backend in builtin_backends():
        if hasattr(backend, "_probe"):
            backend._probe = None


def in_child(task: Callable[[], Result], groups: tuple[int, ...] = ()) -> Result:
    """Run *task* in a forked child as an ordinary user; return what it returned.

    As root the child becomes :data:`CHILD_ID`, member of *groups* besides its own.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, reported through the pipe
        os.close(read_fd)
        try:
            if os.geteuid() == 0:
                os.setgroups(list(groups))
                os.setgid(CHILD_ID)
                os.setuid(CHILD_ID)
                # setuid made the process undumpable, which leaves /proc/self/uid_map
                # owned by root: the child could not set up its user namespace.
                _syscalls.prctl(PR_SET_DUMPABLE, 1)
            _forget_process_state()
            result = task()
        except BaseException as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(write_fd, json.dumps(result).encode())
        os._exit(0)
    os.close(write_fd)
    chunks = []
    while chunk := os.read(read_fd, 65536):
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    reported: Result = json.loads(b"".join(chunks) or b'{"error": "the child died"}')
    return reported


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory the child can reach (pytest's basetemp is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="pytest-overlay-owners-")).resolve()
    os.chmod(path, 0o755)
    workspace = path / "ws"
    workspace.mkdir()
    if os.geteuid() == 0:
        os.chown(workspace, CHILD_ID, CHILD_ID)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _system_base() -> tuple[Path, str]:
    # /var/tmp: a directory any user may write to, owned by root, in a small base.
    base, name = Path("/var"), "tmp"
    st = (base / name).stat() if (base / name).is_dir() else None
    if st is None or st.st_uid == os.geteuid() or not os.access(base / name, os.W_OK):
        pytest.skip("needs /var/tmp: a directory owned by someone else that this user may write")
    return base, name


@pytest.fixture(params=["root", "group"])
def foreign_base(request: pytest.FixtureRequest, scratch: Path) -> tuple[Path, str]:
    """(base, a directory in it the child may write to), owned by root (as /var/tmp is),
    or by the child's uid but another group."""
    if os.geteuid() != 0:
        if request.param == "root":
            return _system_base()
        others = [g for g in os.getgroups() if g != os.getegid()]
        if not others:
            pytest.skip("needs a supplementary group to give the base a group of its own")
        base = make_tree(scratch / "base", {"f.txt": "base\n", "d": {"g": "g"}})
        try:
            for path in (base, base / "f.txt", base / "d"):
                os.chown(path, -1, others[0])
        except OSError as exc:  # this pytest already runs in a user namespace
            pytest.skip(f"cannot give the base group {others[0]}: {exc.strerror}")
        return base, "d"
    base = make_tree(scratch / "base", {"f.txt": "base\n", "d": {"g": "g"}})
    owner = (0, 0) if request.param == "root" else (CHILD_ID, 0)
    for path in (base, base / "f.txt", base / "d", base / "d" / "g"):
        os.chown(path, *owner)
        os.chmod(path, 0o644 if path.is_file() else 0o755)
    if request.param == "root":
        os.chmod(base / "d", 0o1777)
    return base, "d"


def _scenario(base: Path, directory: str, backend: str, workspace: Path) -> Callable[[], Result]:
    def task() -> Result:
        out: Result = {}
        # What the plugin does before the first test that mounts: an ordinary user
        # enters the user namespace (for userns and for fuse) there.
        select_backend(backend).activate()
        with OverlayStack([base], workspace=workspace, backend=backend) as stack:
            out["backend"] = stack.backend
            out["in_userns"] = _namespace.state().mode is _namespace.Mode.USERNS
            out["root_mode"] = stat.S_IMODE(os.stat(stack.merged).st_mode)
            (stack.merged / "new.txt").write_text("new")
            try:
                # Copies the directory up first.
                (stack.merged / directory / "made-by-test").write_text("x")
            except OSError as exc:
                out["write"] = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            else:
                out["write"] = "ok"
            out["changes"] = sorted(str(c) for c in stack.changes())
            # A fresh upper over the base again: its root takes the base's attributes.
            stack.restore(stack.base)
            out["restored"] = [str(c) for c in stack.changes()]
        return out

    return task


def _usable_in_child(name: str) -> None:
    def task() -> Result:
        backend = next(b for b in builtin_backends() if b.name == name)
        return {"reason": backend.probe()}

    out = in_child(task)
    # An error: e.g. as root, a child that cannot run this interpreter (fuse starts a
    # watcher process with it), because it lives where only root may read.
    reason = out.get("reason", out.get("error"))
    if reason:
        pytest.skip(f"{name} does not work for an ordinary user here: {reason}")


def test_userns_mounts_a_base_of_another_owner(
    foreign_base: tuple[Path, str], scratch: Path
) -> None:
    # Was: OSError EINVAL from chowning the upper to an id the namespace does not map.
    _usable_in_child("userns")
    base, directory = foreign_base
    before = base.stat()
    out = in_child(_scenario(base, directory, "userns", scratch / "ws"))
    assert "error" not in out, out["error"]
    assert out["backend"] == "userns"
    assert out["root_mode"] == stat.S_IMODE(before.st_mode)
    # New entries at the root are fine; the kernel cannot copy up what an unmapped id owns.
    assert out["write"] == "EOVERFLOW"
    assert out["changes"] == ["A new.txt"]
    assert out["restored"] == []
    assert not (base / "new.txt").exists()
    assert not (base / directory / "made-by-test").exists()


def test_fuse_mounts_a_base_of_another_owner(
    request: pytest.FixtureRequest, foreign_base: tuple[Path, str], scratch: Path
) -> None:
    _usable_in_child("fuse")
    base, directory = foreign_base
    out = in_child(_scenario(base, directory, "fuse", scratch / "ws"))
    assert "error" not in out, out["error"]
    assert "A new.txt" in out["changes"]  # type: ignore[operator]
    if request.node.callspec.params["foreign_base"] == "group" and not out["in_userns"]:
        # Through fusermount3 the daemon runs as the user, who may give the copy one of
        # their own groups.
        assert out["write"] == "ok"
        return
    # Otherwise fuse-overlayfs 1.10 cannot copy up what another id owns either: it fails
    # to chown the copy (EPERM on the host, EACCES in a user namespace). Should this start
    # to pass, fuse could be preferred for such bases (docs/platforms.rst).
    assert out["write"] in ("EPERM", "EACCES")
    assert not (base / directory / "made-by-test").exists()


def test_copy_writes_into_a_base_of_another_owner(
    foreign_base: tuple[Path, str], scratch: Path
) -> None:
    # The advice for EOVERFLOW: the copy backend copies the base as the user.
    base, directory = foreign_base
    if base == Path("/var"):
        pytest.skip("copying all of /var is not a unit test")
    out = in_child(_scenario(base, directory, "copy", scratch / "ws"))
    assert "error" not in out, out["error"]
    assert out["write"] == "ok"
    assert f"A {directory}/made-by-test" in out["changes"]  # type: ignore[operator]
    assert not (base / directory / "made-by-test").exists()


def test_upper_root_keeps_the_group_when_only_that_can_be_given(scratch: Path) -> None:
    # Outside a user namespace an ordinary user may give a directory one of their own
    # groups, though not another owner: the merged root then still shows the base's group.
    if os.geteuid() != 0:
        pytest.skip("needs root to make a base owned by root with the child's group")
    base = make_tree(scratch / "base", {})
    os.chown(base, 0, CHILD_ID + 1)
    os.chmod(base, 0o775)

    def task() -> Result:
        space = create_workspace(scratch / "ws", base)
        st = os.stat(space.upper)
        return {"owner": [st.st_uid, st.st_gid], "mode": stat.S_IMODE(st.st_mode)}

    out = in_child(task, groups=(CHILD_ID + 1,))
    assert out == {"owner": [CHILD_ID, CHILD_ID + 1], "mode": 0o775}


FAILING_SUITE = """
import subprocess

import pytest

pytestmark = pytest.mark.overlay({base!r})


def test_writes_in_python(overlay_stack):
    (overlay_stack.merged / {directory!r} / "made-by-test").write_text("x")


def test_writes_in_a_subprocess(overlay_stack):
    target = overlay_stack.merged / {directory!r} / "made-by-cp"
    subprocess.run(["cp", "/dev/null", str(target)], check=True)


def test_unrelated_failure(overlay_stack):
    assert False
"""


def test_failure_report_explains_eoverflow(foreign_base: tuple[Path, str], scratch: Path) -> None:
    _usable_in_child("userns")
    base, directory = foreign_base
    project = scratch / "project"
    project.mkdir()
    (project / "test_suite.py").write_text(
        FAILING_SUITE.format(base=str(base), directory=directory)
    )
    output = project / "output.txt"
    if os.geteuid() == 0:
        os.chown(project, CHILD_ID, CHILD_ID)

    def task() -> Result:
        # A whole pytest run in this child: its output goes to a file.
        # (The outer pytest has replaced sys.stdout, so the file descriptors are not enough.)
        sys.stdout = sys.stderr = open(output, "w")  # noqa: SIM115 - the child exits
        os.dup2(sys.stdout.fileno(), 1)
        os.dup2(sys.stdout.fileno(), 2)
        os.chdir(project)
        # Only this plugin: others would import modules a child that dropped root may no
        # longer be able to read.
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        status = pytest.main(
            [
                "-p",
                "pytest_overlay.plugin",
                "-p",
                "no:cacheprovider",
                "-q",
                "--overlay-backend=userns",
                f"--basetemp={project / 'bt'}",
                "test_suite.py",
            ]
        )
        sys.stdout.flush()
        sys.stderr.flush()
        return {"status": int(status)}

    out = in_child(task)
    text = output.read_text()
    assert out == {"status": 1}, text
    sections = text.split(" overlay changes ")
    # pytest prints report sections with the test's failure, in the order of the tests.
    assert len(sections) == 4, text
    python, subprocess_, unrelated = sections[1:]
    assert "EOVERFLOW (Value too large for defined data type) on " in python
    assert f"{directory}/made-by-test" in python
    assert "--overlay-backend=copy" in python
    assert "EOVERFLOW (Value too large for defined data type):" in subprocess_
    assert "EOVERFLOW" not in unrelated.split("short test summary")[0]
