"""Hostile review of issue 12 (admission, TLS, inherited sockets): reproducers that fail today."""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from support import WAIT, serving

from minisocketserver import StreamRequestHandler
from minisocketserver.tls import ThreadingTLSServer, ThreadPoolTLSServer


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("review12-cert")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-days", "2", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def _client_hello(cert: Path) -> bytes:
    """The bytes of a real ClientHello, made without a socket."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cert)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    session = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        session.do_handshake()
    return outgoing.read()


class _Echo(StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


@pytest.mark.parametrize("cls", [ThreadingTLSServer, ThreadPoolTLSServer])
def test_client_hello_then_reset_is_a_traceback_not_a_failed_handshake(
    certificate: tuple[Path, Path], cls: Any
) -> None:
    """BUG: a client that sends its ClientHello and then resets reaches handle_error.

    The module promises "Failures are not errors ... never reaches the
    handler, nor handle_error as a traceback", counted in tls_stats.failed.
    But TLSMixIn.process_request calls context.wrap_socket() on the loop
    thread, and since the CVE-2023-40217 fix ssl.SSLSocket._create() raises
    ssl.SSLError("Closed before TLS handshake with data in recv buffer")
    when the socket is no longer connected (RST) yet has unread bytes.  That
    escapes to _take_request -> handle_error: a full traceback on stderr per
    rude client (any scanner can fill the logs), and tls_stats.failed stays 0.

    Observed: handle_error called once, tls_stats.failed == 0.
    Expected: no handle_error; tls_stats.failed == 1; handshake_failed called.
    Fix: in TLSMixIn.process_request wrap the wrap_socket() call in
    ``except (OSError, ValueError) as exc:`` -> record("failed"),
    handshake_failed(request, client_address, exc), shutdown_request(request), return.
    """
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    errors: list[Any] = []
    failed = threading.Event()

    class Server(cls):  # type: ignore[misc,valid-type]
        def handle_error(self, request: Any, client_address: Any) -> None:
            errors.append(client_address)
            failed.set()

        def handshake_failed(self, request: Any, client_address: Any, exc: Exception) -> None:
            failed.set()

    server = Server(("127.0.0.1", 0), _Echo, context=context)
    # The client speaks and resets before the loop first looks at it, so the
    # server meets a socket that is reset yet holds the ClientHello.
    rude = socket.create_connection(server.server_address, timeout=WAIT)
    rude.sendall(_client_hello(cert))
    rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    rude.close()
    with serving(server):
        assert failed.wait(WAIT), "the reset connection was never dealt with"
    assert errors == [], "a client's reset reached handle_error (a traceback per rude client)"
    assert server.tls_stats.failed == 1


def test_multiplexing_tls_reset_with_output_queued_kills_the_loop(
    certificate: tuple[Path, Path]
) -> None:
    """BUG (severe, remote DoS): a client that resets while a reply is queued kills serve_forever.

    TLSTransport.send() takes ``view = memoryview(data).cast("B")`` of the
    handler's ``_output`` bytearray.  When ``self._flush()`` inside it gets
    EPIPE/ECONNRESET from the kernel, the OSError propagates with send()'s
    frame (and so ``view`` and ``chunk``) kept alive by the traceback.  The
    handler's ``_flush`` catches it and calls ``_break()`` ->
    ``self._output.clear()``, which raises ``BufferError: Existing exports of
    data: object cannot be re-sized``.  Nothing catches that: the loop thread
    dies, and every other client of the MultiplexingTLSServer stops being
    served.  Any client can do it: ask for a large reply, read none, reset.

    Observed: the serve_forever thread dies with BufferError; the next
    client's handshake gets no answer.
    Expected: only that connection ends; the server goes on serving.
    Fix: release the exports before an exception leaves TLSTransport.send(),
    e.g. ``with memoryview(data) as raw, raw.cast("B") as view:`` and
    ``with view[accepted:accepted + _RECORD] as chunk:`` (or in
    MultiplexedRequestHandler._break use ``self._output = bytearray()``).
    """
    from minisocketserver import MultiplexedRequestHandler
    from minisocketserver.tls import MultiplexingTLSServer

    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.load_verify_locations(cert)
    queued = threading.Event()

    class Handler(MultiplexedRequestHandler):
        def data_received(self, data: bytes) -> None:
            if data.startswith(b"big"):
                # Far more than loopback's buffers hold: most stays queued.
                self.send(b"x" * (32 * 1024 * 1024))
                queued.set()
            else:
                self.send(data)

    crashed: list[BaseException] = []
    server = MultiplexingTLSServer(("127.0.0.1", 0), Handler, context=server_context)

    def loop() -> None:
        try:
            server.serve_forever(0.05)
        except BaseException as exc:  # what kills the loop
            crashed.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        raw = socket.create_connection(server.server_address, timeout=WAIT)
        rude = client_context.wrap_socket(raw, server_hostname="localhost")
        rude.sendall(b"big")
        assert queued.wait(WAIT)
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rude.close()
        # An honest client afterwards: its handshake needs several turns of
        # the loop, the first of which meets the reset connection.
        with socket.create_connection(server.server_address, timeout=WAIT) as raw2:
            # A live loop answers in milliseconds; a dead one never does.
            raw2.settimeout(3.0)
            try:
                with client_context.wrap_socket(raw2, server_hostname="localhost") as good:
                    good.sendall(b"ping")
                    reply = good.recv(4)
            except OSError as exc:
                reply = repr(exc).encode()
        assert crashed == [], f"serve_forever() died: {crashed!r}"
        assert reply == b"ping"
    finally:
        if thread.is_alive():
            server.shutdown()
        thread.join(WAIT)
        server.server_close()
