"""docs/examples/herd.py, run as the chapter runs it, and the claims chapter 12 makes on it.

The chapter shows ``python docs/examples/herd.py``'s output and says: with one shared
listener every waiting process is woken per connection; ``EPOLLEXCLUSIVE`` wakes fewer
(one, here); one SO_REUSEPORT listener per process wakes only the process whose socket
the kernel picked; and closing one of two SO_REUSEPORT listeners resets the connections
queued on it, while closing one descriptor of a shared listener loses none.  This test
runs the script (in a subprocess: it forks, and the test process may have threads) with
fewer connections, so that it stays near a second, and checks each of those sentences.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HERD = Path(__file__).resolve().parent.parent / "docs" / "examples" / "herd.py"
WORKERS = 3
CONNECTIONS = 8

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="epoll, EPOLLEXCLUSIVE and /proc are Linux's"
)


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(HERD), "--json", f"--workers={WORKERS}",
         f"--connections={CONNECTIONS}"],
        capture_output=True, text=True, timeout=30, check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _run(figures: dict[str, Any], setup: str) -> dict[str, Any]:
    (found,) = [r for r in figures["runs"] if r["setup"] == setup]
    return found


def test_every_connection_is_accepted_once(figures: dict[str, Any]) -> None:
    for run in figures["runs"]:
        assert sum(run["accepted"]) == CONNECTIONS, run


def test_a_shared_listener_wakes_the_herd(figures: dict[str, Any]) -> None:
    shared = _run(figures, "shared")
    # Every process sleeps in epoll_wait on the listener: each connection wakes each
    # of them (one less would mean a process was still awake, which SETTLE prevents).
    assert shared["woken_per_connection"] >= WORKERS - 1, shared


def test_epollexclusive_wakes_fewer(figures: dict[str, Any]) -> None:
    shared, exclusive = _run(figures, "shared"), _run(figures, "exclusive")
    assert exclusive["woken_per_connection"] < shared["woken_per_connection"]
    assert exclusive["woken_per_connection"] <= 1.5, exclusive  # "one or more": one, here


def test_reuseport_wakes_only_the_chosen_process(figures: dict[str, Any]) -> None:
    reuseport = _run(figures, "reuseport")
    assert reuseport["woken_per_connection"] <= 1.5, reuseport
    # Each process woke for what it accepted, not for its neighbours' connections.
    assert reuseport["woken"] == reuseport["accepted"], reuseport


def test_closing_a_reuseport_listener_resets_its_queue(figures: dict[str, Any]) -> None:
    resets = {r["setup"]: r for r in figures["resets"]}
    shared, reuseport = resets["shared"], resets["reuseport"]
    assert shared["reset"] == 0 and shared["served"] == shared["queued"], shared
    # The kernel hashes each of the 20 connections to one of two sockets: both queues
    # hold some (all 20 on one side has a chance of 2 in a million).
    assert reuseport["reset"] > 0 and reuseport["served"] > 0, reuseport
    assert reuseport["reset"] + reuseport["served"] == reuseport["queued"], reuseport
