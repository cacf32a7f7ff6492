"""Chapter 1, a blocking server: solutions.  Checked by docs/exercises/test_chapter1.py."""

from __future__ import annotations

import socket
import threading


def recv_line(sock: socket.socket) -> bytes:
    """Exercise 1.  Read one line from ``sock``, however its bytes arrive split, and
    return it without its b"\\n".  The peer sends exactly one line.  If the peer
    closes first, raise EOFError.  (TCP is a byte stream: one recv() is not one message.)
    """
    line = bytearray()
    while True:
        data = sock.recv(1)  # one byte at a time: never read past the line
        if not data:
            raise EOFError(f"the peer closed after {bytes(line)!r}")
        if data == b"\n":
            return bytes(line)
        line += data


def serve_one(listener: socket.socket) -> None:
    """Exercise 2.  Accept one client on ``listener``, answer each line it sends with
    the same line + "好" (UTF-8) + "\\n", until it closes its side; then close the
    connection (not the listener) and return.
    """
    conn, _ = listener.accept()
    with conn, conn.makefile("rb") as lines:
        for line in lines:
            conn.sendall(line.rstrip(b"\n") + "好\n".encode())


def second_client_while_the_first_is_served() -> tuple[bool, bool]:
    """Exercise 3, answered by code.  A blocking server (serve_one, twice in a row)
    is busy with client A.  Client B connects and sends a line.  Return
    (did B's connect() succeed?, did B get its reply before A left?).  Find out by
    running it on 127.0.0.1; wait at most 0.2 s for B's early reply.
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=lambda: [serve_one(listener) for _ in range(2)])
        server.start()
        a = socket.create_connection(listener.getsockname(), timeout=5)
        b = None
        try:
            a.sendall(b"a\n")
            assert a.recv(64) == "a好\n".encode()  # the server is now inside A's loop
            try:
                b = socket.create_connection(listener.getsockname(), timeout=5)
                connected = True
            except OSError:
                connected = False
            answered_early = False
            if b is not None:
                b.sendall(b"b\n")
                b.settimeout(0.2)
                try:
                    answered_early = bool(b.recv(64))
                except TimeoutError:
                    answered_early = False
        finally:
            a.close()  # A leaves: the server moves on to B
            if b is not None:
                b.settimeout(5)
                b.recv(64)  # B's reply, now
                b.close()
            server.join(5)
    return connected, answered_early
