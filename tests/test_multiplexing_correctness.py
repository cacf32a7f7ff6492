"""MultiplexingMixIn correctness: memory, threads, reused descriptors (issue 10).

Items 4 (ended connections are released at once), 5 (``shutdown()`` racing
``server_close()``), 7 (a reused descriptor number is watched again) and 8
(a, d, e, f: ``finish()`` raising, ``handle_request()``, the handler class
checked at construction, ``send()`` from another thread).  Real sockets on
127.0.0.1; every wait is on a socket read, a join or an event, with a bound.
"""

from __future__ import annotations

import functools
import gc
import socket
import struct
import sys
import threading
import tracemalloc
from collections.abc import Callable, Iterator
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


# -- item 5: shutdown() racing server_close() --------------------------------


def race_shutdown_and_server_close(errors: list[BaseException | None]) -> None:
    """Serve 8 connections, then shutdown() and server_close() from two threads at once."""
    finished: list[object] = []

    class Greeter(socketserver.MultiplexedRequestHandler):
        def setup(self) -> None:
            self.send(b"hi")

        def finish(self) -> None:
            finished.append(self)

    server = socketserver.MultiplexingTCPServer((HOST, 0), Greeter)
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    clients = [connect(server.server_address) for _ in range(8)]
    try:
        for client in clients:
            assert recv_exactly(client, 2) == b"hi"
        start = threading.Barrier(2)

        def at_once(call: Callable[[], None]) -> None:
            start.wait(WAIT)
            call()

        racers = [
            threading.Thread(target=at_once, args=(call,), daemon=True)
            for call in (server.shutdown, server.server_close)
        ]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(WAIT)
            assert not racer.is_alive(), "shutdown() or server_close() hung"
        loop.join(WAIT)
        assert not loop.is_alive()
        assert not errors, errors
        assert len(finished) == 8 and len(set(map(id, finished))) == 8, finished
        for client in clients:
            assert recv_until_eof(client) == b""
    finally:
        for client in clients:
            client.close()
        if loop.is_alive():
            server.shutdown()
        server.server_close()


def test_server_close_from_another_thread_stops_the_loop_first(
    no_leaks: Resources, thread_errors: list[BaseException | None]
) -> None:
    """Without shutdown(): the loop returns, then every connection ends."""
    finished: list[str] = []

    class Greeter(socketserver.MultiplexedRequestHandler):
        def setup(self) -> None:
            self.send(b"hi")

        def finish(self) -> None:
            finished.append(threading.current_thread().name)

    server = socketserver.MultiplexingTCPServer((HOST, 0), Greeter)
    loop = threading.Thread(target=server.serve_forever, name="the loop")
    loop.start()
    clients = [connect(server.server_address) for _ in range(3)]
    try:
        for client in clients:
            assert recv_exactly(client, 2) == b"hi"
        server.server_close()
        loop.join(WAIT)
        assert not loop.is_alive(), "serve_forever() still runs on a closed server"
        assert finished == [threading.current_thread().name] * 3
        for client in clients:
            assert recv_until_eof(client) == b""
        assert not thread_errors, thread_errors
    finally:
        for client in clients:
            client.close()
        if loop.is_alive():
            server.shutdown()
            loop.join(WAIT)
        server.server_close()


@pytest.mark.timeout(60)
def test_shutdown_racing_server_close(thread_errors: list[BaseException | None]) -> None:
    for _ in range(200):
        race_shutdown_and_server_close(thread_errors)


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
@pytest.mark.parametrize("selector", [p for p in SELECTORS if p.id != "SelectSelector"])
def test_a_group_member_closed_without_shutdown_frees_its_number(
    selector: Any, no_leaks: Resources
) -> None:
    """A ServerGroup member closed behind the loop's back: the connection the
    next member accepts gets its number, and is served.  (select() itself
    fails on a closed descriptor: SelectSelector cannot survive this.)"""
    numbers: list[int] = []

    class Numbered(Echo):
        def setup(self) -> None:
            numbers.append(self.request.fileno())

    class Group(socketserver.ServerGroup):
        selector_class = selector

    plain = socketserver.TCPServer((HOST, 0), socketserver.BaseRequestHandler)
    multiplexing = socketserver.MultiplexingTCPServer((HOST, 0), Numbered)
    group = Group([plain, multiplexing])
    loop = threading.Thread(target=group.serve_forever)
    with group:
        loop.start()
        try:
            with connect(multiplexing.server_address) as client:  # the loop is up
                client.sendall(b"up")
                assert recv_exactly(client, 2) == b"up"
            client = socket.socket()  # before the close: the freed number is not its
            with client:
                client.settimeout(WAIT)
                number = plain.fileno()
                plain.server_close()  # no shutdown(): the loop still watches it
                client.connect(multiplexing.server_address)
                client.sendall(b"ping")
                assert recv_exactly(client, 4) == b"ping"
                assert numbers[-1] == number, (numbers, number)
        finally:
            group.shutdown()
            loop.join(WAIT)


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


