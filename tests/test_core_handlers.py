"""The request handlers: setup/handle/finish, rfile/wfile and their knobs.

Issue 2, item 2 (handlers).  Where a value can be compared, stdlib's handler
run on stdlib's server is the oracle; the rest asserts the documented
behaviour on real connections.
"""

from __future__ import annotations

import io
import socket
import socketserver as stdlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from stdlib_oracle import (
    IMPLS,
    bind_address,
    datagram_client,
    family,
    server_class,
    short_tmpdir,
    stream_exchange,
)
from support import WAIT, Resources, connect, recv_exactly, recv_until_eof, serving

import minisocketserver as ours

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def sockdir() -> Iterator[str]:
    with short_tmpdir() as path:
        yield path


def probe_stream(
    impl: Any, kind: str, sockdir: str, attrs: dict[str, Any], look: Callable[[Any], Any],
    sent: bytes = b"",
) -> tuple[Any, bytes]:
    """Run one request through a handler with class attributes ``attrs``.

    The client connects and sends ``sent`` (then SHUT_WR) *before* the sync
    server accepts, so the handler finds all of it already queued.
    ``look(handler)`` runs inside handle(); its result is returned with what
    the client received.
    """
    seen = []

    class Probe(impl.StreamRequestHandler):  # type: ignore[misc]
        def handle(self) -> None:
            seen.append(look(self))

    for name, value in attrs.items():
        setattr(Probe, name, value)
    server = server_class(impl, kind, "sync")(bind_address(kind, sockdir), Probe)
    with server, connect(server.server_address, family(kind)) as client:
        client.sendall(sent)
        client.shutdown(socket.SHUT_WR)
        server.handle_request()
        received = recv_until_eof(client)
    return seen[0], received


def both(*args: Any, **kwargs: Any) -> Any:
    """``probe_stream`` on stdlib and on ours; asserts they agree, returns ours."""
    theirs, mine = (probe_stream(impl, *args, **kwargs) for impl in IMPLS.values())
    assert mine == theirs
    return mine


def file_types(handler: Any) -> tuple[str, str, bool, bool]:
    return (
        type(handler.rfile).__name__,
        type(handler.wfile).__name__,
        isinstance(handler.wfile, io.BufferedIOBase),
        handler.connection is handler.request,
    )


@pytest.mark.parametrize("kind", ["tcp", "unix_stream"])
@pytest.mark.parametrize(
    ("rbufsize", "wbufsize"), [(-1, 0), (0, 0), (16, 0), (-1, 4096), (0, -1)]
)
def test_rfile_wfile_types_follow_buffer_sizes(
    kind: str, rbufsize: int, wbufsize: int, sockdir: str, no_leaks: Resources
) -> None:
    attrs = {"rbufsize": rbufsize, "wbufsize": wbufsize}
    looked, _ = both(kind, sockdir, attrs, file_types)
    rfile_type, _, wfile_is_buffered_io, _ = looked
    assert rfile_type == ("SocketIO" if rbufsize == 0 else "BufferedReader")
    assert wfile_is_buffered_io


@pytest.mark.parametrize("rbufsize", [16, -1])
def test_rbufsize_bounds_what_one_read_buffers(
    rbufsize: int, sockdir: str, no_leaks: Resources
) -> None:
    # peek() fills the buffer with at most one read of rbufsize bytes; the
    # 100 bytes are all queued before the handler runs.
    peeked, _ = both("tcp", sockdir, {"rbufsize": rbufsize}, lambda h: len(h.rfile.peek()),
                     sent=b"x" * 100)
    assert peeked == (16 if rbufsize == 16 else 100)


@pytest.mark.parametrize("timeout", [None, 2.5])
def test_timeout_is_set_on_the_connection(
    timeout: float | None, sockdir: str, no_leaks: Resources
) -> None:
    looked, _ = both("tcp", sockdir, {"timeout": timeout}, lambda h: h.connection.gettimeout())
    assert looked == timeout


@pytest.mark.parametrize("nodelay", [False, True])
def test_disable_nagle_algorithm_sets_tcp_nodelay(
    nodelay: bool, sockdir: str, no_leaks: Resources
) -> None:
    def look(handler: Any) -> bool:
        return handler.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

    looked, _ = both("tcp", sockdir, {"disable_nagle_algorithm": nodelay}, look)
    assert looked is nodelay


