"""Chapter 8, multiplexing: solutions.  Checked by docs/exercises/test_chapter8.py."""

from __future__ import annotations

import socket
import threading

import minisocketserver as socketserver


class UpperLines(socketserver.LineRequestHandler):
    """Exercise 1.  For a MultiplexingTCPServer: answer every line with the same line
    upper-cased.  No loop, no rfile: the server calls you with each line.
    """

    def line_received(self, line: bytes) -> None:
        self.send(line.upper())


class SharedCounter(socketserver.LineRequestHandler):
    """Exercise 2.  Every connection of one server shares one counter, ``count`` on the
    class: each line received, from any client, adds one, and the reply is the new
    count in ASCII + "\\n".  Why does it need no lock here, where chapter 6's did?
    """

    count = 0

    def line_received(self, line: bytes) -> None:
        # No lock: every handler method runs on the loop's one thread.
        SharedCounter.count += 1
        self.send(b"%d\n" % SharedCounter.count)


def threads_that_served(clients: int) -> tuple[str, set[str]]:
    """Exercise 3, answered by code.  A MultiplexingTCPServer serves ``clients``
    clients connected at once, one line each.  Return (the name of the thread running
    serve_forever, the set of names of the threads that ran line_received).
    """
    seen: set[str] = set()

    class Recording(socketserver.LineRequestHandler):
        def line_received(self, line: bytes) -> None:
            seen.add(threading.current_thread().name)
            self.send(line)

    with socketserver.MultiplexingTCPServer(("127.0.0.1", 0), Recording) as server:
        loop = threading.Thread(target=server.serve_forever, name="the loop")
        loop.start()
        try:
            conns = [
                socket.create_connection(server.server_address, timeout=5) for _ in range(clients)
            ]
            try:
                for conn in conns:
                    conn.sendall(b"hi\n")
                for conn in conns:
                    assert conn.recv(64) == b"hi\n"
            finally:
                for conn in conns:
                    conn.close()
        finally:
            server.shutdown()
            loop.join()
    return loop.name, seen
