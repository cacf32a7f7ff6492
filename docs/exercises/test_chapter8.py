"""Checks for chapter 8's exercises (docs/08-multiplexing.md, "Exercises")."""

from __future__ import annotations

import socket
from types import ModuleType

from exercise_support import WAIT, read_line, read_to_eof, serving

import minisocketserver as socketserver


def test_chapter8_upper_lines_answers_each_line(answers: ModuleType) -> None:
    server = socketserver.MultiplexingTCPServer(("127.0.0.1", 0), answers.UpperLines)
    with serving(server), socket.create_connection(server.server_address, timeout=WAIT) as client:
        client.sendall(b"abc\nx")
        client.sendall(b"yz\nlast")
        client.shutdown(socket.SHUT_WR)
        assert read_to_eof(client) == b"ABC\nXYZ\nLAST"


def test_chapter8_shared_counter_counts_every_clients_lines(answers: ModuleType) -> None:
    counter = answers.SharedCounter
    counter.count = 0
    with serving(socketserver.MultiplexingTCPServer(("127.0.0.1", 0), counter)) as server:
        a = socket.create_connection(server.server_address, timeout=WAIT)
        b = socket.create_connection(server.server_address, timeout=WAIT)
        with a, b:
            buf_a, buf_b = bytearray(), bytearray()
            replies = []
            for client, buf in ((a, buf_a), (b, buf_b), (a, buf_a), (b, buf_b)):
                client.sendall(b"+1\n")
                replies.append(read_line(client, buf))
    assert replies == [b"1", b"2", b"3", b"4"]


def test_chapter8_one_thread_serves_every_client(answers: ModuleType) -> None:
    loop_thread, handlers = answers.threads_that_served(3)
    assert handlers == {loop_thread}
