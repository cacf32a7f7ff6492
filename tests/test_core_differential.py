"""Stdlib ``socketserver`` as the oracle: same handler, same client, same results.

Issue 2, item 4 (differential tests).  Each scenario runs twice, on stdlib
and on ours (see stdlib_oracle.py), and the test compares the bytes the
client received and the order of hook calls made by each caller (the test's
thread, the loop, every worker thread or child).  The deliberate differences
(server.py's docstring, the README's table) are at the end, asserting ours.
"""

from __future__ import annotations

import errno
import re
import socket
import socketserver as stdlib
from collections.abc import Iterator
from typing import Any

import pytest
from stdlib_oracle import (
    DATAGRAM_KINDS,
    IMPLS,
    KINDS,
    MODELS,
    STREAM_KINDS,
    Outcome,
    Recorder,
    bind_address,
    datagram_client,
    differential,
    exchange,
    family,
    recording_handler,
    recording_server,
    run_exchanges,
    run_scenario,
    server_class,
    short_tmpdir,
    silent_exchange,
)
from support import Resources, connect, recv_until_eof

import minisocketserver as ours

pytestmark = pytest.mark.timeout(30)

SYNC_REQUEST = [
    "get_request", "verify_request", "process_request", "finish_request",
    "setup", "handle", "finish", "shutdown_request", "close_request",
]  # fmt: skip


@pytest.fixture
def sockdir() -> Iterator[str]:
    with short_tmpdir() as path:
        yield path


def assert_same(theirs: Outcome, mine: Outcome) -> None:
    assert mine.replies == theirs.replies
    assert mine.trace.sequences() == theirs.trace.sequences()


# -- the pipeline, request by request ---------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind", KINDS)
def test_echo(kind: str, model: str, sockdir: str, no_leaks: Resources) -> None:
    theirs, mine = differential(kind, model, sockdir, run_exchanges, [b"ab", b"", b"x\ny\n"])
    assert_same(theirs, mine)
    assert mine.replies == [b"AB", b"", b"X\nY\n"]
    assert mine.trace.main == ["server_bind", "server_activate", "server_close"]
    # service_actions is overridden (to record it), so both loops call it at
    # least once per request.
    assert mine.trace.per_iteration >= 3 and theirs.trace.per_iteration >= 3
    if model == "sync":
        assert mine.trace.loop == SYNC_REQUEST * 3


def raise_on_raise(handler: Any) -> None:
    data = handler.rfile.read()
    if data == b"raise":
        raise ValueError("boom")
    handler.wfile.write(data.upper())


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind", KINDS)
def test_handler_raising_goes_to_handle_error_and_serving_goes_on(
    kind: str, model: str, sockdir: str, no_leaks: Resources
) -> None:
    theirs, mine = differential(
        kind, model, sockdir, run_exchanges, [b"raise", b"next"], body=raise_on_raise
    )
    assert_same(theirs, mine)
    # finish() still ran: a datagram handler still answers (with nothing).
    assert mine.replies == [b"", b"NEXT"]
    request_type = "socket" if kind in STREAM_KINDS else "tuple"
    address_type = "str" if kind.startswith("unix") else "tuple"
    error = f"handle_error({request_type}, {address_type}) ValueError: boom"
    events = mine.trace.loop + [e for w in mine.trace.workers for e in w]
    assert events.count(error) == 1


def refuse_first() -> Any:
    refused = []

    def verify_request(server: Any, parent: Any, request: Any, address: Any) -> bool:
        if not refused:
            refused.append(address)
            return False
        return bool(parent(request, address))

    return verify_request


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind", KINDS)
def test_refused_request_is_shut_down_unprocessed(
    kind: str, model: str, sockdir: str, no_leaks: Resources
) -> None:
    def client(address: Any) -> list[bytes]:
        if kind in STREAM_KINDS:
            # The refused client sends nothing: data arriving after the
            # server's close() would be answered with RST, not EOF.
            return [silent_exchange(kind, address), exchange(kind, address, b"yes", sockdir)]
        # A refused datagram gets no answer: send both, read the one reply.
        with datagram_client(kind, sockdir) as sock:
            sock.sendto(b"no", address)
            sock.sendto(b"yes", address)
            return [sock.recv(65536)]

    outcomes = [
        run_scenario(impl, kind, model, sockdir, client, verify_request=refuse_first())
        for impl in IMPLS.values()
    ]
    assert_same(*outcomes)
    mine = outcomes[1]
    assert mine.replies[-1] == b"YES"
    refused = ["get_request", "verify_request", "shutdown_request", "close_request"]
    assert mine.trace.loop[:4] == refused


