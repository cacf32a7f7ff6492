"""Chapter 4, TCP, UDP and Unix servers: solutions.  Checked by docs/exercises/test_chapter4.py."""

from __future__ import annotations

import socket

import minisocketserver as socketserver


class UDPEcho(socketserver.BaseRequestHandler):
    """Exercise 1.  For a UDPServer: answer each datagram with its text + "好"
    (UTF-8), to the address it came from.  (What is ``self.request`` for UDP?)
    """

    def handle(self) -> None:
        data, sock = self.request  # the datagram, and the server's own socket
        sock.sendto(data + "好".encode(), self.client_address)


class TCP6Server(socketserver.TCPServer):
    """Exercise 2.  A TCPServer that listens on IPv6 (``("::1", 0)``).  One class
    attribute does it.
    """

    address_family = socket.AF_INET6


def handshakes_without_accept(backlog: int) -> int:
    """Exercise 3, answered by code (Linux).  Listen with ``backlog`` on 127.0.0.1 and
    never call accept(): how many clients complete connect()?  Stop at the first that
    does not complete within 0.2 s (or at 20).  Close every socket.
    """
    completed = 0
    clients = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(backlog)
        try:
            for _ in range(20):
                client = socket.socket()
                clients.append(client)
                client.settimeout(0.2)
                try:
                    client.connect(listener.getsockname())
                except TimeoutError:
                    break  # the SYN was dropped: the accept queue is full
                completed += 1
        finally:
            for client in clients:
                client.close()
    return completed
