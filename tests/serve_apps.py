"""Handlers and WSGI applications that tests/test_serve.py serves with ``serve``.

The command imports them by name (``serve serve_apps:Who``), in a child
process started with this directory on ``PYTHONPATH``.  Each answer says
which process served it, so that the tests can tell the models (and the
workers) apart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import minisocketserver as socketserver


class Who(socketserver.StreamRequestHandler):
    """Per line received: ``PID CLIENT_HOST LINE``, until the client half-closes."""

    def handle(self) -> None:
        for line in self.rfile:
            host = self.client_address[0] if isinstance(self.client_address, tuple) else "-"
            self.wfile.write(f"{os.getpid()} {host} ".encode() + line)


class MultiplexedWho(socketserver.LineRequestHandler):
    """``Who``, for the multiplexing model."""

    def line_received(self, line: bytes) -> None:
        self.send(f"{os.getpid()} {self.client_address[0]} ".encode() + line)


class TwoStep(socketserver.StreamRequestHandler):
    """A request in flight for as long as the test wants: ``started`` after the
    first line, ``done`` after the second."""

    def handle(self) -> None:
        self.rfile.readline()
        self.wfile.write(b"started\n")
        self.wfile.flush()
        self.rfile.readline()
        self.wfile.write(b"done\n")


StartResponse = Callable[..., Any]

#: The environ keys the hello application reports.
REPORTED = ("REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT", "REQUEST_METHOD",
            "PATH_INFO", "QUERY_STRING", "HTTP_USER_AGENT", "wsgi.url_scheme",
            "wsgi.multithread", "wsgi.multiprocess", "HOME", "PATH")


def hello(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """A WSGI application: JSON of what it was told, and its pid in a header."""
    report = {key: environ[key] for key in REPORTED if key in environ}
    report["pid"] = os.getpid()
    body = json.dumps(report).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body))),
                              ("X-Served-By", str(os.getpid()))])
    return [body]


#: Not a class: ``serve serve_apps:NOT_A_CLASS`` must say so.
NOT_A_CLASS = 42


class Greeting(socketserver.ThreadingTCPServer):
    """A server class of the user's (``--server``): a greeting before the handler runs."""

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.sendall(b"hello from Greeting\n")
        super().finish_request(request, client_address)
