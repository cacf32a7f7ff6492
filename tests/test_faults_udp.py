"""UDP: empty datagrams, datagrams longer than max_packet_size, a flood.

Issue 5, item 1, for every datagram model (sync, threading, forking), with
stdlib ``socketserver`` as the oracle for what a handler sees:

* an empty datagram is a request like any other: the handler gets b"";
* a datagram longer than ``max_packet_size`` is cut to that size, as in
  stdlib; ours also logs it (WARNING once per server, on the
  "minisocketserver" logger), since the cut is otherwise silent;
* a flood of datagrams crashes nothing, every datagram is either answered
  or counted as dropped by the kernel (a full receive buffer, /proc/net/udp),
  and the server answers afterwards.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver as stdlib
import threading
import time
from typing import Any

import pytest
from support import WAIT, Resources, serving

import minisocketserver as ours

MODELS = {"sync": "UDPServer", "threading": "ThreadingUDPServer", "forking": "ForkingUDPServer"}
#: Datagrams per flood; forking pays a fork() per datagram, so it gets fewer.
FLOOD = {"sync": 2000, "threading": 2000, "forking": 200}


def handler(impl: Any) -> type:
    class Bracket(impl.DatagramRequestHandler):  # type: ignore[misc,name-defined]
        def handle(self) -> None:
            self.wfile.write(b"<" + self.rfile.read() + b">")

    return Bracket


def udp_server(impl: Any, model: str, **attrs: Any) -> Any:
    cls = type("Server", (getattr(impl, MODELS[model]),), attrs)
    return cls(("127.0.0.1", 0), handler(impl))


def exchange(server: Any, payload: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        client.sendto(payload, server.server_address)
        return client.recv(65536)


models = pytest.mark.parametrize("model", list(MODELS))


@models
@pytest.mark.timeout(20)
def test_an_empty_datagram_is_a_request(model: str, no_leaks: Resources) -> None:
    for impl in (stdlib, ours):
        with serving(udp_server(impl, model)) as server:
            assert exchange(server, b"") == b"<>"


@models
@pytest.mark.timeout(20)
def test_an_oversized_datagram_is_cut_as_in_stdlib_and_logged(
    model: str, caplog: pytest.LogCaptureFixture, no_leaks: Resources
) -> None:
    payload = bytes(range(256)) * 16  # 4096 bytes
    replies = {}
    for impl in (stdlib, ours):
        with serving(udp_server(impl, model, max_packet_size=1024)) as server:
            replies[impl.__name__] = exchange(server, payload)
    assert replies["minisocketserver"] == replies["socketserver"] == b"<" + payload[:1024] + b">"
    warnings = [r for r in caplog.records
                if r.name == "minisocketserver" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "truncated" in warnings[0].getMessage()


def kernel_drops(sock: socket.socket) -> int:
    """Datagrams the kernel dropped for ``sock`` (its receive buffer was full).

    The last column of /proc/net/udp, on the line of the socket's inode.
    """
    inode = str(os.fstat(sock.fileno()).st_ino)
    with open("/proc/net/udp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[9] == inode:
                return int(fields[-1])
    raise AssertionError("socket not in /proc/net/udp")


def flood(server: Any, count: int) -> tuple[int, int]:
    """Send ``count`` datagrams as fast as possible: ``(answered, dropped by the kernel)``.

    A reader thread collects replies until every datagram is accounted
    for: answered, or dropped by the kernel at the server's or the client's
    full receive buffer (UDP under overload).  The server itself must lose
    none of those it received.
    """
    answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        client.connect(server.server_address)
        client.settimeout(0.2)

        def dropped() -> int:
            return kernel_drops(server.socket) + kernel_drops(client)

        def read() -> None:
            nonlocal answered
            deadline = time.monotonic() + WAIT + count / 100
            while time.monotonic() < deadline:
                try:
                    client.recv(64)
                except TimeoutError:
                    if answered + dropped() >= count:
                        return
                else:
                    answered += 1

        reader = threading.Thread(target=read)
        reader.start()
        for i in range(count):
            client.send(b"%d" % i)
        reader.join()
        return answered, dropped()


@models
@pytest.mark.timeout(40)
def test_a_flood_of_datagrams_crashes_nothing(model: str, no_leaks: Resources) -> None:
    with serving(udp_server(ours, model)) as server:
        answered, dropped = flood(server, FLOOD[model])
        assert answered > 0 and answered + dropped == FLOOD[model]
        assert exchange(server, b"after") == b"<after>"
