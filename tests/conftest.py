"""Shared test setup: Hypothesis profiles and small helpers for building trees."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# "default" keeps local runs quick; .ci/run selects "ci"; "nightly" is for long searches.
settings.register_profile(
    "default", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "nightly", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
