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

from minisocketserver import StreamRequestHandler
from minisocketserver.tls import ThreadingTLSServer, ThreadPoolTLSServer

from support import WAIT, serving


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
