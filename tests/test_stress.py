"""Load: thousands of stacks mounted and unmounted, from threads and xdist workers.

Checks for leaks at the end: mounts, file descriptors, disk space, daemons. The size is
set by ``OVERLAY_STRESS_STACKS`` (default 2000 for a mounting backend; the copy backend
does a tenth); CI runs the default, a long run sets it higher.
"""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest

from pytest_overlay import ChangeKind, OverlayStack
from pytest_overlay._backends.protocol import Backend
from tests.helpers import make_tree, overlay_mounts, tree_digest, usable_backend

pytestmark = pytest.mark.stress
pytest_plugins = ["pytester"]

STACKS = int(os.environ.get("OVERLAY_STRESS_STACKS", "2000"))
THREADS = 4


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _churn(
    base: Path,
    workspace: Path,
    backend: Backend,
    count: int,
    seed: int,
    peak: list[int],
    errors: list[BaseException],
) -> None:
    rng = random.Random(seed)
    names = sorted(p.name for p in base.iterdir())
    try:
        for _ in range(count):
            with OverlayStack([base], workspace=workspace, backend=backend) as stack:
                peak[0] = max(peak[0], _open_fds())
                m = stack.merged
                victim = rng.choice(names)
                action = rng.randrange(3)
                if action == 0:
                    (m / victim).write_bytes(os.urandom(rng.randrange(1, 4096)))
                    expected = (ChangeKind.MODIFY, victim)
                elif action == 1:
                    (m / victim).unlink()
                    expected = (ChangeKind.DELETE, victim)
                else:
                    (m / f"new-{seed}").write_bytes(b"n" * rng.randrange(4096))
                    expected = (ChangeKind.ADD, f"new-{seed}")
                changes = [(c.kind, c.path) for c in stack.changes()]
                assert changes == [expected], changes
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)


# A thread that forks (to start fuse-overlayfs) holds copies of the other threads' open
# files until it execs; under load that can outlast the unmount's retries, and the union
# is then detached lazily with an OverlayWarning. Lazy or not, nothing may leak.
@pytest.mark.filterwarnings("ignore::pytest_overlay.OverlayWarning")
@pytest.mark.parametrize("name", ["kernel", "userns", "fuse", "copy"])
def test_thousands_of_stacks_from_threads_leak_nothing(tmp_path: Path, name: str) -> None:
    backend = usable_backend(name)
    total = STACKS if name in ("kernel", "userns") else max(STACKS // 10, THREADS)
    base = make_tree(tmp_path / "base", {f"f{i:02}": os.urandom(512) for i in range(40)})
    before = tree_digest(base)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    fds_before = _open_fds()
    mounts_before = set(overlay_mounts())
    peak = [fds_before]
    errors: list[BaseException] = []
    threads = [
        threading.Thread(
            target=_churn,
            args=(base, workspace, backend, total // THREADS, seed, peak, errors),
        )
        for seed in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    leftovers = sorted(workspace.rglob("*"))
    print(
        f"\n{name}: stacks mounted {total // THREADS * THREADS}, peak open fds {peak[0]} "
        f"(before {fds_before}), mounts left {len(set(overlay_mounts()) - mounts_before)}, "
        f"entries left {len(leftovers)}"
    )
    assert set(overlay_mounts()) == mounts_before
    assert _open_fds() == fds_before
    assert leftovers == []
    assert tree_digest(base) == before
    # Fds: the threads share one table; a leak would grow with the count, not stay small.
    assert peak[0] < fds_before + 16 * THREADS


def test_xdist_workers_churning_leave_nothing(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    base = make_tree(pytester.path / "base", {f"f{i:02}": os.urandom(512) for i in range(40)})
    before = tree_digest(base)
    pytester.makepyfile(
        test_churn="""
        import os, random, pytest

        pytestmark = pytest.mark.overlay("base")

        @pytest.mark.parametrize("seed", range(200))
        def test_random_writes(overlay_stack, seed):
            rng = random.Random(seed)
            m = overlay_stack.merged
            for _ in range(5):
                victim = m / f"f{rng.randrange(40):02}"
                if victim.exists() and rng.random() < 0.3:
                    victim.unlink()
                else:
                    victim.write_bytes(os.urandom(rng.randrange(1, 2048)))
            assert overlay_stack.changes()
        """
    )
    basetemp = pytester.path / "bt"
    result = pytester.runpytest_subprocess(
        "-n", "2", f"--basetemp={basetemp}", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=200)
    assert tree_digest(base) == before
    workspaces = [p for p in basetemp.glob("*/overlay/*")]
    assert workspaces == []
    assert not [m for m in overlay_mounts() if m.startswith(os.fspath(basetemp))]
