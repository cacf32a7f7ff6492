"""MultiplexingMixIn: echo on every selector, backpressure, idle timeout, finish() once.

Issue 3, items 1, 3 and 5.  Real sockets on 127.0.0.1; the tests synchronise
on socket reads and on events the handlers set, never on sleeps, except
where elapsed time is what is under test (the idle timeout) or the window in
which a spinning loop would burn CPU.
"""

from __future__ import annotations

import contextlib
import os
import resource
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import WAIT, Resources, connect, recv_exactly, recv_until_eof, serving

import minisocketserver as socketserver
from minisocketserver.reactor import Reactor

HOST = "127.0.0.1"


class Echo(socketserver.MultiplexedRequestHandler):
    def data_received(self, data: bytes) -> None:
        self.send(data)


class Recorder:
    """What the handlers of one test did: finish() calls, handle_error() calls."""

    def __init__(self) -> None:
        # The handlers themselves, not their id()s: an ended handler may be
        # freed and its id() reused by the next one.
        self.finished: list[Any] = []
        self.finish_event = threading.Event()
        self.errors: list[BaseException | None] = []

    def handler(self, base: type[socketserver.MultiplexedRequestHandler]) -> Any:
        recorder = self

        class Recorded(base):  # type: ignore[misc, valid-type]
            def finish(self) -> None:
                recorder.finished.append(self)
                recorder.finish_event.set()

        return Recorded

    def server(self, handler: Any, **attrs: Any) -> socketserver.MultiplexingTCPServer:
        recorder = self

        class Server(socketserver.MultiplexingTCPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                recorder.errors.append(sys.exc_info()[1])

        for name, value in attrs.items():
            setattr(Server, name, value)
        return Server((HOST, 0), handler)

    def wait_finished(self, count: int) -> None:
        deadline = time.monotonic() + WAIT
        while len(self.finished) < count:
            assert self.finish_event.wait(deadline - time.monotonic()), self.finished
            self.finish_event.clear()
        assert len(set(self.finished)) == len(self.finished), self.finished


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    "selector",
    [
        selectors.SelectSelector,
        selectors.PollSelector,
        selectors.EpollSelector,
        selectors.DefaultSelector,
    ],
)
def test_echo_many_clients_on_every_selector(
    selector: type[selectors.BaseSelector], no_leaks: Resources
) -> None:
    class Server(socketserver.MultiplexingTCPServer):
        selector_class = selector

    payloads = [bytes([i]) * (i * 7000 + 1) for i in range(16)]
    with serving(Server((HOST, 0), Echo)) as server:
        clients = [connect(server.server_address) for _ in payloads]
        try:
            # All requests first, then all replies: the server must be
            # serving every connection at once, in its one thread.
            for client, payload in zip(clients, payloads, strict=True):
                client.sendall(payload)
                client.shutdown(socket.SHUT_WR)
            for client, payload in zip(clients, payloads, strict=True):
                assert recv_until_eof(client) == payload
        finally:
            for client in clients:
                client.close()


@pytest.mark.timeout(20)
def test_unix_stream_server_echoes(tmp_path: Any, no_leaks: Resources) -> None:
    path = str(tmp_path / "echo.sock")
    server = socketserver.MultiplexingUnixStreamServer(path, Echo)
    with serving(server), connect(path, socket.AF_UNIX) as client:
        client.sendall(b"over a unix socket")
        client.shutdown(socket.SHUT_WR)
        assert recv_until_eof(client) == b"over a unix socket"


@pytest.mark.timeout(20)
def test_backpressure_stops_reading_and_bounds_queued_output(no_leaks: Resources) -> None:
    high, low, total = 64 * 1024, 16 * 1024, 8 * 1024 * 1024
    paused = threading.Event()
    peak = [0]
    read_while_over_high = []

    class Mirror(Echo):
        write_high_water = high
        write_low_water = low

        def data_received(self, data: bytes) -> None:
            if self.pending > high:
                read_while_over_high.append(self.pending)
            super().data_received(data)
            peak[0] = max(peak[0], self.pending)
            if self.pending > high:
                paused.set()

    server = socketserver.MultiplexingTCPServer((HOST, 0), Mirror)
    with serving(server), connect(server.server_address) as client:
            # The client sends 8 MiB and reads nothing until the server has
            # queued more than the high-water mark.  Without backpressure
            # the server would go on reading and queue megabytes.
            sender = threading.Thread(target=client.sendall, args=(b"z" * total,))
            sender.start()
            assert paused.wait(WAIT)
            received = 0
            while received < total:
                chunk = client.recv(1 << 20)
                assert chunk.strip(b"z") == b"" and chunk
                received += len(chunk)
            sender.join(WAIT)
            assert not sender.is_alive()
    assert read_while_over_high == []
    # At most the high-water mark plus what one data_received() echoes.
    assert high < peak[0] <= high + Mirror.recv_size


