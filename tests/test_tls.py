"""TLS on every stream model, with a handshake that never stalls the loop (issue 12, item 1).

The certificate is made once per session by ``openssl req -x509`` in a
temporary directory; nothing secret is committed.  Every wait is bounded:
a stall shows up as a ``TimeoutError`` at a bound the test chose, never as
a hung test.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import WAIT, Resources, connect, recv_exactly, recv_until_eof, serving

import minisocketserver as ours
from minisocketserver.tls import (
    ForkingTLSServer,
    MultiplexingTLSServer,
    ThreadingTLSServer,
    ThreadPoolTLSServer,
    TLSServer,
)

pytestmark = pytest.mark.timeout(60)

MODELS = [
    TLSServer, ThreadingTLSServer, ThreadPoolTLSServer, ForkingTLSServer, MultiplexingTLSServer,
]
#: The models that report a failed handshake in this process, where a test
#: can wait for it with an event (a forked child cannot set one).
IN_PROCESS = [ThreadingTLSServer, ThreadPoolTLSServer, MultiplexingTLSServer]

#: Silent clients in the stall tests: more than a pool's 64 workers plus
#: its queue of 128, and five times ForkingMixIn's 40 children.
SILENT = 200
#: How long the real client behind them may take.  Measured at 2-5 ms on
#: this machine (the figure is printed with -s); the bound is for a loaded CI.
SERVED_WITHIN = 2.0
#: How long a test waits to show a stall: long enough that a server which
#: could answer would have (a handshake takes a few ms), short enough to
#: keep the suite fast.
STALL = 1.0


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=WAIT,
    )
    return cert, key


@pytest.fixture
def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    context.set_alpn_protocols(["http/1.1"])
    return context


@pytest.fixture
def client_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    context.set_alpn_protocols(["http/1.1"])
    return context


class Session(ours.StreamRequestHandler):
    """Replies to one line with the session's version and ALPN protocol, then the line."""

    def handle(self) -> None:
        line = self.rfile.readline()
        tls: ssl.SSLSocket = self.request
        self.wfile.write(f"{tls.version()} {tls.selected_alpn_protocol()} ".encode() + line)


class MuxSession(ours.LineRequestHandler):
    """``Session`` for the multiplexing model: ``self.request`` is a ``TLSTransport``."""

    def line_received(self, line: bytes) -> None:
        tls = self.request
        self.send(f"{tls.version()} {tls.selected_alpn_protocol()} ".encode() + line)
        self.close()


def session_for(cls: Any) -> Any:
    return MuxSession if issubclass(cls, ours.MultiplexingMixIn) else Session


def tls_connect(address: Any, context: ssl.SSLContext, timeout: float = WAIT) -> ssl.SSLSocket:
    sock = socket.create_connection(address, timeout=timeout)
    try:
        return context.wrap_socket(sock, server_hostname="localhost",
                                   suppress_ragged_eofs=False)
    except BaseException:
        sock.close()
        raise


def ask(address: Any, context: ssl.SSLContext, timeout: float = WAIT) -> bytes:
    """One TLS exchange: a line out, the reply until a clean close_notify + EOF."""
    with tls_connect(address, context, timeout) as client:
        client.sendall(b"hello\n")
        return recv_until_eof(client)


@contextlib.contextmanager
def silent_clients(address: Any, count: int = SILENT) -> Iterator[list[socket.socket]]:
    """``count`` clients that connect and send nothing (a port scanner, a slowloris)."""
    clients: list[socket.socket] = []
    try:
        for _ in range(count):
            clients.append(connect(address))
        yield clients
    finally:
        for client in clients:
            client.close()


def served_within(address: Any, context: ssl.SSLContext) -> float:
    """Seconds one real client takes to get its reply; fails past ``SERVED_WITHIN``."""
    start = time.monotonic()
    assert ask(address, context, timeout=SERVED_WITHIN).endswith(b"hello\n")
    return time.monotonic() - start


# -- handlers run unchanged --------------------------------------------------


@pytest.mark.parametrize("cls", MODELS)
def test_handler_gets_plaintext_and_the_session(
    cls: Any, server_context: ssl.SSLContext, client_context: ssl.SSLContext,
    no_leaks: Resources,
) -> None:
    """rfile/wfile carry plaintext; self.request is the SSLSocket; close_notify ends it.

    The client refuses a ragged EOF (``suppress_ragged_eofs=False``), so the
    reply only reads to its end if the server sent close_notify first.
    """
    with serving(cls(("127.0.0.1", 0), session_for(cls), context=server_context)) as server:
        reply = ask(server.server_address, client_context)
    assert reply == b"TLSv1.3 http/1.1 hello\n"
    assert (server.tls_stats.completed, server.tls_stats.failed) == (1, 0)


