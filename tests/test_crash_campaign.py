"""Crash campaigns: a small suite killed (SIGKILL) or interrupted (Ctrl-C) at random points.

Per backend that works here, a seeded series of kills at random moments of a run of a
few mounting tests; after each: no mount under the basetemp in any process's mount table,
no fuse-overlayfs daemon left, the base byte-identical; at the end, the next run over the
same basetemp passes. Then a series of Ctrl-C's (SIGINT to the run's process group, as a
terminal sends it) in the middle of tests busy in the union: every run must end as
interrupted (exit status 2), never as a failure.

Opt-in: ``OVERLAY_CRASH_KILLS`` (kills per backend) runs it, ``OVERLAY_CRASH_SEED`` sets
the seed. CI runs it as root, as an ordinary user with user namespaces and as one without
(fuse then mounts in the host's namespace through fusermount3; the dead mounts once seen
there came from a daemon killed while its fusermount3 was mounting, see _linux.reaper).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from pytest_overlay._linux.sweep import stale_workspaces
from tests.helpers import tree_digest, usable_backend
from tests.test_crash import BACKENDS, Run, _default_sigint, _mounts_under, _wait_until

pytestmark = [
    pytest.mark.stress,
    pytest.mark.skipif(
        "OVERLAY_CRASH_KILLS" not in os.environ,
        reason="a crash campaign: set OVERLAY_CRASH_KILLS=N to run N kills per backend",
    ),
]
pytest_plugins = ["pytester"]

KILLS = int(os.environ.get("OVERLAY_CRASH_KILLS", "0"))
INTERRUPTS = max(KILLS // 4, 2)
SEED = int(os.environ.get("OVERLAY_CRASH_SEED", "12"))

SUITE = (
    "import os, pathlib, shutil, time, pytest\n"
    "READY = pathlib.Path({ready!r})\n\n"
    "@pytest.mark.overlay('base')\n"
    "@pytest.mark.parametrize('i', range(30))\n"
    "def test_work(overlay_stack, i):\n"
    "    m = overlay_stack.merged\n"
    "    READY.write_text('go')\n"
    "    shutil.rmtree(m / 'dir' / 'sub')\n"
    "    (m / 'data.bin').write_bytes(b'overwritten' * 100)\n"
    "    for j in range({rounds}):\n"
    "        (m / f'n{{j % 10}}').write_text('x')\n"
    "        (m / 'dir' / 'f.txt').read_text()\n"
)


def _start(run: Run, rounds: int) -> subprocess.Popen[bytes]:
    run.ready.unlink(missing_ok=True)
    run.pytester.makepyfile(test_scenario=SUITE.format(ready=os.fspath(run.ready), rounds=rounds))
    # In a process group of its own, as a shell job.
    return subprocess.Popen(
        run.command(),
        cwd=run.pytester.path,
        env=run.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_default_sigint,
    )


@pytest.fixture(params=BACKENDS)
def run(request: pytest.FixtureRequest, pytester: pytest.Pytester) -> Run:
    return Run(pytester, usable_backend(str(request.param)).name)


def test_random_sigkills_leave_nothing_behind(run: Run) -> None:
    rng = random.Random(f"{SEED}-{run.backend}")
    for trial in range(KILLS):
        child = _start(run, rounds=200)
        # Anywhere from start-up (before the first mount) to the middle of the suite.
        time.sleep(rng.uniform(0.0, 1.5))
        if trial % 2:
            child.kill()  # pytest alone: its helpers must notice by themselves
        else:
            os.killpg(child.pid, signal.SIGKILL)  # the whole job, as a CI timeout does
        child.communicate()
        _wait_until(lambda: not _mounts_under(run.basetemp) and not run._daemons())
        assert (trial, _mounts_under(run.basetemp)) == (trial, [])
        assert (trial, run._daemons()) == (trial, [])
        assert tree_digest(run.base) == run.before, trial
    run.check_next_run_passes()
    # The next start swept what the killed runs left, and its own workspaces are gone.
    assert stale_workspaces(run.basetemp) == []


def test_ctrl_c_always_ends_as_interrupted(run: Run) -> None:
    rng = random.Random(f"{SEED}-{run.backend}-int")
    for trial in range(INTERRUPTS):
        child = _start(run, rounds=10**6)  # busy in the union until interrupted
        _wait_until(lambda c=child: run.ready.exists() or c.poll() is not None, 60)
        time.sleep(rng.uniform(0.0, 0.3))
        os.killpg(child.pid, signal.SIGINT)
        out = child.communicate(timeout=60)[0].decode(errors="replace")
        assert child.returncode == pytest.ExitCode.INTERRUPTED, (trial, out)
        assert "FAILED" not in out, (trial, out)
        assert "ERROR" not in out, (trial, out)
        run.check_clean()
    run.check_next_run_passes()
    assert stale_workspaces(run.basetemp) == []