@pytest.mark.timeout(20)
def test_backpressure_holds_back_buffered_lines_until_the_queue_drains(
    no_leaks: Resources,
) -> None:
    requests, reply_size = 200, 64 * 1024
    peak = [0]

    class BigReplies(socketserver.LineRequestHandler):
        def line_received(self, line: bytes) -> None:
            self.send(b"x" * int(line.split()[1]))
            peak[0] = max(peak[0], self.pending)

    server = socketserver.MultiplexingTCPServer((HOST, 0), BigReplies)
    with serving(server), socket.socket() as client:
        # A small receive window, so that the kernel's buffers cannot absorb
        # the replies in the server's place (set before connect to count).
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.settimeout(WAIT)
        client.connect(server.server_address)
        # One chunk holds every request, and EOF follows at once: the lines
        # and the EOF must wait in the handler while the replies drain.
        client.sendall(b"big %d\n" % reply_size * requests)
        client.shutdown(socket.SHUT_WR)
        reply = recv_until_eof(client)
    assert reply == b"x" * (requests * reply_size)
    assert peak[0] <= BigReplies.write_high_water + reply_size


@pytest.mark.timeout(20)
def test_idle_timeout_closes_only_idle_connections(no_leaks: Resources) -> None:
    recorder = Recorder()

    class Impatient(Echo):
        timeout = 0.5

    server = recorder.server(recorder.handler(Impatient))
    started = time.monotonic()  # before the connections exist: a lower bound
    with (
        serving(server),
        connect(server.server_address) as idle,
        connect(server.server_address) as busy,
    ):
        # A round trip on the busy connection every 50 ms (the wait for the
        # idle one's EOF) until the idle one is closed: the busy one never
        # goes quiet for anything near its timeout.
        idle.settimeout(0.05)
        closed_after = None
        while closed_after is None:
            assert time.monotonic() - started < WAIT
            busy.sendall(b"ping")
            assert recv_exactly(busy, 4) == b"ping"
            with contextlib.suppress(TimeoutError):
                assert idle.recv(1) == b""
                closed_after = time.monotonic() - started
        # Elapsed time is what is tested here: the loop must wake for the
        # deadline (it has no periodic work), and not before it.
        assert 0.5 <= closed_after < 0.5 + 2.0
        busy.sendall(b"still here")
        assert recv_exactly(busy, 10) == b"still here"
        assert recv_until_eof(busy) == b""
    recorder.wait_finished(2)
    assert recorder.errors == []


def _reset(client: socket.socket) -> None:
    # SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


class Boom(Echo):
    def data_received(self, data: bytes) -> None:
        if data.startswith(b"boom"):
            raise ValueError("boom")
        super().data_received(data)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("path", ["peer close", "reset", "error", "timeout", "close()"])
def test_finish_runs_exactly_once_on_every_path(path: str, no_leaks: Resources) -> None:
    recorder = Recorder()

    class Handler(Boom):
        timeout = 0.2 if path == "timeout" else None

        def data_received(self, data: bytes) -> None:
            if data == b"bye":
                self.send(b"bye")
                self.close()
                self.close()  # twice: still one finish()
            else:
                super().data_received(data)

    with serving(recorder.server(recorder.handler(Handler))) as server:
        client = connect(server.server_address)
        client.sendall(b"hi")
        assert recv_exactly(client, 2) == b"hi"
        if path == "peer close":
            client.close()
        elif path == "reset":
            _reset(client)
        elif path == "error":
            client.sendall(b"boom")
        elif path == "close()":
            client.sendall(b"bye")
            assert recv_until_eof(client) == b"bye"
        recorder.wait_finished(1)
        if path != "timeout":
            assert Handler.timeout is None
        client.close()
        # The server still serves after whatever ended that connection.
        with connect(server.server_address) as other:
            other.sendall(b"next")
            assert recv_exactly(other, 4) == b"next"
    recorder.wait_finished(2)
    assert [type(e) for e in recorder.errors] == ([ValueError] if path == "error" else [])


