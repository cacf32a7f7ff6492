"""Helpers the exercise checks share (not part of any answer): bounded waits, a served server."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

#: Bound on any single wait in the checks (seconds); a correct answer is far quicker.
WAIT = 5.0
HOST = "127.0.0.1"


@contextlib.contextmanager
def serving(server: Any) -> Iterator[Any]:
    """``server.serve_forever()`` on a thread; on exit shutdown(), join, server_close()."""
    loop = threading.Thread(target=server.serve_forever, name="serve_forever")
    loop.start()
    try:
        yield server
    finally:
        server.shutdown()
        loop.join(WAIT)
        server.server_close()
        assert not loop.is_alive(), "serve_forever() did not return after shutdown()"


def connect(address: Any, family: int = socket.AF_INET) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.connect(address)
    return sock


def read_line(sock: socket.socket, buf: bytearray) -> bytes:
    """One line (without its b"\\n") from ``sock``; ``buf`` keeps what came after it."""
    while (end := buf.find(b"\n")) < 0:
        data = sock.recv(65536)
        assert data, f"the server closed the connection before a whole line: {bytes(buf)!r}"
        buf += data
    line = bytes(buf[:end])
    del buf[: end + 1]
    return line


def read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)
