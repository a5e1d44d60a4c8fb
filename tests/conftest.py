"""Shared test setup: Hypothesis profiles and small helpers for building trees."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from pytest_overlay._backends.ladder import builtin_backends
from pytest_overlay._backends.protocol import Backend
from pytest_overlay._linux import namespace as _namespace
from tests.helpers import usable_backend

if os.geteuid() == 0:
    # The plugin moves root into a private mount namespace only when a collected test
    # mounts through it; these tests also mount directly (OverlayStack, the backends),
    # and no mount of theirs may outlive the run either.
    _namespace.enter_private_mount_namespace()

# "default" keeps local runs quick; .ci/run selects "ci"; "nightly" is for long searches.
# "ci" is derandomized: a commit that passes it here passes it in CI, and a new failure
# is found by a random "default" or "nightly" run, never first by the gate that lands code.
settings.register_profile(
    "default", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "nightly", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(params=[b.name for b in builtin_backends()])
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each built-in backend in turn; one that cannot work here skips with its reason."""
    return usable_backend(str(request.param))


@pytest.fixture
def fixed_umask() -> Iterator[None]:
    """Modes are part of what snapshot files and change listings compare: make new files'
    modes the same on every machine. Use with ``pytest.mark.usefixtures``."""
    old = os.umask(0o022)
    yield
    os.umask(old)


#: pytest-rerunfailures (in the test extra) starts a thread at configure when pytest-xdist
#: is installed, and a process with a second thread cannot enter a user namespace: as an
#: ordinary user every overlay test would skip. pyproject's addopts keep it out of this
#: session, this keeps it out of the sessions pytester runs; the tests of reruns load it
#: back with ``-p rerunfailures -p no:xdist`` (no thread without xdist).
NO_RERUNS = "-p no:rerunfailures"


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytest's pytester, with pytest-rerunfailures off unless a test loads it."""
    monkeypatch.setenv("PYTEST_ADDOPTS", NO_RERUNS)
    return pytester