def test_handler_timeout_makes_a_silent_client_fail_the_request(no_leaks: Resources) -> None:
    errors = []

    class Server(ours.ThreadingTCPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            import sys

            errors.append(sys.exc_info()[0])

    class Patient(ours.StreamRequestHandler):
        timeout = 0.05

        def handle(self) -> None:
            self.rfile.read()

    with serving(Server(("127.0.0.1", 0), Patient)) as server, connect(
        server.server_address
    ) as client:
        # The client never sends: the handler's read times out, and the
        # request is shut down (the client sees EOF) while the client waits.
        assert recv_until_eof(client) == b""
    assert errors == [TimeoutError]


def test_unbuffered_wfile_is_sent_before_the_handler_returns(no_leaks: Resources) -> None:
    """wbufsize 0: the client sees 'first' while the handler waits for its ack."""

    class PingPong(ours.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"first")
            assert self.rfile.read(3) == b"ack"
            self.wfile.write(b"second")

    with serving(ours.TCPServer(("127.0.0.1", 0), PingPong)) as server, connect(
        server.server_address
    ) as client:
        assert recv_exactly(client, 5) == b"first"
        client.sendall(b"ack")
        assert recv_until_eof(client) == b"second"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_unbuffered_write_sends_everything_and_returns_its_length(
    wrap: Callable[[bytes], Any], no_leaks: Resources
) -> None:
    payload = bytes(range(256)) * (5 * 1024 * 1024 // 256)  # 5 MiB
    returned = []

    class Big(ours.StreamRequestHandler):
        # With a timeout the socket is non-blocking underneath, where one
        # send() returns after a partial write (a blocking send() on Linux
        # would wait and send it all, hiding a short write).
        timeout = WAIT

        def handle(self) -> None:
            returned.append(self.wfile.write(wrap(payload)))

    server = ours.ThreadingTCPServer(("127.0.0.1", 0), Big)
    with serving(server), socket.socket() as client:
        # A small receive buffer (set before connect, so the window is small
        # from the start) and small reads keep the handler's send buffer
        # full: sendall() must loop over many partial sends, where a raw
        # SocketIO.write() would return a short count.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.settimeout(WAIT)
        client.connect(server.server_address)
        received = bytearray()
        while chunk := client.recv(4096):
            received += chunk
    assert returned == [len(payload)]
    assert received == payload


@pytest.mark.parametrize("impl_name", list(IMPLS))
def test_finish_runs_even_when_handle_raises(impl_name: str, no_leaks: Resources) -> None:
    impl = IMPLS[impl_name]
    calls = []

    class Server(impl.TCPServer):  # type: ignore[name-defined, misc]
        def handle_error(self, request: Any, client_address: Any) -> None:
            calls.append("handle_error")

    class Failing(impl.BaseRequestHandler):  # type: ignore[name-defined, misc]
        def setup(self) -> None:
            calls.append("setup")

        def handle(self) -> None:
            calls.append("handle")
            raise ValueError("boom")

        def finish(self) -> None:
            calls.append("finish")

    with Server(("127.0.0.1", 0), Failing) as server, connect(server.server_address):
        server.handle_request()
    assert calls == ["setup", "handle", "finish", "handle_error"]


def test_stream_finish_flushes_a_buffered_wfile_and_closes_both_files(
    sockdir: str, no_leaks: Resources
) -> None:
    files: list[Any] = []

    def look(handler: Any) -> None:
        handler.wfile.write(b"buffered until finish")
        files.extend([handler.rfile, handler.wfile])

    _, received = both("tcp", sockdir, {"wbufsize": 65536}, look)
    assert received == b"buffered until finish"
    assert all(f.closed for f in files)


def test_base_handler_attributes(no_leaks: Resources) -> None:
    seen = []

    class Look(ours.BaseRequestHandler):
        def handle(self) -> None:
            seen.append((self.request, self.client_address, self.server))

    with ours.TCPServer(("127.0.0.1", 0), Look) as server, connect(
        server.server_address
    ) as client:
        server.handle_request()
        request, address, owner = seen[0]
        assert isinstance(request, socket.socket)
        assert address == client.getsockname()
        assert owner is server


# -- datagrams --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["udp", "unix_dgram"])
def test_datagram_handler_files_and_reply(kind: str, sockdir: str, no_leaks: Resources) -> None:
    def run(impl: Any) -> tuple[Any, list[bytes]]:
        seen = []

        class Look(impl.DatagramRequestHandler):  # type: ignore[misc]
            def handle(self) -> None:
                seen.append((
                    type(self.rfile).__name__, type(self.wfile).__name__,
                    self.packet, self.rfile.read(), self.socket is self.server.socket,
                    self.request == (self.packet, self.socket),
                ))  # fmt: skip
                if self.packet:
                    # Several writes, one datagram back.
                    self.wfile.write(self.packet.upper())
                    self.wfile.write(b"!")

        replies = []
        server = server_class(impl, kind, "sync")(bind_address(kind, sockdir), Look)
        with server, datagram_client(kind, sockdir) as client:
            for message in (b"one", b""):
                client.sendto(message, server.server_address)
                server.handle_request()
                replies.append(client.recv(100))
        return seen, replies

    theirs, mine = run(stdlib), run(ours)
    assert mine == theirs
    seen, replies = mine
    assert seen[0] == ("BytesIO", "BytesIO", b"one", b"one", True, True)
    # An empty reply is still sent, as an empty datagram.
    assert replies == [b"ONE!", b""]


def test_stream_handler_serves_lines_like_stdlib(sockdir: str, no_leaks: Resources) -> None:
    """The README's line echo, with the input split mid-line."""

    def run(impl: Any) -> bytes:
        class Lines(impl.StreamRequestHandler):  # type: ignore[misc]
            def handle(self) -> None:
                for line in self.rfile:
                    self.wfile.write(b"<" + line.rstrip(b"\n") + b">")

        with serving(impl.ThreadingTCPServer(("127.0.0.1", 0), Lines), 0.05) as server, connect(
            server.server_address
        ) as client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for part in (b"al", b"pha\nbe", b"ta\n\ngam", b"ma"):
                client.sendall(part)
            client.shutdown(socket.SHUT_WR)
            return recv_until_eof(client)

    assert run(ours) == run(stdlib) == b"<alpha><beta><><gamma>"


def test_threaded_stream_handler_reads_its_own_connection(no_leaks: Resources) -> None:
    """Concurrent connections each get their own rfile/wfile."""

    class Echo(ours.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.rfile.read())

    with serving(ours.ThreadingTCPServer(("127.0.0.1", 0), Echo)) as server:
        results: dict[int, bytes] = {}

        def talk(i: int) -> None:
            results[i] = stream_exchange("tcp", server.server_address, b"%d" % i * 1000)

        talkers = [threading.Thread(target=talk, args=(i,)) for i in range(8)]
        for t in talkers:
            t.start()
        for t in talkers:
            t.join(WAIT)
    assert results == {i: b"%d" % i * 1000 for i in range(8)}