@pytest.mark.parametrize("kind", KINDS)
def test_get_request_oserror_skips_to_the_next_readiness(
    kind: str, sockdir: str, no_leaks: Resources
) -> None:
    failures = []

    def flaky_get_request(server: Any, parent: Any) -> Any:
        if len(failures) % 2 == 0:
            failures.append(1)
            raise OSError(errno.ECONNABORTED, "aborted before accept")
        failures.append(0)
        return parent()

    outcomes = [
        run_exchanges(impl, kind, "sync", [b"a"], sockdir=sockdir, get_request=flaky_get_request)
        for impl in IMPLS.values()
    ]
    assert_same(*outcomes)
    assert outcomes[1].replies == [b"A"]
    assert outcomes[1].trace.loop == ["get_request", *SYNC_REQUEST]


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_process_request_raising_is_reported_then_request_shut_down(
    kind: str, sockdir: str, no_leaks: Resources
) -> None:
    def broken(server: Any, parent: Any, request: Any, address: Any) -> None:
        raise RuntimeError("no worker available")

    def client(address: Any) -> list[bytes]:
        return [silent_exchange(kind, address)]

    theirs, mine = (
        run_scenario(impl, kind, "sync", sockdir, client, process_request=broken)
        for impl in IMPLS.values()
    )
    assert_same(theirs, mine)
    assert mine.replies == [b""]
    assert mine.trace.loop[3:] == [
        f"handle_error(socket, {'str' if kind.startswith('unix') else 'tuple'})"
        " RuntimeError: no worker available",
        "shutdown_request",
        "close_request",
    ]


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_setup_raising_skips_handle_and_finish(
    kind: str, sockdir: str, no_leaks: Resources
) -> None:
    def run(impl: Any, kind: str, model: str, sockdir: str) -> Outcome:
        def client(address: Any) -> list[bytes]:
            return [silent_exchange(kind, address)]

        outcome_holder: list[Outcome] = []
        with Recorder(f"{sockdir}/setup-trace-{impl.__name__}") as recorder:

            class Handler(recording_handler(impl, kind, recorder, lambda h: None)):  # type: ignore[misc]
                def setup(self) -> None:
                    recorder.record("setup")
                    raise OSError("setup failed")

            cls = recording_server(server_class(impl, kind, model), recorder)
            from support import serving

            with serving(cls(bind_address(kind, sockdir), Handler), 0.05) as server:
                replies = client(server.server_address)
            outcome_holder.append(Outcome(replies, recorder.trace()))
        return outcome_holder[0]

    theirs, mine = differential(kind, "sync", sockdir, run)
    assert_same(theirs, mine)
    assert "handle" not in mine.trace.loop and "finish" not in mine.trace.loop


# -- handle_request() on the caller's thread ---------------------------------


def reply_hi(handler: Any) -> None:
    handler.rfile.read()
    handler.wfile.write(b"hi")


def _handle_one(impl: Any, kind: str, sockdir: str, prepare: Any, client: Any = None) -> Any:
    """Build a recording sync server, let ``prepare`` adjust it, call handle_request()."""
    with Recorder(f"{sockdir}/hr-trace-{impl.__name__}-{kind}") as recorder:
        handler = recording_handler(impl, kind, recorder, reply_hi)
        cls = recording_server(server_class(impl, kind, "sync"), recorder)
        with cls(bind_address(kind, sockdir), handler) as server:
            prepare(server)
            reply = client(server) if client else None
            server.handle_request()
            if reply is not None:
                reply = reply()
        return reply, recorder.trace()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", ["server timeout", "socket timeout"])
def test_handle_request_times_out_into_handle_timeout(
    kind: str, how: str, sockdir: str, no_leaks: Resources
) -> None:
    def prepare(server: Any) -> None:
        if how == "server timeout":
            server.timeout = 0.01
        else:
            server.socket.settimeout(0.01)

    traces = [_handle_one(impl, kind, sockdir, prepare)[1] for impl in IMPLS.values()]
    assert traces[0] == traces[1]
    assert traces[1].main == ["server_bind", "server_activate", "handle_timeout", "server_close"]


