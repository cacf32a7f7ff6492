"""Checks for chapter 2's exercises (docs/02-select-loop.md, "Exercises")."""

from __future__ import annotations

import socket
import sys
import threading
from types import ModuleType

import pytest
from exercise_support import WAIT, read_line


def test_chapter2_line_buffer_joins_split_characters_and_lines(answers: ModuleType) -> None:
    buffer = answers.LineBuffer()
    assert buffer.feed(b"he") == []
    assert buffer.feed(b"llo\r\n\xe4") == ["hello"]  # \xe4 is the first byte of 你
    assert buffer.feed(b"\xbd\xa0\n\nlast") == ["你", ""]
    assert buffer.feed(b"\n") == ["last"]


def test_chapter2_echo_loop_serves_clients_at_once_then_returns(answers: ModuleType) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        loop = threading.Thread(target=answers.echo_loop, args=(listener, 2))
        loop.start()
        try:
            a = socket.create_connection(listener.getsockname(), timeout=WAIT)
            b = socket.create_connection(listener.getsockname(), timeout=WAIT)
            with a, b:
                buf_a, buf_b = bytearray(), bytearray()
                a.sendall(b"a1\n")
                assert read_line(a, buf_a) == "a1好".encode()
                b.sendall(b"b1\n")  # A is still connected: one loop serves both
                assert read_line(b, buf_b) == "b1好".encode()
                a.sendall("a2\n你".encode()[:-1])  # a character cut in two
                assert read_line(a, buf_a) == "a2好".encode()
                a.sendall("你".encode()[-1:] + b"\n")
                assert read_line(a, buf_a) == "你好".encode()
        finally:
            loop.join(WAIT)
        assert not loop.is_alive(), "echo_loop() did not return once both clients had closed"


@pytest.mark.skipif(sys.platform != "linux", reason="the exceptional list is Linux's here")
def test_chapter2_where_select_reports_closed_and_urgent(answers: ModuleType) -> None:
    assert answers.where_select_reports() == {"closed": "readable", "urgent": "exceptional"}