@pytest.mark.timeout(20)
def test_handler_error_closes_that_connection_alone(no_leaks: Resources) -> None:
    recorder = Recorder()
    server = recorder.server(recorder.handler(Boom))
    with (
        serving(server),
        connect(server.server_address) as good,
        connect(server.server_address) as bad,
    ):
        bad.sendall(b"boom")
        assert recv_until_eof(bad) == b""
        good.sendall(b"fine")
        assert recv_exactly(good, 4) == b"fine"
        assert len(recorder.errors) == 1
        assert str(recorder.errors[0]) == "boom"


@pytest.mark.timeout(20)
def test_server_close_ends_every_open_connection(no_leaks: Resources) -> None:
    recorder = Recorder()
    server = recorder.server(recorder.handler(Echo))
    with serving(server):
        clients = [connect(server.server_address) for _ in range(5)]
        for client in clients:
            client.sendall(b"x")
            assert recv_exactly(client, 1) == b"x"
    # serving() ran shutdown() then server_close(): every finish() ran.
    recorder.wait_finished(5)
    assert server.connections == []
    for client in clients:
        assert recv_until_eof(client) == b""
        client.close()


@pytest.mark.timeout(20)
def test_connections_survive_shutdown_and_are_served_by_the_next_loop(
    no_leaks: Resources,
) -> None:
    server = socketserver.MultiplexingTCPServer((HOST, 0), Echo)
    try:
        with serving_without_close(server):
            client = connect(server.server_address)
            client.sendall(b"one")
            assert recv_exactly(client, 3) == b"one"
        assert len(server.connections) == 1
        with serving_without_close(server):
            client.sendall(b"two")
            assert recv_exactly(client, 3) == b"two"
    finally:
        server.server_close()
    assert recv_until_eof(client) == b""
    client.close()


@pytest.mark.timeout(20)
def test_verify_request_refuses_and_setup_may_send(no_leaks: Resources) -> None:
    class Greeter(Echo):
        def setup(self) -> None:
            self.send(b"welcome\n")

    class Picky(socketserver.MultiplexingTCPServer):
        refuse = True

        def verify_request(self, request: Any, client_address: Any) -> bool:
            return not self.refuse

    with serving(Picky((HOST, 0), Greeter)) as server:
        with connect(server.server_address) as refused:
            assert recv_until_eof(refused) == b""
        server.refuse = False
        with connect(server.server_address) as welcome:
            assert recv_exactly(welcome, 8) == b"welcome\n"


@pytest.mark.timeout(20)
def test_line_handler_frames_lines_across_chunks(no_leaks: Resources) -> None:
    class Lines(socketserver.LineRequestHandler):
        max_line = 100

        def line_received(self, line: bytes) -> None:
            self.send(b"<" + line + b">")

    with serving(socketserver.MultiplexingTCPServer((HOST, 0), Lines)) as server:
        with connect(server.server_address) as client:
            for chunk in (b"ab", b"c\nd", b"e\n\nlast"):
                client.sendall(chunk)
            client.shutdown(socket.SHUT_WR)
            assert recv_until_eof(client) == b"<abc\n><de\n><\n><last>"
        with connect(server.server_address) as client:
            client.sendall(b"x" * 101)
            assert recv_until_eof(client) == b""


@pytest.mark.timeout(20)
def test_drain_cuts_idle_connections(no_leaks: Resources) -> None:
    recorder = Recorder()
    server = recorder.server(recorder.handler(Echo))
    loop = threading.Thread(target=server.serve_forever)
    loop.start()
    try:
        with connect(server.server_address) as idle:
            idle.sendall(b"x")
            assert recv_exactly(idle, 1) == b"x"
            assert server.drain(0.2) == 1
            loop.join(WAIT)
            assert recv_until_eof(idle) == b""
    finally:
        server.shutdown()
        loop.join(WAIT)
        server.server_close()
    recorder.wait_finished(1)


