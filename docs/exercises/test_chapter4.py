"""Checks for chapter 4's exercises (docs/04-socket-servers.md, "Exercises")."""

from __future__ import annotations

import socket
import sys
from types import ModuleType

import pytest
from exercise_support import WAIT, read_to_eof, serving

import minisocketserver as socketserver


def test_chapter4_udp_echo_answers_the_sender(answers: ModuleType) -> None:
    with (
        serving(socketserver.UDPServer(("127.0.0.1", 0), answers.UDPEcho)) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
    ):
        client.settimeout(WAIT)
        client.sendto("你".encode(), server.server_address)
        data, sender = client.recvfrom(1024)
    assert data == "你好".encode()
    assert sender == server.server_address


class Hello(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.sendall(b"hello over IPv6")


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 in this Python")
def test_chapter4_tcp6_server_listens_on_ipv6(answers: ModuleType) -> None:
    try:
        server = answers.TCP6Server(("::1", 0), Hello)
    except OSError as exc:  # a host without ::1 cannot check this answer
        pytest.skip(f"no ::1 here: {exc}")
    assert server.socket.family == socket.AF_INET6
    with (
        serving(server),
        socket.create_connection(server.server_address[:2], timeout=WAIT) as client,
    ):
        assert read_to_eof(client) == b"hello over IPv6"


@pytest.mark.skipif(sys.platform != "linux", reason="backlog + 1 is Linux's rule")
def test_chapter4_handshakes_without_accept_is_backlog_plus_one(answers: ModuleType) -> None:
    assert answers.handshakes_without_accept(2) == 3