class EchoUntilEnd(ours.StreamRequestHandler):
    """Echoes lines until the client ends the stream (its close_notify, then EOF)."""

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line)


class MuxEchoUntilEnd(ours.LineRequestHandler):
    """``EchoUntilEnd`` for the multiplexing model: the client ends it, not the server."""

    def line_received(self, line: bytes) -> None:
        self.send(line)


@pytest.mark.parametrize("cls", MODELS)
def test_a_client_ending_with_close_notify_is_a_clean_end(
    cls: Any, server_context: ssl.SSLContext, client_context: ssl.SSLContext,
    no_leaks: Resources,
) -> None:
    """The client sends close_notify first (``unwrap()``), as curl and browsers do.

    Before the fix, ``MultiplexingTLSServer`` took the b"" that
    ``SSLObject.read()`` returns after a close_notify for data and spun in
    ``TLSTransport.recv`` forever: the unwrap timed out, the next client was
    never served, and ``shutdown()`` hung.
    """
    handler = MuxEchoUntilEnd if issubclass(cls, ours.MultiplexingMixIn) else EchoUntilEnd
    with serving(cls(("127.0.0.1", 0), handler, context=server_context)) as server:
        for _ in range(2):  # the loop still serves after the first one ended
            with tls_connect(server.server_address, client_context) as client:
                client.sendall(b"one\n")
                assert recv_exactly(client, 4) == b"one\n"
                plain = client.unwrap()  # close_notify out, the server's back
                assert plain.recv(1) == b""  # then its FIN
                plain.close()


class NoDelay(ours.StreamRequestHandler):
    """Replies with the TCP_NODELAY setting of its own connection."""

    def handle(self) -> None:
        self.rfile.readline()
        raw = socket.socket(fileno=os.dup(self.request.fileno()))  # the TCP socket under TLS
        with raw:
            self.wfile.write(b"%d\n" % bool(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))


