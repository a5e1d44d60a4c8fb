"""pytest-xdist: several workers mounting over one base at once, on every backend."""

from __future__ import annotations

import os

import pytest

from pytest_overlay._backends.ladder import builtin_backends
from tests.helpers import auto_backend, make_tree, tree_digest, usable_backend

pytest_plugins = ["pytester"]
pytest.importorskip("xdist")

SUITE = """
import os, pathlib, pytest, time

pytestmark = pytest.mark.overlay("base")

@pytest.mark.parametrize("n", range(12))
def test_worker_writes(overlay_stack, worker_id, n):
    m = overlay_stack.merged
    assert (m / "shared.txt").read_text() == "base\\n"
    assert not (m / "mine").exists()
    (m / "mine").write_text(f"{worker_id}-{n}")
    (m / "shared.txt").write_text(f"changed by {worker_id}")
    (m / "dir" / "f").unlink()
    time.sleep(0.01)  # overlap with the other workers
    assert (m / "mine").read_text() == f"{worker_id}-{n}"
    assert sorted(str(c) for c in overlay_stack.changes()) == [
        "A mine", "D dir/f", "M dir", "M shared.txt"
    ]
    # Workspaces are per worker: under this worker's own basetemp.
    assert f"popen-{worker_id}" in str(overlay_stack.workspace)
    record = pathlib.Path(os.environ["BACKENDS_SEEN"]) / f"{worker_id}-{n}"
    record.write_text(overlay_stack.backend)
"""


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, list[str]]:
    make_tree(pytester.path / "base", {"shared.txt": "base\n", "dir": {"f": "f"}})
    before = tree_digest(pytester.path / "base")
    seen = pytester.mkdir("seen")
    pytester.makepyfile(test_parallel=SUITE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BACKENDS_SEEN", os.fspath(seen))
        result = pytester.runpytest_subprocess(*args, "-p", "no:cacheprovider")
    assert tree_digest(pytester.path / "base") == before
    workers = {p.name.split("-")[0] for p in seen.iterdir()}
    assert len(workers) >= 2, workers  # several workers really mounted
    return result, sorted(p.read_text() for p in seen.iterdir())


@pytest.mark.parametrize("backend", [b.name for b in builtin_backends()])
def test_workers_share_one_base(pytester: pytest.Pytester, backend: str) -> None:
    usable_backend(backend)
    result, backends = _run(pytester, "-n", "2", f"--overlay-backend={backend}")
    result.assert_outcomes(passed=12)
    assert backends == [backend] * 12


def test_auto_workers_use_the_controllers_choice(pytester: pytest.Pytester) -> None:
    result, backends = _run(pytester, "-n", "auto")
    result.assert_outcomes(passed=12)
    # The userns rung works in workers only because the controller entered the namespace
    # and handed its mount capability down.
    assert backends == [auto_backend()] * 12
