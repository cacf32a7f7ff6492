"""``python -m minisocketserver tour prefork``: the master and its workers, live (issue 13, item 5).

The tour's process is the master, so it runs as a subprocess here (the test process has
threads; a master must have none), with ``-W error`` as the suite runs: a fork with a
thread alive would be a DeprecationWarning on 3.12+, and an error here.  Each test reads
one run's output: every line it checks was recorded by the tracer, logged by the master
or a worker, or printed by the driver after it saw the consequence it waited for.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the master reaps by pidfd (Linux 5.3+)"
)


@pytest.fixture(scope="module")
def tour() -> str:
    done = subprocess.run(
        [sys.executable, "-W", "error", "-m", "minisocketserver", "tour", "prefork"],
        capture_output=True, text=True, timeout=45, cwd=ROOT, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stderr == "", done.stderr[-3000:]
    return done.stdout


def _master_part(tour: str) -> str:
    return tour.split("== the group has stopped")[0]


def test_the_master_starts_two_workers_and_replaces_the_killed_one(tour: str) -> None:
    killed = re.search(r"driver: SIGKILL to worker (\d+)", tour)
    assert killed, tour[-3000:]
    assert f"prefork: worker {killed[1]} exited (signal 9), replacing it" in tour
    master = _master_part(tour)
    # 2 at the start, 1 replacement, 2 by the rolling restart
    assert master.count("TourPreforkMixIn.worker_started(pid)") == 5
    assert master.count("PreforkMixIn._pf_spawn()") == 5


def test_sighup_is_a_rolling_restart(tour: str) -> None:
    assert "prefork: rolling restart (SIGHUP): 2 workers to replace" in tour
    assert "prefork: rolling restart done" in tour
    # Each old worker is told to stop only after a new one said it serves.
    restart = tour.split("rolling restart (SIGHUP)")[1].split("rolling restart done")[0]
    assert restart.index("_pf_worker_serves") < restart.index("_pf_stop_worker")


def test_every_reply_is_an_echo_and_the_group_stops_gracefully(tour: str) -> None:
    assert "the reply: b'hello\\xe5\\xa5\\xbd'" in tour
    assert "the reply: b'world\\xe5\\xa5\\xbd'" in tour
    assert "prefork: graceful stop (SIGTERM): 2 workers" in tour
    assert "the driver exited with status 0" in tour


def test_the_workers_recordings_are_read_back_from_their_files(tour: str) -> None:
    workers = tour.split("== the group has stopped")[1]
    forks = re.findall(r"^(child process \d+) +<~ fork\(\)$", workers, re.M)
    assert len(forks) == 5, workers[:3000]
    assert workers.count("PreforkMixIn.worker_init()") == 5
    # The two requests were handled in workers, never in the master.
    assert workers.count("SeedEchoHandler.handle()") == 2
    assert "SeedEchoHandler.handle()" not in _master_part(tour)
