"""Checks for chapter 1's exercises (docs/01-blocking-server.md, "Exercises")."""

from __future__ import annotations

import socket
import threading
from types import ModuleType

import pytest
from exercise_support import WAIT, read_to_eof


def test_chapter1_recv_line_reads_a_line_sent_byte_by_byte(answers: ModuleType) -> None:
    mine, peer = socket.socketpair()
    with mine, peer:
        mine.settimeout(WAIT)
        data = "你好, world\n".encode()
        sender = threading.Thread(
            target=lambda: [peer.send(data[i : i + 1]) for i in range(len(data))]
        )
        sender.start()
        assert answers.recv_line(mine) == "你好, world".encode()
        sender.join(WAIT)
        peer.sendall(b"cut sho")
        peer.shutdown(socket.SHUT_WR)
        with pytest.raises(EOFError):
            answers.recv_line(mine)


def test_chapter1_serve_one_answers_every_line_then_closes(answers: ModuleType) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=answers.serve_one, args=(listener,))
        server.start()
        with socket.create_connection(listener.getsockname(), timeout=WAIT) as client:
            client.sendall("one\n二\n".encode())
            client.shutdown(socket.SHUT_WR)
            assert read_to_eof(client) == "one好\n二好\n".encode()
        server.join(WAIT)
        assert not server.is_alive(), "serve_one() did not return after its client left"
        assert listener.fileno() != -1, "serve_one() closed the listener"


def test_chapter1_second_client_connects_but_waits(answers: ModuleType) -> None:
    # The kernel completes B's handshake (the listen backlog), but nobody reads B
    # until the server is done with A.
    assert answers.second_client_while_the_first_is_served() == (True, False)
