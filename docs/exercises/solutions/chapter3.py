"""Chapter 3, BaseServer and its hooks: solutions.  Checked by docs/exercises/test_chapter3.py."""

from __future__ import annotations

import socket
from typing import Any

import minisocketserver as socketserver


class LimitedServer(socketserver.TCPServer):
    """Exercise 1.  A TCPServer that serves its first ``max_requests`` clients and
    refuses every later one: the refused connection is closed without building the
    handler.  Override one hook only.
    """

    max_requests = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.served = 0  # read and written on the loop's thread only
        super().__init__(*args, **kwargs)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        if self.served >= self.max_requests:
            return False
        self.served += 1
        return True


def hooks_of_one_request() -> list[str]:
    """Exercise 2, answered by code.  Serve one client with ``handle_request()`` on a
    TCPServer subclass that records the name of each of these hooks as it is called:
    get_request, verify_request, process_request, finish_request, shutdown_request,
    close_request.  Return the names in call order.
    """
    calls: list[str] = []

    def recorded(name: str) -> Any:
        def hook(self: Any, *args: Any) -> Any:
            calls.append(name)
            return getattr(socketserver.TCPServer, name)(self, *args)

        return hook

    names = [
        "get_request",
        "verify_request",
        "process_request",
        "finish_request",
        "shutdown_request",
        "close_request",
    ]
    Recording = type("Recording", (socketserver.TCPServer,), {n: recorded(n) for n in names})
    with (
        Recording(("127.0.0.1", 0), socketserver.BaseRequestHandler) as server,
        socket.create_connection(server.server_address, timeout=5) as client,
    ):
        server.handle_request()
        assert client.recv(1) == b""  # served and closed
    return calls


class PatientServer(socketserver.TCPServer):
    """Exercise 3.  With ``timeout`` set and no client, ``handle_request()`` gives up
    after that many seconds and calls a hook instead.  Override it so that
    ``timed_out`` becomes True.
    """

    timed_out = False

    def handle_timeout(self) -> None:
        self.timed_out = True
