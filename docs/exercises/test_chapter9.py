"""Checks for chapter 9's exercises (docs/09-shutdown.md, "Exercises")."""

from __future__ import annotations

import socket
import threading
import time
from types import ModuleType

from exercise_support import WAIT, read_to_eof

import minisocketserver as socketserver


def test_chapter9_wakeable_loop_stops_at_once(answers: ModuleType) -> None:
    loop = answers.WakeableLoop()
    try:
        runner = threading.Thread(target=loop.run)
        runner.start()
        # The loop serves: a connection is accepted (and closed) while it runs.
        with socket.create_connection(loop.listener.getsockname(), timeout=WAIT) as client:
            assert read_to_eof(client) == b""
        started = time.monotonic()
        loop.stop()
        runner.join(WAIT)
        elapsed = time.monotonic() - started
        assert not runner.is_alive(), "run() did not return after stop()"
        # Far below any polling interval worth the name (stdlib's is 0.5 s).
        assert elapsed < 0.25, elapsed
    finally:
        loop.close()


def test_chapter9_shutdown_on_the_loops_own_thread(answers: ModuleType) -> None:
    # stdlib's shutdown() would wait for itself forever here; ours refuses.
    assert answers.shutdown_on_the_loops_thread() == "RuntimeError"


def test_chapter9_stop_after_one_makes_serve_forever_return(answers: ModuleType) -> None:
    with socketserver.TCPServer(("127.0.0.1", 0), answers.StopAfterOne) as server:
        loop = threading.Thread(target=server.serve_forever)
        loop.start()
        try:
            with socket.create_connection(server.server_address, timeout=WAIT) as client:
                assert read_to_eof(client) == b"bye"
            loop.join(WAIT)
            assert not loop.is_alive(), "serve_forever() went on after the handler's request"
        finally:
            if loop.is_alive():  # a wrong answer: stop the loop so the check can end
                server.shutdown()
                loop.join(WAIT)
    # The thread the handler started to call shutdown() has returned by now too.
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and thread.name.endswith("(shutdown)"):
            thread.join(WAIT)