@pytest.mark.parametrize("kind", KINDS)
def test_handle_request_serves_exactly_one_pending_request(
    kind: str, sockdir: str, no_leaks: Resources
) -> None:
    def client(server: Any) -> Any:
        address = server.server_address
        if kind in STREAM_KINDS:
            sock = connect(address, family(kind))
            sock.sendall(b"q")
            sock.shutdown(socket.SHUT_WR)

            def reply() -> bytes:
                with sock:
                    return recv_until_eof(sock)

            return reply
        dgram = datagram_client(kind, sockdir)
        sock = dgram.__enter__()
        sock.sendto(b"q", address)

        def dreply() -> bytes:
            try:
                return sock.recv(100)
            finally:
                dgram.__exit__(None, None, None)

        return dreply

    results = [_handle_one(impl, kind, sockdir, lambda s: None, client) for impl in IMPLS.values()]
    assert results[0] == results[1]
    reply, trace = results[1]
    assert reply == b"hi"
    assert trace.main == ["server_bind", "server_activate", *SYNC_REQUEST, "server_close"]


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_keyboard_interrupt_in_handler_shuts_request_and_propagates(
    kind: str, sockdir: str, no_leaks: Resources
) -> None:
    def run(impl: Any) -> tuple[bytes, list[str]]:
        with Recorder(f"{sockdir}/ki-{impl.__name__}") as recorder:

            def interrupted(handler: Any) -> None:
                raise KeyboardInterrupt

            handler = recording_handler(impl, kind, recorder, interrupted)
            cls = recording_server(server_class(impl, kind, "sync"), recorder)
            with cls(bind_address(kind, sockdir), handler) as server, connect(
                server.server_address, family(kind)
            ) as client:
                with pytest.raises(KeyboardInterrupt):
                    server.handle_request()
                reply = recv_until_eof(client)
            return reply, recorder.trace().main

    theirs, mine = run(stdlib), run(ours)
    assert mine == theirs
    assert mine[1][-4:] == ["finish", "shutdown_request", "close_request", "server_close"]


def test_handle_error_prints_the_same_report(
    sockdir: str, capsys: pytest.CaptureFixture[str], no_leaks: Resources
) -> None:
    reports = []
    for impl in IMPLS.values():

        class Failing(impl.BaseRequestHandler):  # type: ignore[name-defined, misc]
            def handle(self) -> None:
                raise ValueError("boom")

        with impl.TCPServer(("127.0.0.1", 0), Failing) as server, connect(server.server_address):
            server.handle_request()
        err = capsys.readouterr().err
        # The client's ephemeral port differs from run to run.
        lines = re.sub(r"'127\.0\.0\.1', \d+", "'127.0.0.1', PORT", err).splitlines()
        reports.append(lines[:3] + lines[-2:])
    assert reports[0] == reports[1]
    assert reports[1][1].startswith("Exception occurred during processing of request from")
    assert reports[1][-2] == "ValueError: boom"


# -- constructor errors -----------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_bind_to_a_busy_address_raises_the_same_error_and_leaks_nothing(
    kind: str, sockdir: str, no_leaks: Resources
) -> None:
    socket_type = socket.SOCK_STREAM if kind in STREAM_KINDS else socket.SOCK_DGRAM
    with socket.socket(family(kind), socket_type) as holder:
        holder.bind(bind_address(kind, sockdir))
        busy = holder.getsockname()
        errors = []
        for name, impl in IMPLS.items():
            with Recorder(f"{sockdir}/bind-{name}") as recorder:
                handler = recording_handler(impl, kind, recorder, lambda h: None)
                cls = recording_server(server_class(impl, kind, "sync"), recorder)
                with pytest.raises(OSError) as caught:
                    cls(busy, handler)
                errors.append((type(caught.value), caught.value.errno, recorder.trace()))
    assert errors[0] == errors[1]
    assert errors[1][1] == errno.EADDRINUSE
    assert errors[1][2].main == ["server_bind", "server_close"]


def test_bind_and_activate_false_defers_bind_and_listen(no_leaks: Resources) -> None:
    for impl in IMPLS.values():
        server = impl.TCPServer(("127.0.0.1", 0), impl.BaseRequestHandler, False)
        with server:
            assert server.server_address == ("127.0.0.1", 0)
            server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.server_bind()
            server.server_activate()
            assert server.server_address[1] != 0
            with connect(server.server_address):
                pass


def test_ipv6_by_address_family(no_leaks: Resources) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")

    class Echo6(ours.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.rfile.read())

    class Server6(ours.TCPServer):
        address_family = socket.AF_INET6

    try:
        server = Server6(("::1", 0), Echo6)
    except OSError as exc:
        pytest.skip(f"::1 unavailable: {exc}")
    from support import serving

    with serving(server):
        assert server.server_address[0] == "::1"
        with connect(server.server_address[:2], socket.AF_INET6) as client:
            client.sendall(b"six")
            client.shutdown(socket.SHUT_WR)
            assert recv_until_eof(client) == b"six"


