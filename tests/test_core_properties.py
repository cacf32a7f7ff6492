"""Property tests: arbitrary bytes through every server class, hooks in order.

Issue 2, item 4 (property tests).  One server per test (not per example):
the ``@given`` function is defined inside the test and talks to the server
the test started.  Every request is recorded (stdlib_oracle.Recorder), and
after ``server_close()`` -- which waits for every worker and child -- the
test checks that each request went through the hooks in stdlib's order.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from stdlib_oracle import (
    DATAGRAM_KINDS,
    IMPLS,
    MODELS,
    STREAM_KINDS,
    Recorder,
    Trace,
    bind_address,
    datagram_client,
    family,
    recording_handler,
    recording_server,
    server_class,
    short_tmpdir,
    silent_exchange,
    stream_exchange,
)
from support import WAIT, Resources, recv_until_eof, serving

import minisocketserver as ours

pytestmark = pytest.mark.timeout(60)

#: Each property runs at most this many examples (fewer under CI's profile).
EXAMPLES = min(settings().max_examples, 30)

HANDLER_HOOKS = ("finish_request", "setup", "handle", "finish", "shutdown_request", "close_request")
ACCEPT = ("get_request", "verify_request", "process_request")


@pytest.fixture
def sockdir() -> Iterator[str]:
    with short_tmpdir() as path:
        yield path


def assert_every_request_in_order(trace: Trace, model: str, requests: int) -> None:
    """Each request went through stdlib's pipeline, on the thread it belongs to."""
    assert trace.main == ["server_bind", "server_activate", "server_close"]
    if model == "sync":
        assert trace.loop == [*ACCEPT, *HANDLER_HOOKS] * requests
        assert trace.workers == []
    elif model == "threading":
        assert trace.loop == [*ACCEPT] * requests
        assert trace.workers == [("process_request_thread", *HANDLER_HOOKS)] * requests
    else:
        # The parent closes its copy of the request right after fork().
        assert trace.loop == [*ACCEPT, "close_request"] * requests
        assert trace.workers == [HANDLER_HOOKS] * requests


def read_how(handler: Any) -> bytes:
    """Read the request to EOF the way the current example asks (server.read_size)."""
    size = handler.server.read_size
    if size is None:
        return bytes(handler.rfile.read())
    if size == 0:
        # Straight from the socket, bypassing rfile's buffer.
        parts = []
        while part := handler.connection.recv(4096):
            parts.append(part)
        return b"".join(parts)
    parts = []
    while part := handler.rfile.read(size):
        parts.append(part)
    return b"".join(parts)


def echo(handler: Any) -> None:
    handler.wfile.write(read_how(handler))


chunkings = st.lists(st.binary(max_size=2048), max_size=12)
read_sizes = st.sampled_from([None, 0, 1, 7, 4096])


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_stream_round_trip(kind: str, model: str, sockdir: str, no_leaks: Resources) -> None:
    served = []
    with Recorder(os.path.join(sockdir, "trace")) as recorder:
        handler = recording_handler(ours, kind, recorder, echo)
        cls = recording_server(server_class(ours, kind, model), recorder)
        server = cls(bind_address(kind, sockdir), handler)
        server.read_size = None
        with serving(server):

            @settings(max_examples=EXAMPLES)
            @given(chunks=chunkings, read_size=read_sizes)
            @example(chunks=[], read_size=None)
            @example(chunks=[b"\0" * 2048] * 12, read_size=1)
            def round_trip(chunks: list[bytes], read_size: int | None) -> None:
                server.read_size = read_size  # read by the next handler (or child)
                with socket.socket(family(kind), socket.SOCK_STREAM) as client:
                    client.settimeout(WAIT)
                    client.connect(server.server_address)
                    if kind == "tcp":
                        # Each chunk its own segment, as far as the kernel allows.
                        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    for chunk in chunks:
                        client.sendall(chunk)
                    # SHUT_WR: EOF even while a forked child holds this socket.
                    client.shutdown(socket.SHUT_WR)
                    served.append(1)
                    assert recv_until_eof(client) == b"".join(chunks)

            round_trip()
        trace = recorder.trace()
    assert_every_request_in_order(trace, model, len(served))


def datagram_echo(handler: Any) -> None:
    handler.wfile.write(handler.rfile.read())


