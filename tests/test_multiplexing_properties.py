"""Property tests: many clients, arbitrary bytes, arbitrary chunks and interleavings.

Issue 3, item 5.  Hypothesis draws, per example, several clients, each with
its own chunks of arbitrary bytes, and an order in which the clients' chunks
are sent.  Every connection must get exactly its own bytes back, in order,
whatever the interleaving; and the same service written for
``ThreadingTCPServer`` and for ``MultiplexingTCPServer`` must be
indistinguishable from a client, byte for byte, down to the EOF.

The servers live for the whole module (one per model): starting one per
example would spend the time budget on threads instead of on examples.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import connect, recv_until_eof, serving

import minisocketserver as socketserver

HOST = "127.0.0.1"
SUFFIX = "好".encode()


class ChunkEcho(socketserver.MultiplexedRequestHandler):
    def data_received(self, data: bytes) -> None:
        self.send(data)


class ThreadedChunkEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


class SeedLineEcho(socketserver.LineRequestHandler):
    """The seed's protocol: each line comes back without its newline, + 好 + newline."""

    def line_received(self, line: bytes) -> None:
        self.send(line.removesuffix(b"\n") + SUFFIX + b"\n")


class ThreadedSeedLineEcho(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.removesuffix(b"\n") + SUFFIX + b"\n")


def seed_reply(data: bytes) -> bytes:
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # data ended with a newline (or was empty)
    return b"".join(line + SUFFIX + b"\n" for line in lines)


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, Any]]:
    made = {
        "mux-chunk": socketserver.MultiplexingTCPServer((HOST, 0), ChunkEcho),
        "thr-chunk": socketserver.ThreadingTCPServer((HOST, 0), ThreadedChunkEcho),
        "mux-line": socketserver.MultiplexingTCPServer((HOST, 0), SeedLineEcho),
        "thr-line": socketserver.ThreadingTCPServer((HOST, 0), ThreadedSeedLineEcho),
    }
    with contextlib.ExitStack() as stack:
        for server in made.values():
            stack.enter_context(serving(server))
        yield made


# Bytes biased towards the interesting ones: newlines, and the lead byte of
# a multi-byte UTF-8 character that a chunk boundary may split.
chunk = st.binary(min_size=1, max_size=3000) | st.lists(
    st.sampled_from([b"\n", b"\xe5", b"\xa5\xbd", b"x", b"\r\n"]), min_size=1, max_size=20
).map(b"".join)
conversation = st.lists(st.lists(chunk, max_size=6), min_size=1, max_size=8).flatmap(
    lambda clients: st.tuples(
        st.just(clients),
        st.permutations([i for i, chunks in enumerate(clients) for _ in chunks]),
    )
)


def talk(address: Any, clients: list[list[bytes]], order: list[int]) -> list[bytes]:
    """Open one connection per client, send the chunks in ``order``, read every reply."""
    socks = [connect(address) for _ in clients]
    try:
        nxt = [0] * len(clients)
        for i in order:
            # Replies are not read until the end: the whole conversation
            # (under 150 KB) fits the loopback buffers, so sendall cannot
            # wedge, and the server must keep every connection's output apart.
            socks[i].sendall(clients[i][nxt[i]])
            nxt[i] += 1
        for sock in socks:
            sock.shutdown(socket.SHUT_WR)
        return [recv_until_eof(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.timeout(60)
@given(conversation)
def test_each_connection_gets_exactly_its_own_bytes_back(
    servers: dict[str, Any], drawn: tuple[list[list[bytes]], list[int]]
) -> None:
    clients, order = drawn
    replies = talk(servers["mux-chunk"].server_address, clients, order)
    assert replies == [b"".join(chunks) for chunks in clients]


@pytest.mark.timeout(60)
@given(conversation)
def test_threading_and_multiplexing_are_indistinguishable(
    servers: dict[str, Any], drawn: tuple[list[list[bytes]], list[int]]
) -> None:
    clients, order = drawn
    for kind in ("chunk", "line"):
        threaded = talk(servers[f"thr-{kind}"].server_address, clients, order)
        multiplexed = talk(servers[f"mux-{kind}"].server_address, clients, order)
        assert multiplexed == threaded
    assert multiplexed == [seed_reply(b"".join(chunks)) for chunks in clients]
