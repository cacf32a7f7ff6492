"""Chapter 9, shutdown and the wake-up channel: solutions.  Checked by test_chapter9.py."""

from __future__ import annotations

import select
import socket
import threading
from typing import Any

import minisocketserver as socketserver


class WakeableLoop:
    """Exercise 1.  ``run()`` waits in select() with no timeout on ``self.listener``
    (a listening socket it may accept from) and returns once ``stop()`` has been
    called from another thread; ``stop()`` returns at once.  No polling.
    """

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False  # written by stop()'s thread, read by run()'s

    def run(self) -> None:
        while not self._stopping:
            ready, _, _ = select.select([self.listener, self._wake_r], [], [])
            if self.listener in ready:
                self.listener.accept()[0].close()
        self._wake_r.recv(64)

    def stop(self) -> None:
        self._stopping = True
        self._wake_w.send(b"x")

    def close(self) -> None:
        for sock in (self.listener, self._wake_r, self._wake_w):
            sock.close()


def shutdown_on_the_loops_thread() -> str:
    """Exercise 2, answered by code.  A handler of a (synchronous) TCPServer calls
    ``self.server.shutdown()``: it runs on the very thread that runs serve_forever.
    What happens?  Return the name of the exception class raised, or "returned", or
    "hangs" if the call has not returned within 1 s.
    """
    outcome: list[str] = []

    class Stopper(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                self.server.shutdown()
                outcome.append("returned")
            except Exception as exc:
                outcome.append(type(exc).__name__)

    with socketserver.TCPServer(("127.0.0.1", 0), Stopper) as server:
        loop = threading.Thread(target=server.serve_forever, daemon=True)
        loop.start()
        with socket.create_connection(server.server_address, timeout=5) as client:
            client.settimeout(1)
            try:
                client.recv(1)  # EOF once the handler has returned
            except TimeoutError:
                return "hangs"
        server.shutdown()
        loop.join()
    return outcome[0]


class StopAfterOne(socketserver.BaseRequestHandler):
    """Exercise 3.  A handler that, once it has served its client (send b"bye"), makes
    the server's serve_forever() return, the right way, so that the serve_forever()
    call of a plain TCPServer returns by itself.
    """

    def handle(self) -> None:
        self.request.sendall(b"bye")
        # shutdown() waits for the loop, and the loop is this thread: ask from another.
        server: Any = self.server
        threading.Thread(target=server.shutdown).start()