def sized_binary(max_size: int) -> st.SearchStrategy[bytes]:
    """Bytes whose length is spread evenly up to ``max_size`` (not mostly tiny)."""
    return st.integers(0, max_size).flatmap(lambda n: st.binary(min_size=n, max_size=n))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind", DATAGRAM_KINDS)
def test_datagram_round_trip(kind: str, model: str, sockdir: str, no_leaks: Resources) -> None:
    max_size = ours.UDPServer.max_packet_size
    served = []
    with Recorder(os.path.join(sockdir, "trace")) as recorder:
        handler = recording_handler(ours, kind, recorder, datagram_echo)
        cls = recording_server(server_class(ours, kind, model), recorder)
        server = cls(bind_address(kind, sockdir), handler)
        with serving(server), datagram_client(kind, sockdir) as client:

            @settings(max_examples=EXAMPLES)
            @given(datagrams=st.lists(sized_binary(max_size), min_size=1, max_size=3))
            @example(datagrams=[b"", b"x" * max_size])
            def round_trip(datagrams: list[bytes]) -> None:
                for datagram in datagrams:
                    client.sendto(datagram, server.server_address)
                    served.append(1)
                # Workers answer in any order; each datagram gets one answer.
                replies = [client.recv(max_size + 1) for _ in datagrams]
                assert sorted(replies) == sorted(datagrams)

            round_trip()
        trace = recorder.trace()
    assert_every_request_in_order(trace, model, len(served))


ACTIONS = ("echo", "raise in handle", "raise in setup", "refuse")


@pytest.mark.parametrize("model", ["sync", "threading"])
@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_any_mix_of_requests_matches_stdlib(
    kind: str, model: str, sockdir: str, no_leaks: Resources
) -> None:
    """Stdlib as the oracle over random request mixes: same bytes, same hook order.

    Both servers see the same examples, request by request; the traces are
    compared once both are closed (every worker joined), so they are complete.
    """
    def body(handler: Any) -> None:
        data = handler.rfile.read()
        if handler.server.action == "raise in handle":
            raise ValueError("handle failed")
        handler.wfile.write(data.upper())

    def refuse(server: Any, parent: Any, request: Any, address: Any) -> bool:
        return server.action != "refuse" and bool(parent(request, address))

    def quiet(server: Any, parent: Any, request: Any, address: Any) -> None:
        """The traceback is not compared (paths differ), only the recorded call."""

    servers = []
    with contextlib.ExitStack() as stack:
        recorders = []
        for name, impl in IMPLS.items():
            recorder = stack.enter_context(Recorder(os.path.join(sockdir, f"mix-{name}")))
            base = recording_handler(impl, kind, recorder, body)

            class Handler(base):  # type: ignore[misc, valid-type]
                def setup(self) -> None:
                    if self.server.action == "raise in setup":
                        recorder_of(self.server).record("setup")
                        raise OSError("setup failed")
                    super().setup()

            cls = recording_server(
                server_class(impl, kind, model), recorder, verify_request=refuse, handle_error=quiet
            )
            server = cls(bind_address(kind, sockdir), Handler)
            server.action = "echo"
            server.recorder = recorder
            stack.enter_context(serving(server, poll_interval=0.05))
            servers.append(server)
            recorders.append(recorder)

        @settings(max_examples=max(EXAMPLES // 2, 5))
        @given(actions=st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=4))
        def same_as_stdlib(actions: list[str]) -> None:
            replies: list[list[bytes]] = [[], []]
            for i, action in enumerate(actions):
                for server, got in zip(servers, replies, strict=True):
                    server.action = action
                    message = b"m%d" % i
                    if action in ("echo", "raise in handle"):
                        got.append(stream_exchange(kind, server.server_address, message))
                    else:
                        # Closed unread: the client must send nothing (RST).
                        got.append(silent_exchange(kind, server.server_address))
            assert replies[1] == replies[0]

        same_as_stdlib()
    traces = [recorder.trace() for recorder in recorders]
    assert traces[1].sequences() == traces[0].sequences()
    assert traces[1].main == ["server_bind", "server_activate", "server_close"]


def recorder_of(server: Any) -> Recorder:
    return server.recorder  # type: ignore[no-any-return]