# -- item 8a: finish() raising KeyboardInterrupt -----------------------------


def test_server_close_ends_every_connection_when_a_finish_raises(
    no_leaks: Resources,
) -> None:
    finished: list[object] = []

    class Interrupted(socketserver.MultiplexedRequestHandler):
        def setup(self) -> None:
            self.send(b"hi")

        def finish(self) -> None:
            finished.append(self)
            if len(finished) == 1:
                raise KeyboardInterrupt

    server = socketserver.MultiplexingTCPServer((HOST, 0), Interrupted)
    clients: list[socket.socket] = []
    try:
        with serving_only(server):
            clients += [connect(server.server_address) for _ in range(3)]
            for client in clients:
                assert recv_exactly(client, 2) == b"hi"
        with pytest.raises(KeyboardInterrupt):
            server.server_close()
        assert len(finished) == 3
        for client in clients:
            assert recv_until_eof(client) == b""
    finally:
        for client in clients:
            client.close()
        server.server_close()


# -- item 8d: handle_request() ------------------------------------------------


class EchoOnce(socketserver.LineRequestHandler):
    def line_received(self, line: bytes) -> None:
        self.send(line)
        self.close()


def test_handle_request_serves_the_connection_to_its_end(no_leaks: Resources) -> None:
    replies: list[bytes] = []

    def client(address: Any) -> None:
        with connect(address) as sock:
            sock.sendall(b"ping\n")
            replies.append(recv_until_eof(sock))

    timeouts: list[int] = []

    class Server(socketserver.MultiplexingTCPServer):
        timeout = WAIT

        def handle_timeout(self) -> None:
            timeouts.append(1)

    with Server((HOST, 0), EchoOnce) as server:
        # Once before any loop, once after a serve_forever() left the
        # listener non-blocking.
        for round_ in range(2):
            if round_:
                with serving_only(server):
                    pass
            thread = threading.Thread(target=client, args=(server.server_address,))
            thread.start()
            server.handle_request()
            thread.join(WAIT)
            assert not thread.is_alive()
            assert not timeouts
            assert replies == [b"ping\n"] * (round_ + 1)
            assert server.connections == []


