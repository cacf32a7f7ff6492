"""MultiplexingMixIn correctness: memory, threads, reused descriptors (issue 10).

Items 4 (ended connections are released at once), 5 (``shutdown()`` racing
``server_close()``), 7 (a reused descriptor number is watched again) and 8
(a, d, e, f: ``finish()`` raising, ``handle_request()``, the handler class
checked at construction, ``send()`` from another thread).  Real sockets on
127.0.0.1; every wait is on a socket read, a join or an event, with a bound.
"""

from __future__ import annotations

import gc
import socket
import struct
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from support import WAIT, Resources, connect, loop_has_turned, recv_exactly, recv_until_eof, serving

import minisocketserver as socketserver
from minisocketserver.reactor import Reactor

HOST = "127.0.0.1"

SELECTORS = [
    pytest.param(getattr(__import__("selectors"), name), id=name)
    for name in ("EpollSelector", "PollSelector", "SelectSelector")
    if hasattr(__import__("selectors"), name)
]


class Echo(socketserver.MultiplexedRequestHandler):
    def data_received(self, data: bytes) -> None:
        self.send(data)


@pytest.fixture
def thread_errors() -> Iterator[list[BaseException | None]]:
    """Exceptions that ended a thread during the test (threading.excepthook)."""
    errors: list[BaseException | None] = []
    previous = threading.excepthook

    def hook(args: Any) -> None:
        errors.append(args.exc_value)

    threading.excepthook = hook
    try:
        yield errors
    finally:
        threading.excepthook = previous


def reset(client: socket.socket) -> None:
    """Close with RST, the way a client that crashes or times out goes away."""
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


# -- item 4: ended connections are released at once --------------------------


def test_cancelled_timers_do_not_pile_up_behind_a_long_one() -> None:
    with Reactor(__import__("selectors").DefaultSelector) as reactor:
        reactor.call_later(3600.0, lambda: None)  # an idle client's timeout, at the top
        for _ in range(10_000):
            reactor.call_later(60.0, lambda: None).cancel()
        assert len(reactor._timers) <= 200  # was 10,001


def test_a_cancelled_timer_drops_its_callback() -> None:
    with Reactor(__import__("selectors").DefaultSelector) as reactor:
        big = bytearray(1 << 20)
        timer = reactor.call_later(60.0, lambda: big.clear())
        timer.cancel()
        assert timer.callback.__closure__ is None  # no reference to `big` left
        assert reactor.select(0) == []


@pytest.mark.timeout(30)
def test_ended_connections_release_their_buffers(no_leaks: Resources) -> None:
    """One idle client with a long timeout, then 2,000 clients that each leave
    32 KiB of a line without its newline and reset: nothing of theirs stays."""
    finished = 0
    all_ended = threading.Event()
    count = 2000

    class Lines(socketserver.LineRequestHandler):
        timeout = 60.0

        def setup(self) -> None:
            self.send(b"+")

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if len(self._partial) >= 32 * 1024:
                self.send(b"k")  # all of it buffered: the client may go

        def finish(self) -> None:
            nonlocal finished
            finished += 1
            if finished == count:
                all_ended.set()

    payload = b"x" * (32 * 1024)
    with serving(socketserver.MultiplexingTCPServer((HOST, 0), Lines)) as server:
        idle = connect(server.server_address)
        try:
            assert idle.recv(1) == b"+"  # the loop serves it...
            loop_has_turned(server)  # ...and its timer is at the top of the heap
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for _ in range(count):
                    client = connect(server.server_address)
                    assert client.recv(1) == b"+"
                    client.sendall(payload)
                    assert client.recv(1) == b"k"
                    reset(client)
                assert all_ended.wait(WAIT), finished
                loop_has_turned(server)
                gc.collect()
                retained = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
        finally:
            idle.close()
    # Before the fix: 2,000 x 32 KiB, about 66 MB, held by the cancelled
    # idle timers behind the idle client's.
    assert retained < 2 * 1024 * 1024, retained


# -- item 7: a reused descriptor number is watched again ---------------------


@pytest.mark.parametrize("selector", SELECTORS)
def test_watch_replaces_an_entry_left_by_a_closed_socket(selector: Any) -> None:
    with Reactor(selector) as reactor:
        old, old_peer = socket.socketpair()
        number = old.fileno()
        reactor.watch(old, 1, lambda mask: None)
        old.close()  # behind the reactor's back
        new, new_peer = socket.socketpair()
        with old_peer, new, new_peer:
            if new.fileno() != number:
                new, new_peer = new_peer, new
            assert new.fileno() == number, "the kernel did not reuse the number"
            seen: list[int] = []
            reactor.watch(new, 1, seen.append)
            new_peer.send(b"x")
            for function, argument in reactor.select(WAIT):
                function(argument)
            assert seen, "the new socket is not watched"
            assert reactor._selector.get_key(new).fileobj is new


@pytest.mark.timeout(30)
@pytest.mark.parametrize("then", ["nothing", "send", "close"])
@pytest.mark.parametrize("selector", SELECTORS)
def test_a_handler_closing_its_own_socket(
    selector: Any, then: str, no_leaks: Resources, thread_errors: list[BaseException | None]
) -> None:
    finished: list[object] = []
    errors: list[BaseException | None] = []
    ended = threading.Event()

    class SelfCloser(Echo):
        def data_received(self, data: bytes) -> None:
            if data != b"bye":
                self.send(data)
                return
            self.request.close()
            # What a handler may go on to do, not knowing better.
            if then == "send":
                self.send(b"too late")
            elif then == "close":
                self.close()

        def finish(self) -> None:
            finished.append(self)
            ended.set()

    class Server(socketserver.MultiplexingTCPServer):
        selector_class = selector

        def handle_error(self, request: Any, client_address: Any) -> None:
            errors.append(sys.exc_info()[1])

    with serving(Server((HOST, 0), SelfCloser)) as server:
        with connect(server.server_address) as first:
            first.sendall(b"bye")
            assert recv_until_eof(first) == b""
        assert ended.wait(WAIT), "finish() did not run"
        loop_has_turned(server)
        reactor = server._reactor
        assert reactor is not None
        # The listener and the wake-up channel only: no stale entry.
        assert len(reactor._selector.get_map()) == 2
        # The next connections get the freed number: they are served.
        for _ in range(3):
            with connect(server.server_address) as client:
                client.sendall(b"ping")
                assert recv_exactly(client, 4) == b"ping"
    assert len(finished) == 4
    assert not errors and not thread_errors, (errors, thread_errors)
