"""Issue 10, correctness pass of the thread models: who owns a request, when.

* daemon workers are not joined by ``server_close()``, as in stdlib (an idle
  keep-alive client must not hold the close up), for ``ThreadingMixIn`` and
  for the pool.
"""

from __future__ import annotations

import socketserver as stdlib
import threading
from collections.abc import Callable
from typing import Any

import pytest
from support import WAIT, Resources, connect, recv_exactly

import minisocketserver as ours

LOOP_NAME = "serve_forever under test"


class Held:
    """What the handlers below saw, and a gate to hold them."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)  # released once per handler started
        self.release = threading.Event()
        self.ran: list[Any] = []  # the requests a handler ran on


def gate_handler(held: Held, module: Any = ours) -> type:
    """A handler that says "started", then holds its connection until EOF or ``release``."""

    class Gate(module.StreamRequestHandler):  # type: ignore[misc,name-defined]
        def handle(self) -> None:
            held.ran.append(self.request)
            self.wfile.write(b"started\n")
            held.entered.release()
            self.rfile.readline()  # an idle keep-alive client: EOF, or a line, ends it

    return Gate


def echo_handler(held: Held) -> type:
    """Answers one line, recording the request it ran on."""

    class Echo(ours.StreamRequestHandler):
        def handle(self) -> None:
            held.ran.append(self.request)
            self.wfile.write(b"<" + self.rfile.readline().strip() + b">\n")

    return Echo


def start_loop(server: Any) -> threading.Thread:
    loop = threading.Thread(target=server.serve_forever, name=LOOP_NAME, daemon=True)
    loop.start()
    return loop


def bounded(function: Callable[[], object]) -> threading.Thread:
    """Run ``function`` on a thread; the caller joins it with a bound (a hang fails, not hangs)."""
    thread = threading.Thread(target=function, name=f"bounded {function.__name__}", daemon=True)
    thread.start()
    return thread


# -- item 1: daemon workers are not joined ---------------------------------


@pytest.mark.timeout(30)
def test_server_close_does_not_wait_for_a_daemon_worker_held_by_an_idle_client(
    no_leaks: Resources,
) -> None:
    """``http.server.ThreadingHTTPServer``'s case: a keep-alive client sits idle.

    Stdlib is the oracle: ``server_close()`` returns at once with a daemon
    worker blocked in ``readline()``.  Ours must too, and still count the
    worker (it is there for ``max_threads`` and ``drain()``).
    """
    for module in (stdlib, ours):
        held = Held()

        class Daemonic(module.ThreadingTCPServer):  # type: ignore[misc,name-defined]
            daemon_threads = True

        server = Daemonic(("127.0.0.1", 0), gate_handler(held, module))
        loop = start_loop(server)
        with connect(server.server_address) as idle:
            assert recv_exactly(idle, 8) == b"started\n"
            server.shutdown()
            loop.join(WAIT)
            closer = bounded(server.server_close)
            closer.join(WAIT)
            assert not closer.is_alive(), f"{module.__name__}: server_close() waits for the client"
            if module is ours:
                assert len(server._threads) == 1  # still counted until it ends
        # The client left: its worker sees EOF and ends (no_leaks joins it).
        closer.join(WAIT)


@pytest.mark.timeout(30)
def test_pool_server_close_does_not_wait_for_daemon_workers_held_by_idle_clients(
    no_leaks: Resources,
) -> None:
    held = Held()

    class Daemonic(ours.ThreadPoolTCPServer):
        daemon_threads = True

    server = Daemonic(("127.0.0.1", 0), gate_handler(held))
    loop = start_loop(server)
    with connect(server.server_address) as idle:
        assert recv_exactly(idle, 8) == b"started\n"
        server.shutdown()
        loop.join(WAIT)
        closer = bounded(server.server_close)
        closer.join(WAIT)
        assert not closer.is_alive(), "server_close() waits for the idle client's worker"
    closer.join(WAIT)
