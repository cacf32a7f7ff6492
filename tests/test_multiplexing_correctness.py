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
import threading
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from support import WAIT, Resources, connect, loop_has_turned, serving

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