class serving_only:
    """serve_forever() on a thread for the block, then shutdown(), no close.

    Even a loop shut down before its first turn has attached the server
    (made its listener non-blocking), which is what the tests need.
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.loop = threading.Thread(target=server.serve_forever)

    def __enter__(self) -> Any:
        self.loop.start()
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.loop.join(WAIT)
        assert not self.loop.is_alive()


# -- item 8e: the handler class is checked at construction -------------------


@pytest.mark.parametrize(
    "handler", [socketserver.BaseRequestHandler, socketserver.StreamRequestHandler]
)
def test_a_blocking_handler_class_is_refused_at_construction(
    handler: type, no_leaks: Resources
) -> None:
    with pytest.raises(TypeError, match=rf"MultiplexedRequestHandler.*{handler.__name__}"):
        socketserver.MultiplexingTCPServer((HOST, 0), handler)


def test_a_handler_factory_is_accepted(no_leaks: Resources) -> None:
    class Tagged(socketserver.MultiplexedRequestHandler):
        def __init__(self, request: Any, client_address: Any, server: Any, tag: bytes) -> None:
            self.tag = tag
            super().__init__(request, client_address, server)

        def data_received(self, data: bytes) -> None:
            self.send(self.tag + data)

    factory = functools.partial(Tagged, tag=b">")
    server = socketserver.MultiplexingTCPServer((HOST, 0), factory)
    with serving(server), connect(server.server_address) as client:
        client.sendall(b"x")
        assert recv_exactly(client, 2) == b">x"


# -- item 8f: send() from another thread; call_soon_threadsafe ---------------


def test_send_from_another_thread_raises_and_call_soon_threadsafe_works(
    no_leaks: Resources,
) -> None:
    outcomes: list[BaseException | None] = []

    class Offloading(socketserver.MultiplexedRequestHandler):
        def data_received(self, data: bytes) -> None:
            threading.Thread(target=self.work, args=(data,)).start()

        def work(self, data: bytes) -> None:  # on a worker thread
            reply = data.upper()
            try:
                self.send(reply)
            except RuntimeError as exc:
                outcomes.append(exc)
            try:
                self.close()
            except RuntimeError as exc:
                outcomes.append(exc)
            self.server.call_soon_threadsafe(lambda: self.send(reply))

    server = socketserver.MultiplexingTCPServer((HOST, 0), Offloading)
    with serving(server), connect(server.server_address) as client:
        client.sendall(b"work")
        assert recv_exactly(client, 4) == b"WORK"
    assert len(outcomes) == 2
    assert all("call_soon_threadsafe" in str(exc) for exc in outcomes), outcomes


def test_call_soon_threadsafe_is_never_lost(no_leaks: Resources) -> None:
    """Posted just before shutdown(), a callback still runs on the loop's thread;
    posted while no loop serves, it runs at once on the caller's."""
    ran_on: list[str] = []
    server = socketserver.MultiplexingTCPServer((HOST, 0), Echo)
    loop = threading.Thread(target=server.serve_forever, name="the loop")
    with server:
        loop.start()
        try:
            with connect(server.server_address) as client:  # the loop is up
                client.sendall(b"x")
                assert recv_exactly(client, 1) == b"x"
            for _ in range(50):
                server.call_soon_threadsafe(
                    lambda: ran_on.append(threading.current_thread().name)
                )
        finally:
            server.shutdown()
            loop.join(WAIT)
        assert ran_on == ["the loop"] * 50
        server.call_soon_threadsafe(lambda: ran_on.append(threading.current_thread().name))
        assert ran_on[-1] == threading.current_thread().name


def test_a_callback_run_as_the_loop_ends_may_send(no_leaks: Resources) -> None:
    """The loop stops with a posted callback not yet run: it runs as the loop
    ends, and its send(), too large for the kernel, queues quietly."""
    entered, release, requested = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException | None] = []

    class Stalling(socketserver.MultiplexedRequestHandler):
        def data_received(self, data: bytes) -> None:
            entered.set()
            assert release.wait(WAIT)

    class Server(socketserver.MultiplexingTCPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            errors.append(sys.exc_info()[1])

        def shutdown(self) -> None:
            self._shutdown_requested = True  # what shutdown() does first...
            requested.set()  # ...then the loop may go on
            super().shutdown()

    server = Server((HOST, 0), Stalling)
    with server, serving_only(server), connect(server.server_address) as client:
        client.sendall(b"x")
        assert entered.wait(WAIT)  # the loop is stuck in data_received
        (handler,) = server.connections
        server.call_soon_threadsafe(lambda: handler.send(b"y" * 8_000_000))
        stopper = threading.Thread(target=server.shutdown)
        stopper.start()
        assert requested.wait(WAIT)
        release.set()
        stopper.join(WAIT)
        assert handler.pending > 0  # queued for the next loop, or server_close()
    assert not errors, errors


def test_send_after_the_loop_stopped_is_allowed_from_another_thread(
    no_leaks: Resources,
) -> None:
    class Greeter(socketserver.MultiplexedRequestHandler):
        def setup(self) -> None:
            self.send(b"hi")

    server = socketserver.MultiplexingTCPServer((HOST, 0), Greeter)
    with server, serving_only(server), connect(server.server_address) as client:
        assert recv_exactly(client, 2) == b"hi"
        loop_has_turned(server)  # the handler joined the table after setup()
        (handler,) = server.connections
        server.shutdown()
        handler.send(b"late")  # no loop runs: this thread may
        assert recv_exactly(client, 4) == b"late"
