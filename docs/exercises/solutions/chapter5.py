"""Chapter 5, request handlers: solutions.  Checked by docs/exercises/test_chapter5.py."""

from __future__ import annotations

import socket
from typing import Any

import minisocketserver as socketserver


class UpperHandler(socketserver.StreamRequestHandler):
    """Exercise 1.  Answer every line with the same line upper-cased, until the client
    closes its side.  Use ``rfile`` and ``wfile``.
    """

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())


def finish_runs_when_handle_raises() -> bool:
    """Exercise 2, answered by code.  A handler's ``handle()`` raises.  Does its
    ``finish()`` still run?  Find out with a handler that records it, served by
    ``handle_request()`` on a TCPServer whose ``handle_error()`` stays quiet.
    """
    ran: list[str] = []

    class Raising(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            raise LookupError("on purpose")

        def finish(self) -> None:
            ran.append("finish")

    class Quiet(socketserver.TCPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass

    with (
        Quiet(("127.0.0.1", 0), Raising) as server,
        socket.create_connection(server.server_address, timeout=5),
    ):
        server.handle_request()
    return ran == ["finish"]


class ImpatientHandler(socketserver.StreamRequestHandler):
    """Exercise 3.  A client that connects and sends nothing for 0.1 s gets the line
    b"too slow\\n" and is closed.  A client that sends a line gets b"thanks\\n".
    (One class attribute, and one exception to catch.)
    """

    timeout = 0.1

    def handle(self) -> None:
        try:
            self.rfile.readline()
        except TimeoutError:
            self.wfile.write(b"too slow\n")
        else:
            self.wfile.write(b"thanks\n")