@pytest.mark.timeout(20)
def test_drain_serves_open_connections_until_they_end(no_leaks: Resources) -> None:
    server = socketserver.MultiplexingTCPServer((HOST, 0), Echo)
    loop = threading.Thread(target=server.serve_forever)
    loop.start()
    cut: list[int] = []
    try:
        with connect(server.server_address) as client:
            client.sendall(b"a")
            assert recv_exactly(client, 1) == b"a"
            drainer = threading.Thread(target=lambda: cut.append(server.drain(WAIT)))
            drainer.start()
            loop.join(WAIT)  # drain() has shut the loop down
            assert not loop.is_alive()
            # Only drain()'s own loop can answer now.
            client.sendall(b"b")
            assert recv_exactly(client, 1) == b"b"
            client.shutdown(socket.SHUT_WR)
            assert recv_until_eof(client) == b""
            drainer.join(WAIT)
            assert cut == [0]
    finally:
        server.shutdown()
        loop.join(WAIT)
        server.server_close()


def _loop_thread_cpu_seconds() -> float:
    [loop] = [t for t in threading.enumerate() if t.name == "serve_forever"]
    with open(f"/proc/self/task/{loop.native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def nofile_1200() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the hard descriptor limit ({hard}) is below 1200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.timeout(30)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_select_limit_refuses_new_connections_and_keeps_serving(
    nofile_1200: None, no_leaks: Resources
) -> None:
    recorder = Recorder()
    server = recorder.server(Echo, selector_class=selectors.SelectSelector)
    with serving(server):
        early = connect(server.server_address)
        fillers: list[socket.socket] = []
        try:
            early.sendall(b"early")
            assert recv_exactly(early, 5) == b"early"
            # Push descriptor numbers past 1023: the next client and the
            # connection the server accepts for it land beyond select()'s reach.
            while not fillers or fillers[-1].fileno() < 1030:
                fillers.extend(socket.socketpair())
            with connect(server.server_address) as late:
                assert late.fileno() > 1024
                assert recv_until_eof(late) == b""  # refused, not left hanging
            [refusal] = recorder.errors
            assert isinstance(refusal, ValueError) and "FD_SETSIZE" in str(refusal)
            # Refused before any handler was built for it.
            assert len(server.connections) == 1
            # No spin: an idle loop burns no CPU after the refusal.
            before = _loop_thread_cpu_seconds()
            time.sleep(0.3)
            assert _loop_thread_cpu_seconds() - before < 0.1
            early.sendall(b"still served")
            assert recv_exactly(early, 12) == b"still served"
        finally:
            for sock in fillers:
                sock.close()
        # With the numbers free again, new connections are served.
        with connect(server.server_address) as again:
            again.sendall(b"again")
            assert recv_exactly(again, 5) == b"again"
        early.close()
    assert len(recorder.errors) == 1


class serving_without_close:
    """Like support.serving(), but leaves the server open for the next loop."""

    def __init__(self, server: socketserver.BaseServer) -> None:
        self.server = server
        self.loop = threading.Thread(target=server.serve_forever, name="serve_forever")

    def __enter__(self) -> socketserver.BaseServer:
        self.loop.start()
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.loop.join(WAIT)
        assert not self.loop.is_alive()


@pytest.mark.parametrize("how", ["close", "backpressure"])
@pytest.mark.timeout(30)
def test_a_connection_stopped_by_another_in_the_same_turn_reads_no_more(
    how: str, no_leaks: Resources
) -> None:
    """A handler may close() another, or fill its queue past the high water
    mark (a chat room), while the other's readiness is already in the same
    select() result: the other must not be read again.  Driven by hand on a
    reactor of the test's own, so that both connections are ready in one turn.
    """
    delivered: list[bytes] = []

    class Chat(socketserver.MultiplexedRequestHandler):
        def data_received(self, data: bytes) -> None:
            delivered.append(data)
            other = next(h for h in self.server.connections if h is not self)
            if how == "close":
                other.close()
            else:
                other.send(b"x" * (8 << 20))  # far past what the kernel takes
                assert other._paused

    server = socketserver.MultiplexingTCPServer(("127.0.0.1", 0), Chat)
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        with Reactor(selectors.DefaultSelector) as reactor:
            server._reactor = reactor  # what serve_forever() sets
            for ours, _ in pairs:
                server.process_request(ours, None)
            for _, theirs in pairs:
                theirs.sendall(b"line\n")
            ready = reactor.select(WAIT)
            assert len(ready) == 2  # both connections, in one turn
            for function, argument in ready:
                function(argument)
            assert delivered == [b"line\n"]  # the first one only
            for handler in server.connections:
                handler._detach()
            server._reactor = None
    finally:
        server.server_close()
        for _, theirs in pairs:
            theirs.close()
