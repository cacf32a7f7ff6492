"""Chapter 6, threading: solutions.  Checked by docs/exercises/test_chapter6.py."""

from __future__ import annotations

import socket
import threading
from typing import Any

import minisocketserver as socketserver


class BoundedThreadingServer(socketserver.ThreadingTCPServer):
    """Exercise 1.  A ThreadingTCPServer that refuses a new client (closed, never
    served) while ``max_active`` requests are running, and serves again once one
    has finished.  Mind which thread runs which hook.
    """

    max_active = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Written by the loop's thread (admit) and by the workers (leave): one lock.
        self._lock = threading.Lock()
        self.active = 0
        super().__init__(*args, **kwargs)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self._lock:  # on the loop's thread
            if self.active >= self.max_active:
                return False
            self.active += 1
            return True

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:  # on the request's own thread
            super().finish_request(request, client_address)
        finally:
            with self._lock:
                self.active -= 1


class LiveCounter(socketserver.StreamRequestHandler):
    """Exercise 2.  A handler that counts the handlers alive right now (in the class
    attribute ``live``) and answers every line with that count, in ASCII, + "\\n".
    ``live`` is back to 0 once every client has gone.
    """

    live = 0
    _lock = threading.Lock()  # live is shared by every handler thread

    def setup(self) -> None:
        super().setup()
        with LiveCounter._lock:
            LiveCounter.live += 1

    def handle(self) -> None:
        for _ in self.rfile:
            self.wfile.write(b"%d\n" % LiveCounter.live)

    def finish(self) -> None:
        with LiveCounter._lock:
            LiveCounter.live -= 1
        super().finish()


def where_finish_request_runs() -> tuple[str, str]:
    """Exercise 3, answered by code.  On a ThreadingTCPServer serving one client,
    return (the name of the thread running serve_forever, the name of the thread
    that ran finish_request).
    """
    names: dict[str, str] = {}

    class Recording(socketserver.ThreadingTCPServer):
        def finish_request(self, request: Any, client_address: Any) -> None:
            names["finish_request"] = threading.current_thread().name
            super().finish_request(request, client_address)

    with Recording(("127.0.0.1", 0), socketserver.BaseRequestHandler) as server:
        loop = threading.Thread(target=server.serve_forever, name="the loop")
        loop.start()
        try:
            with socket.create_connection(server.server_address, timeout=5) as client:
                assert client.recv(1) == b""  # served and closed
        finally:
            server.shutdown()
            loop.join()
    return loop.name, names["finish_request"]
