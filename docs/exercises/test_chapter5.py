"""Checks for chapter 5's exercises (docs/05-handlers.md, "Exercises")."""

from __future__ import annotations

import socket
from types import ModuleType

from exercise_support import WAIT, read_to_eof, serving

import minisocketserver as socketserver


def test_chapter5_upper_handler_answers_each_line_until_eof(answers: ModuleType) -> None:
    server = socketserver.TCPServer(("127.0.0.1", 0), answers.UpperHandler)
    with serving(server), socket.create_connection(server.server_address, timeout=WAIT) as client:
        client.sendall(b"abc\nxyz\nlast")
        client.shutdown(socket.SHUT_WR)
        assert read_to_eof(client) == b"ABC\nXYZ\nLAST"


def test_chapter5_finish_runs_when_handle_raises(answers: ModuleType) -> None:
    assert answers.finish_runs_when_handle_raises() is True


def test_chapter5_impatient_handler_cuts_a_silent_client(answers: ModuleType) -> None:
    with serving(socketserver.TCPServer(("127.0.0.1", 0), answers.ImpatientHandler)) as server:
        with socket.create_connection(server.server_address, timeout=WAIT) as silent:
            assert read_to_eof(silent) == b"too slow\n"
        with socket.create_connection(server.server_address, timeout=WAIT) as polite:
            polite.sendall(b"hello\n")
            assert read_to_eof(polite) == b"thanks\n"