class MuxNoDelay(ours.LineRequestHandler):
    """``NoDelay`` for the multiplexing model."""

    def line_received(self, line: bytes) -> None:
        raw = socket.socket(fileno=os.dup(self.request.fileno()))
        with raw:
            self.send(b"%d\n" % bool(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
        self.close()


@pytest.mark.parametrize("cls", MODELS)
def test_tls_connections_get_tcp_nodelay(
    cls: Any, server_context: ssl.SSLContext, client_context: ssl.SSLContext,
    no_leaks: Resources,
) -> None:
    """Without it the first reply after the handshake waits ~40 ms for a delayed ACK
    (benchmarks/tls.py's +nodelay rows); asyncio sets it on every connection."""
    handler = MuxNoDelay if issubclass(cls, ours.MultiplexingMixIn) else NoDelay
    with (
        serving(cls(("127.0.0.1", 0), handler, context=server_context)) as server,
        tls_connect(server.server_address, client_context) as client,
    ):
        client.sendall(b"?\n")
        assert recv_exactly(client, 2) == b"1\n"


def test_from_socket_takes_the_context(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, no_leaks: Resources,
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    server = ThreadingTLSServer.from_socket(listener, Session, context=server_context)
    with serving(server):
        assert ask(server.server_address, client_context).endswith(b"hello\n")


def test_a_context_is_required(no_leaks: Resources) -> None:
    with pytest.raises(TypeError, match="context"):
        ThreadingTLSServer(("127.0.0.1", 0), Session)
    client_side = ssl.create_default_context()
    with pytest.raises(ValueError, match="server-side"):
        ThreadingTLSServer(("127.0.0.1", 0), Session, context=client_side)


@pytest.mark.parametrize("cls", [TLSServer, ThreadingTLSServer, MultiplexingTLSServer])
def test_handle_request_serves_one_tls_client(
    cls: Any, server_context: ssl.SSLContext, client_context: ssl.SSLContext,
    no_leaks: Resources,
) -> None:
    """No loop, so no admission: the handshake is bounded by its deadline alone."""
    with cls(("127.0.0.1", 0), session_for(cls), context=server_context) as server:
        replies: list[bytes] = []
        client = threading.Thread(
            target=lambda: replies.append(ask(server.server_address, client_context))
        )
        client.start()
        server.handle_request()
        client.join(WAIT)
    assert replies == [b"TLSv1.3 http/1.1 hello\n"]


# -- the admission stage on its own ------------------------------------------


class Admitting(ours.AdmissionMixIn, ours.ThreadPoolTCPServer):
    """One worker only: a silent client that took it would stall everyone."""

    admission_timeout = 0.5
    core_workers = max_workers = 1


class Echo(ours.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


def test_admission_closes_a_silent_client_and_passes_the_first_bytes_on(
    no_leaks: Resources,
) -> None:
    """The silent client holds no worker; the stage only peeks at the first bytes.

    The speaking client is served by the one worker while the silent one
    still waits in the loop; the handler reads the very bytes that woke it.
    """
    with serving(Admitting(("127.0.0.1", 0), Echo)) as server, \
            silent_clients(server.server_address, 1) as (silent,):
        with connect(server.server_address) as client:
            client.sendall(b"first bytes\n")
            assert client.recv(64) == b"first bytes\n"
        silent.setblocking(False)
        with pytest.raises(BlockingIOError):
            silent.recv(1)  # still open, still waiting
        silent.setblocking(True)
        assert silent.recv(1) == b""  # closed at admission_timeout


# -- silent clients cost a descriptor, not a worker ---------------------------


@pytest.mark.parametrize("cls", MODELS)
def test_silent_clients_never_hold_up_a_real_one(
    cls: Any, server_context: ssl.SSLContext, client_context: ssl.SSLContext,
) -> None:
    """200 clients connect and say nothing; one real client behind them is served at once.

    Default sizes: a pool of 64 workers and a queue of 128, 40 children.
    """
    handler = session_for(cls)
    with serving(cls(("127.0.0.1", 0), handler, context=server_context)) as server, \
            silent_clients(server.server_address):
        elapsed = served_within(server.server_address, client_context)
    print(f"{cls.__name__}: served in {elapsed * 1000:.1f} ms behind {SILENT} silent clients")


def test_without_admission_silent_clients_fill_the_pool(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext,
) -> None:
    """The same scenario with the admission stage skipped: the real client stalls.

    This is what the admission stage prevents: each silent client takes a
    worker (blocked in its handshake) or a queue slot, and the real
    client waits for a handshake deadline 10 s away.
    """

    class NoAdmission(ThreadPoolTLSServer):
        daemon_threads = True

        def admit_request(self, request: Any, client_address: Any) -> bool:
            return True

    with serving(NoAdmission(("127.0.0.1", 0), Session, context=server_context)) as server:
        with silent_clients(server.server_address), pytest.raises(TimeoutError):
            ask(server.server_address, client_context, timeout=STALL)
        # The silent clients are gone: their handshakes fail, workers free up.
        assert ask(server.server_address, client_context).endswith(b"hello\n")


def test_stdlib_with_the_314_pattern_stalls(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext,
) -> None:
    """Stdlib's ThreadingTCPServer with its listener wrapped, as 3.14's HTTPSServer does.

    The handshake runs inside accept(), on the loop's thread, with no
    timeout: one silent client and the real client behind it never
    gets an answer (here: not within ``STALL`` seconds).
    """

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.rfile.readline())

    class HTTPSPattern(socketserver.ThreadingTCPServer):
        daemon_threads = True

        def server_activate(self) -> None:
            super().server_activate()
            self.socket = server_context.wrap_socket(self.socket, server_side=True)

    server = HTTPSPattern(("127.0.0.1", 0), Handler)
    loop = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    loop.start()
    try:
        with silent_clients(server.server_address, 1), pytest.raises(TimeoutError):
            ask(server.server_address, client_context, timeout=STALL)
        # The silent client left: its accept() fails and the loop goes on.
    finally:
        server.shutdown()
        loop.join(WAIT)
        server.server_close()
    assert not loop.is_alive()


@pytest.mark.parametrize("cls", MODELS)
def test_the_314_pattern_does_not_stall_our_classes(
    cls: Any, server_context: ssl.SSLContext, client_context: ssl.SSLContext,
    no_leaks: Resources,
) -> None:
    """A subclass that wraps the listener in server_activate(): unwrapped, no stall."""

    class HTTPSPattern(cls):  # type: ignore[misc, valid-type]
        def server_activate(self) -> None:
            super().server_activate()
            self.socket = server_context.wrap_socket(self.socket, server_side=True)

    server = HTTPSPattern(("127.0.0.1", 0), session_for(cls))  # no context=: the listener's is used
    assert isinstance(server.socket, ssl.SSLSocket)
    with serving(server), silent_clients(server.server_address):
        served_within(server.server_address, client_context)
        assert type(server.socket) is socket.socket
    assert server.tls_stats.completed == 1


# -- deadlines and failures ---------------------------------------------------


class Recorded:
    """What a server's handler and ``handle_error`` saw (threads of this process)."""

    def __init__(self) -> None:
        self.handled = threading.Event()
        self.errors: list[BaseException | None] = []
        self.failures: list[Exception] = []
        self.failed = threading.Event()


def recording(cls: Any, timeout: float = 10.0) -> tuple[Any, Recorded]:
    seen = Recorded()

    class Handler(session_for(cls)):  # type: ignore[misc]
        def setup(self) -> None:
            seen.handled.set()
            super().setup()

    class Server(cls):  # type: ignore[misc, valid-type]
        handshake_timeout = timeout
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            import sys
            seen.errors.append(sys.exc_info()[1])

        def handshake_failed(self, request: Any, client_address: Any, exc: Exception) -> None:
            seen.failures.append(exc)
            seen.failed.set()

    return Server, Handler, seen  # type: ignore[return-value]


@pytest.mark.parametrize("cls", MODELS)
def test_a_silent_client_is_closed_at_the_handshake_timeout(
    cls: Any, server_context: ssl.SSLContext, no_leaks: Resources,
) -> None:
    Server, Handler, seen = recording(cls, timeout=0.2)  # type: ignore[misc]
    with serving(Server(("127.0.0.1", 0), Handler, context=server_context)) as server, \
            silent_clients(server.server_address, 1) as (client,):
        start = time.monotonic()
        assert client.recv(1) == b""  # closed by the loop: EOF
        elapsed = time.monotonic() - start
        assert server.tls_stats.timed_out == 1
    assert 0.15 <= elapsed < WAIT
    assert not seen.handled.is_set() and seen.errors == []


@pytest.mark.parametrize("cls", MODELS)
def test_a_handshake_that_stalls_midway_is_cut_at_its_deadline(
    cls: Any, server_context: ssl.SSLContext, no_leaks: Resources,
) -> None:
    """The first bytes of a ClientHello, then nothing: the worker gives up at the deadline."""
    Server, Handler, seen = recording(cls, timeout=0.3)  # type: ignore[misc]
    with serving(Server(("127.0.0.1", 0), Handler, context=server_context)) as server, \
            silent_clients(server.server_address, 1) as (client,):
        client.sendall(b"\x16\x03\x01\x02\x00")  # a handshake record's header
        assert client.recv(1) == b""
        assert server.tls_stats.timed_out == 1  # recorded before the worker closed
    assert not seen.handled.is_set() and seen.errors == []


@pytest.mark.parametrize("cls", MODELS)
def test_plain_http_on_the_tls_port_is_counted_not_reported(
    cls: Any, server_context: ssl.SSLContext, no_leaks: Resources,
) -> None:
    Server, Handler, seen = recording(cls)  # type: ignore[misc]
    with serving(Server(("127.0.0.1", 0), Handler, context=server_context)) as server:
        with connect(server.server_address) as client:
            client.sendall(b"GET / HTTP/1.0\r\n\r\n")
            recv_until_eof(client)
        assert (server.tls_stats.failed, server.tls_stats.completed) == (1, 0)
    assert not seen.handled.is_set() and seen.errors == []


@pytest.mark.parametrize("cls", IN_PROCESS)
def test_a_client_that_rejects_the_certificate_is_counted(
    cls: Any, server_context: ssl.SSLContext, no_leaks: Resources,
) -> None:
    Server, Handler, seen = recording(cls)  # type: ignore[misc]
    stranger = ssl.create_default_context()  # does not trust our self-signed certificate
    with serving(Server(("127.0.0.1", 0), Handler, context=server_context)) as server:
        with pytest.raises(ssl.SSLCertVerificationError):
            ask(server.server_address, stranger)
        assert seen.failed.wait(WAIT)
        assert server.tls_stats.failed == 1
    assert isinstance(seen.failures[0], ssl.SSLError)
    assert not seen.handled.is_set() and seen.errors == []


# -- the multiplexing model: memory BIOs --------------------------------------


class Big(ours.MultiplexedRequestHandler):
    """Answers its first data with a reply larger than the kernel buffers; closes on the next."""

    #: More than loopback's socket buffers hold (a few MiB each way), so
    #: the kernel refuses part of the ciphertext and the rest must wait.
    size = 16 * 1024 * 1024

    def data_received(self, data: bytes) -> None:
        if getattr(self, "replied", False):
            self.close()
        else:
            self.replied = True
            self.send(b"x" * self.size)


def test_multiplexing_reply_larger_than_the_socket_buffers(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, no_leaks: Resources,
) -> None:
    """Ciphertext the kernel refuses waits, and its plaintext is reported sent only later.

    The connection stays open after the reply, so nothing but the
    handler's own write interest can bring the loop back to send the
    rest: a transport that called encrypted plaintext "sent" would strand
    its last ciphertext.
    """
    with serving(MultiplexingTLSServer(("127.0.0.1", 0), Big, context=server_context)) as server, \
            tls_connect(server.server_address, client_context) as client:
        client.sendall(b"go\n")
        received = 0
        while received < Big.size:
            chunk = client.recv(1 << 20)
            assert chunk, f"EOF after {received} of {Big.size} bytes"
            received += len(chunk)
        client.sendall(b"bye\n")
        assert recv_until_eof(client) == b""
    assert received == Big.size


def test_multiplexing_data_right_behind_the_finished_message(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext, no_leaks: Resources,
) -> None:
    """The client's Finished and its request in one segment: the request is still served.

    The handshake step reads both from the kernel; the handler must be
    given the request although the socket never turns readable again.
    """
    with serving(MultiplexingTLSServer(("127.0.0.1", 0), MuxSession,
                                       context=server_context)) as server:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with connect(server.server_address) as sock:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    sock.sendall(outgoing.read())
                    incoming.write(sock.recv(65536))
            tls.write(b"hello\n")
            sock.sendall(outgoing.read())  # Finished and the request, in one send
            reply = b""
            while not reply.endswith(b"\n"):
                try:
                    reply += tls.read(65536)
                except ssl.SSLWantReadError:
                    incoming.write(sock.recv(65536))
    assert reply == b"TLSv1.3 http/1.1 hello\n"


# -- http.server over TLS, with curl and openssl s_client ------------------------


class HTTPSServer(ThreadingTLSServer):
    """``http.server.ThreadingHTTPServer``, over TLS on our classes."""

    daemon_threads = True

    def server_bind(self) -> None:
        super().server_bind()
        host, port = self.server_address[:2]
        self.server_name = socket.getfqdn(host)
        self.server_port = port


@pytest.fixture
def https(tmp_path: Path, server_context: ssl.SSLContext) -> Iterator[HTTPSServer]:
    (tmp_path / "hello.txt").write_bytes(b"hello over TLS\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serving(HTTPSServer(("127.0.0.1", 0), Handler, context=server_context)) as server:
        yield server


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_gets_a_file_over_https(https: HTTPSServer, certificate: tuple[Path, Path]) -> None:
    port = https.server_address[1]
    done = subprocess.run(
        ["curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", str(WAIT),
         "--cacert", str(certificate[0]), "--resolve", f"localhost:{port}:127.0.0.1",
         f"https://localhost:{port}/hello.txt"],
        capture_output=True, timeout=WAIT + 5,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"hello over TLS\n"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_openssl_s_client_negotiates_http11(
    https: HTTPSServer, certificate: tuple[Path, Path],
) -> None:
    port = https.server_address[1]
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
         "-alpn", "http/1.1", "-CAfile", str(certificate[0]), "-verify_return_error",
         "-ign_eof"],
        input=b"GET /hello.txt HTTP/1.0\r\nHost: localhost\r\n\r\n",
        capture_output=True, timeout=WAIT,
    )
    assert done.returncode == 0, done.stderr
    assert b"ALPN protocol: http/1.1" in done.stdout
    assert b"Verify return code: 0 (ok)" in done.stdout
    # s_client prints the session's summary where it happens to be, so the
    # response is looked for, not expected last.
    assert b"HTTP/1.0 200 OK" in done.stdout
    assert b"\r\n\r\nhello over TLS\n" in done.stdout
