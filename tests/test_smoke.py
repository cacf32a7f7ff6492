"""First contact: an echo over every stream model, and an instant shutdown."""

from __future__ import annotations

import socket
import threading

import pytest
from support import Resources, connect, recv_until_eof, serving

import minisocketserver as socketserver


class UpperEcho(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


@pytest.mark.parametrize(
    "server_class",
    [socketserver.TCPServer, socketserver.ThreadingTCPServer, socketserver.ForkingTCPServer],
)
def test_line_echo(server_class: type[socketserver.TCPServer], no_leaks: Resources) -> None:
    with serving(server_class(("127.0.0.1", 0), UpperEcho)) as server, \
            connect(server.server_address) as client:
        client.sendall(b"hello\nworld\n")
        # SHUT_WR, not close(): a forked child also holds a copy of this
        # client socket (it was open in the parent when fork() ran), so
        # only shutdown() makes the kernel send FIN.
        client.shutdown(socket.SHUT_WR)
        assert recv_until_eof(client) == b"HELLO\nWORLD\n"


def test_shutdown_does_not_wait_for_poll_interval(no_leaks: Resources) -> None:
    server = socketserver.TCPServer(("127.0.0.1", 0), UpperEcho)
    loop = threading.Thread(target=server.serve_forever, args=(3600,))
    loop.start()
    # With stdlib this would wait for the hour-long poll_interval; the
    # test's timeout (far below it) is what fails if the wake-up is broken.
    server.shutdown()
    loop.join()
    server.server_close()
