"""Chapter 2, the seed's select() loop: solutions.  Checked by docs/exercises/test_chapter2.py."""

from __future__ import annotations

import select
import socket


class LineBuffer:
    """Exercise 1.  Collect the bytes of one connection and hand out whole lines.

    ``feed(data)`` takes the bytes of one recv() (split anywhere, even inside a UTF-8
    character) and returns the lines completed by them, decoded, without "\\n" (and
    without a "\\r" before it).  Bytes after the last "\\n" wait for the next feed.
    """

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._pending += data
        *lines, rest = self._pending.split(b"\n")
        self._pending = bytearray(rest)
        # Decoding whole lines only: a split character is whole again by now.
        return [line.decode("utf-8").removesuffix("\r") for line in lines]


def echo_loop(listener: socket.socket, clients: int) -> None:
    """Exercise 2.  One thread, one select() loop: serve ``clients`` connections at
    the same time, each line answered with the line + "好\\n", and return once that
    many clients have connected and closed.  Close every connection you accepted.
    Unlike the seed: an empty recv() means the client closed, not a message.
    """
    watched: dict[socket.socket, LineBuffer] = {}
    accepted = 0
    try:
        while accepted < clients or watched:
            wanted = [*watched, listener] if accepted < clients else list(watched)
            readable, _, _ = select.select(wanted, [], [])
            for sock in readable:
                if sock is listener:
                    conn, _ = listener.accept()
                    watched[conn] = LineBuffer()
                    accepted += 1
                    continue
                data = sock.recv(65536)
                if not data:
                    del watched[sock]
                    sock.close()
                    continue
                for line in watched[sock].feed(data):
                    # Small replies; chapter 8 shows the loop that never blocks in send.
                    sock.sendall((line + "好\n").encode())
    finally:
        for sock in watched:
            sock.close()


def where_select_reports() -> dict[str, str]:
    """Exercise 3, answered by code (Linux).  On a connected TCP socket, which of
    select()'s three lists ("readable", "writable" ignored, "exceptional") reports
    (a) "closed": the peer closed its socket, and (b) "urgent": the peer sent one byte
    with MSG_OOB?  Return {"closed": ..., "urgent": ...} with "readable" or
    "exceptional".  (The seed drops sockets found in the exceptional list.)
    """
    answer = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        for case in ("closed", "urgent"):
            client = socket.create_connection(listener.getsockname(), timeout=5)
            conn, _ = listener.accept()
            with conn:
                if case == "closed":
                    client.close()
                else:
                    client.send(b"!", socket.MSG_OOB)
                readable, _, exceptional = select.select([conn], [], [conn], 5)
                client.close()
            # Exceptional is checked first: urgent data also makes the socket readable.
            answer[case] = "exceptional" if exceptional else "readable" if readable else "none"
    return answer