# -- deliberate differences (asserting our behaviour) -----------------------


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_difference_verify_request_raising_is_reported_and_closed(
    kind: str, sockdir: str, capsys: pytest.CaptureFixture[str], no_leaks: Resources
) -> None:
    """Stdlib lets it escape handle_request()/serve_forever() and leaks the socket."""
    accepted: list[socket.socket] = []
    for impl in IMPLS.values():
        with Recorder(f"{sockdir}/vr-{impl.__name__}") as recorder:

            def keep(server: Any, parent: Any) -> Any:
                request, address = parent()
                accepted.append(request)
                return request, address

            def explode(server: Any, parent: Any, request: Any, address: Any) -> bool:
                raise LookupError("no such client")

            handler = recording_handler(impl, kind, recorder, lambda h: None)
            cls = recording_server(
                server_class(impl, kind, "sync"), recorder, get_request=keep, verify_request=explode
            )
            with cls(bind_address(kind, sockdir), handler) as server, connect(
                server.server_address, family(kind)
            ) as client:
                if impl is stdlib:
                    with pytest.raises(LookupError):
                        server.handle_request()
                    assert accepted[-1].fileno() != -1  # still open: stdlib leaked it
                    accepted[-1].close()
                else:
                    server.handle_request()
                    assert accepted[-1].fileno() == -1
                    assert recv_until_eof(client) == b""
                    assert recorder.trace().main[2:] == [
                        "get_request",
                        "verify_request",
                        f"handle_error(socket, {'str' if kind.startswith('unix') else 'tuple'})"
                        " LookupError: no such client",
                        "shutdown_request",
                        "close_request",
                    ]
    assert "LookupError: no such client" in capsys.readouterr().err


def test_difference_finished_threads_are_forgotten_at_once(no_leaks: Resources) -> None:
    """Stdlib drops a finished thread only when the next request arrives."""
    for impl in IMPLS.values():

        class Quick(impl.BaseRequestHandler):  # type: ignore[name-defined, misc]
            def handle(self) -> None:
                self.request.sendall(b"done")

        from support import serving

        with serving(impl.ThreadingTCPServer(("127.0.0.1", 0), Quick), 0.05) as server:
            with connect(server.server_address) as client:
                assert recv_until_eof(client) == b"done"
            for worker in list(server._threads):
                worker.join()
            if impl is ours:
                assert len(server._threads) == 0
            else:
                assert len(server._threads) == 1


@pytest.mark.parametrize("kind", DATAGRAM_KINDS)
def test_datagram_longer_than_max_packet_size_is_truncated(
    kind: str, sockdir: str, no_leaks: Resources
) -> None:
    def run(impl: Any) -> list[bytes]:
        class Small(server_class(impl, kind, "sync")):  # type: ignore[misc]
            max_packet_size = 10

        class Echo(impl.DatagramRequestHandler):  # type: ignore[misc]
            def handle(self) -> None:
                self.wfile.write(self.rfile.read())

        with Small(bind_address(kind, sockdir), Echo) as server, datagram_client(
            kind, sockdir
        ) as client:
            client.sendto(b"0123456789abcdef", server.server_address)
            server.handle_request()
            return [client.recv(100)]

    assert run(ours) == run(stdlib) == [b"0123456789"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_shutdown_request_sends_eof_even_while_the_socket_is_shared(
    kind: str, model: str, sockdir: str, no_leaks: Resources
) -> None:
    """shutdown_request shuts the write side before closing.

    A handler keeps a duplicate of its connection open (as a subprocess or a
    forked child would): close() alone would send no FIN, so only the
    SHUT_WR makes the client see EOF.
    """
    kept: list[socket.socket] = []

    def keep_a_duplicate(handler: Any) -> None:
        handler.rfile.read()
        handler.wfile.write(b"reply")
        kept.append(handler.connection.dup())

    try:
        theirs, mine = differential(
            kind, model, sockdir, run_exchanges, [b"q"], body=keep_a_duplicate
        )
    finally:
        for sock in kept:
            sock.close()
    assert_same(theirs, mine)
    assert mine.replies == [b"reply"]


@pytest.mark.parametrize("option", ["allow_reuse_address", "allow_reuse_port"])
@pytest.mark.parametrize("value", [False, True])
@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_reuse_options_set_the_socket_options(
    kind: str, option: str, value: bool, no_leaks: Resources
) -> None:
    if option == "allow_reuse_port" and not hasattr(stdlib.TCPServer, option):
        pytest.skip("stdlib before 3.11 has no allow_reuse_port")
    sockopt = socket.SO_REUSEADDR if option == "allow_reuse_address" else socket.SO_REUSEPORT
    seen = []
    for impl in IMPLS.values():
        cls = type("Reuse", (server_class(impl, kind, "sync"),), {option: value})
        with cls(("127.0.0.1", 0), impl.BaseRequestHandler) as server:
            seen.append(server.socket.getsockopt(socket.SOL_SOCKET, sockopt) != 0)
    assert seen == [value, value]
