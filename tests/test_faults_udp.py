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
import socket
import socketserver as stdlib
from typing import Any

import pytest
from fault_scenarios import FLOOD, UDP_MODELS, flood, udp_server
from support import WAIT, Resources, serving

import minisocketserver as ours


def exchange(server: Any, payload: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        client.sendto(payload, server.server_address)
        return client.recv(65536)


models = pytest.mark.parametrize("model", list(UDP_MODELS))


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


@models
@pytest.mark.timeout(40)
def test_a_flood_of_datagrams_crashes_nothing(model: str, no_leaks: Resources) -> None:
    with serving(udp_server(ours, model)) as server:
        answered, dropped = flood(server, FLOOD[model])
        assert answered > 0 and answered + dropped == FLOOD[model]
        assert exchange(server, b"after") == b"<after>"
