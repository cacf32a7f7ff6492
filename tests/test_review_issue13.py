"""Issue 13 review: breaks found in prefork, the PROXY stage and serve, each a reproducer.

Each test is a bounded, loopback-only reproducer of one break, written
before its fix; masters run as their own processes (tests/prefork_server.py)
and are stopped by pid (test_prefork's ``master()``).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from support import WAIT
from test_prefork import ask, hold, master, tls_options, wait_gone

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs fork/signals")


def test_prefork_forking_model_leaves_no_grandchild_after_a_graceful_stop() -> None:
    # PreforkMixIn + ForkingMixIn: a request's child (the worker's child)
    # blocks on a client that sends nothing more.  SIGTERM to the master
    # must leave no process behind once graceful_timeout has passed: before
    # the fix the child inherited the worker's SIGTERM handler (it queued a
    # callback on a copy of the worker's loop, so it never left), and the
    # master's SIGKILL of the worker came before the worker's own cut.
    with master("--model", "forking", "--workers", "1", "--graceful", "0.3") as m:
        m.started(1)
        m.logged("serves")
        client, child = hold(m.port)
        m.pids.add(child)
        with client:
            m.signal(signal.SIGTERM)
            assert m.wait() == 0
            assert not wait_gone({child}, WAIT), "the request's child outlived the group"


def test_prefork_a_worker_that_exits_0_before_serving_is_not_replaced_in_a_fork_loop() -> None:
    # The respawn delay held only for a non-zero status: a worker that
    # leaves with status 0 before it serves (os._exit(0) in worker_init, a
    # framework's sys.exit path) was replaced at once, forking as fast as
    # the machine goes.
    with master("--workers", "1", "--exit-init") as m:
        (first,) = m.started(1)
        exited_at = m.exited(first)["time"]
        waited = m.event("started")["time"] - exited_at
        assert waited >= 0.99, f"replaced {waited:.4f} s after it exited before serving"


def test_prefork_a_second_sigusr2_during_an_upgrade_starts_no_second_new_master() -> None:
    # Before: each SIGUSR2 forked a new master; the second one, started
    # while the first was coming up, also served the port and also stopped
    # the old master: two masters, twice the workers, on one port.
    with master("--workers", "1") as m:
        m.started(1)
        m.signal(signal.SIGUSR2)
        m.logged("upgrade (SIGUSR2): new master")
        m.signal(signal.SIGUSR2)
        line = m.logged("upgrade (SIGUSR2)")
        if "ignored" not in line:  # a second new master: known, to be killed
            m.event("listening")
            m.event("listening")
        assert "ignored" in line
        new = m.event("listening")["master"]
        assert m.wait() == 0
        m.event("stopped")  # the old master's
        os.kill(new, signal.SIGTERM)
        m.event("stopped")  # the new master's
        m.assert_clean_log()


def test_prefork_an_upgrade_whose_new_program_exits_leaves_the_old_master_serving() -> None:
    # The re-executed program exits at once (a broken release).  The old
    # master says so and serves on; a later SIGUSR2 is not ignored.
    with master("--workers", "1", "--fail-as-upgrade") as m:
        (worker,) = m.started(1)
        m.signal(signal.SIGUSR2)
        m.logged("exited before it served; this master serves on")
        assert ask(m.port) == worker
        m.signal(signal.SIGUSR2)
        m.logged("exited before it served; this master serves on")
        m.signal(signal.SIGTERM)
        assert m.wait() == 0


def test_prefork_max_requests_counts_a_multiplexed_tls_connection_once(tmp_path: Path) -> None:
    # MultiplexingTLSServer calls process_request twice per connection (the
    # raw socket starts the handshake, the TLSTransport comes back after
    # it): max_requests=2 recycled the worker after one connection.
    args, context = tls_options("tls", tmp_path)
    args[1] = "mtls"
    with master(*args, "--workers", "1", "--max-requests", "2") as m:
        (worker,) = m.started(1)
        assert [ask(m.port, context=context) for _ in range(2)] == [worker, worker]
        m.exited(worker)  # then it leaves: the second one was its last
        m.signal(signal.SIGTERM)
        assert m.wait() == 0
