"""UDP datagrams longer than max_packet_size: cut as in stdlib, but reported."""

from __future__ import annotations

import logging
import socket

import pytest
from support import WAIT, Resources, serving

import minisocketserver as socketserver


class Reply(socketserver.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(b"%d" % len(self.packet))


@pytest.mark.timeout(20)
def test_oversized_datagram_is_truncated_and_logged_once(
    caplog: pytest.LogCaptureFixture, no_leaks: Resources
) -> None:
    class Small(socketserver.UDPServer):
        max_packet_size = 100

    caplog.set_level(logging.DEBUG, logger="minisocketserver")
    with serving(Small(("127.0.0.1", 0), Reply)) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        for size in (100, 101, 5000):
            client.sendto(b"x" * size, server.server_address)
            # The handler saw at most max_packet_size bytes.
            assert client.recv(16) == b"%d" % min(size, 100)
    truncations = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert [r.levelno for r in truncations] == [logging.WARNING, logging.DEBUG]
