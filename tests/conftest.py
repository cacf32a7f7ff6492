"""Shared pytest set-up: hypothesis profiles and the leak-checking fixture.

CI (``CI=true``, set by .ci/run) loads the ``ci`` profile: derandomized, so
a CI run is repeatable, and small enough to keep the suite under three
minutes.  Locally the ``dev`` profile explores more, with fresh randomness.
Pick one explicitly with ``HYPOTHESIS_PROFILE=dev pytest``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from support import Resources

# Real sockets and threads make example timings vary; a deadline would turn
# a busy CI core into a flaky failure, so time is bounded by pytest-timeout.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def no_leaks() -> Iterator[Resources]:
    """Fail the test if it leaves descriptors, threads or child processes behind."""
    baseline = Resources.snapshot()
    yield baseline
    baseline.assert_back_to_baseline()
