"""shutdown(), drain() and server_close() while requests are in flight.

Issue 5, item 1.  A request is "in flight" when its handler is running and
waiting for the rest of it: each client first completes one request and
reads the reply (so its handler is certainly running), then sends half of
a second one.  Then the server is stopped in one of three ways:

* ``shutdown()``, then ``drain(WAIT)`` while the clients finish: every
  request is answered and ``drain`` reports nothing cut;
* ``shutdown()``, then ``drain(0.2)`` while the clients stay silent: every
  in-flight request is cut, the clients see the connection end, nothing
  hangs;
* ``shutdown()``, then ``server_close()`` while the clients finish: the
  thread, pool and forking models wait for their handlers (block_on_close)
  and answer; the multiplexing model closes its connections at once.

The synchronous model handles its one request on the loop's thread, so its
``shutdown()`` returns only once that request is done; it is tested alone.
No test may hang (pytest-timeout) or leak (``no_leaks``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fault_clients import ClientHost
from fault_models import BY_NAME, CONCURRENT, Model
from fault_scenarios import drain_in_flight, in_flight, stop_loop
from support import WAIT, Resources

IN_FLIGHT = 5


@pytest.fixture(scope="module")
def host() -> Iterator[ClientHost]:
    clients = ClientHost()
    yield clients
    clients.stop()


@pytest.fixture(autouse=True)
def _fresh_clients(host: ClientHost) -> Iterator[None]:
    yield
    host.close_all()


def start(server: Any) -> threading.Thread:
    loop = threading.Thread(target=server.serve_forever, name="serve_forever")
    loop.start()
    return loop


def in_background(fn: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn(*args)))
    thread.start()
    return thread, result


concurrent = pytest.mark.parametrize("model", CONCURRENT, ids=str)


@concurrent
@pytest.mark.timeout(30)
def test_drain_lets_in_flight_requests_finish(
    model: Model, host: ClientHost, no_leaks: Resources
) -> None:
    tally = drain_in_flight(model, host, IN_FLIGHT)
    assert tally.answered == tally.expected == IN_FLIGHT + 1


@concurrent
@pytest.mark.timeout(30)
def test_drain_cuts_in_flight_requests_at_the_deadline(
    model: Model, host: ClientHost, no_leaks: Resources
) -> None:
    server = model.build()
    loop = start(server)
    try:
        clients = in_flight(host, server, IN_FLIGHT)
        stop_loop(server, loop)
        assert server.drain(0.2) == IN_FLIGHT
        for got in host.read(clients):
            assert got.data == b"" and got.end in ("eof", "reset"), got
    finally:
        server.server_close()


@concurrent
@pytest.mark.timeout(30)
def test_server_close_with_requests_in_flight(
    model: Model, host: ClientHost, no_leaks: Resources
) -> None:
    server = model.build()
    loop = start(server)
    clients = in_flight(host, server, IN_FLIGHT)
    stop_loop(server, loop)
    closer, _ = in_background(server.server_close)
    if model.multiplexed:
        # Its connections live in the server: server_close() ends them now.
        closer.join(WAIT)
        for got in host.read(clients):
            assert got.data == b"" and got.end == "eof", got
    else:
        # The handlers own their connections: server_close() waits for them.
        host.send(clients, b"ond\n")
        host.shut_wr(clients)
        for got in host.read(clients):
            assert (got.data, got.end) == (b"<second>\n", "eof")
        closer.join(WAIT)
    assert not closer.is_alive(), "server_close() hung"


@pytest.mark.timeout(30)
def test_sync_shutdown_waits_for_the_request_in_flight(
    host: ClientHost, no_leaks: Resources
) -> None:
    server = BY_NAME["sync"].build()
    loop = start(server)
    try:
        [client] = in_flight(host, server, 1)
        stopper, _ = in_background(server.shutdown)
        host.send([client], b"ond\n")
        host.shut_wr([client])
        [got] = host.read([client])
        assert (got.data, got.end) == (b"<second>\n", "eof")
        stopper.join(WAIT)
        loop.join(WAIT)
        assert not stopper.is_alive() and not loop.is_alive()
        assert server.drain(0) == 0  # nothing can be left in flight
    finally:
        server.server_close()
