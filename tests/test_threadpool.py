"""ThreadPoolMixIn: reused workers, a bounded queue, backpressure, drain."""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import WAIT, Resources, connect, loop_has_turned, recv_exactly, recv_until_eof, serving

import minisocketserver as socketserver


class Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read())


class Gate(socketserver.StreamRequestHandler):
    """Says "started", then holds the connection until the client sends a line."""

    def handle(self) -> None:
        self.wfile.write(b"started\n")
        self.rfile.readline()


def recording_echo(seen: set[threading.Thread]) -> type[Echo]:
    """An Echo handler that adds the thread serving each request to ``seen``."""

    class Recording(Echo):
        def handle(self) -> None:
            seen.add(threading.current_thread())
            super().handle()

    return Recording


@pytest.mark.timeout(30)
def test_workers_are_reused_not_started_per_connection(no_leaks: Resources) -> None:
    seen: set[threading.Thread] = set()
    Recording = recording_echo(seen)

    class Small(socketserver.ThreadPoolTCPServer):
        max_workers = 3

    with serving(Small(("127.0.0.1", 0), Recording)) as server:
        for i in range(50):
            with connect(server.server_address) as client:
                client.sendall(b"%d" % i)
                client.shutdown(socket.SHUT_WR)
                assert recv_until_eof(client) == b"%d" % i
    # Thread-per-connection would show 50.  Not always 1: a worker that has
    # just closed a connection may not be back in take() when the next
    # client arrives, and then a second one starts.
    assert len(seen) <= Small.max_workers


@pytest.mark.parametrize("core", [1, 2])
@pytest.mark.timeout(30)
def test_short_requests_queue_for_the_core_workers_instead_of_growing_the_pool(
    core: int, no_leaks: Resources,
) -> None:
    seen: set[threading.Thread] = set()
    Recording = recording_echo(seen)

    class Small(socketserver.ThreadPoolTCPServer):
        core_workers = core
        spawn_delay = 60.0  # the pool never counts as stuck in this test

    with serving(Small(("127.0.0.1", 0), Recording)) as server:
        clients = [connect(server.server_address) for _ in range(20)]
        for i, client in enumerate(clients):  # twenty requests queue at once
            client.sendall(b"%d" % i)
            client.shutdown(socket.SHUT_WR)
        for i, client in enumerate(clients):
            assert recv_until_eof(client) == b"%d" % i
            client.close()
    # Under the old rule (a worker for every request that found none idle)
    # this took up to twenty threads; a burst accepted in one turn of the
    # loop must not overshoot core_workers either.
    assert 1 <= len(seen) <= core


@pytest.mark.timeout(30)
def test_a_stuck_pool_grows_after_spawn_delay_and_the_surplus_worker_leaves(
    no_leaks: Resources,
) -> None:
    workers: list[threading.Thread] = []

    class Recording(Gate):
        def handle(self) -> None:
            workers.append(threading.current_thread())
            super().handle()

    class OneCore(socketserver.ThreadPoolTCPServer):
        core_workers = 1
        spawn_delay = 0.2

    with serving(OneCore(("127.0.0.1", 0), Recording)) as server:
        holder = connect(server.server_address)  # holds the only core worker
        assert recv_exactly(holder, 8) == b"started\n"
        asked = time.monotonic()
        second = connect(server.server_address)
        # Served although the core worker is held: the pool was stuck.
        assert recv_exactly(second, 8) == b"started\n"
        assert time.monotonic() - asked >= OneCore.spawn_delay
        assert len(server._threads) == 2
        second.sendall(b"done\n")
        assert second.recv(16) == b""
        # The surplus worker found the queue empty and left.
        surplus = workers[1]
        surplus.join(WAIT)
        assert not surplus.is_alive()
        assert len(server._threads) == 1
        holder.sendall(b"done\n")
        assert holder.recv(16) == b""
        for sock in (holder, second):
            sock.close()


@pytest.mark.timeout(30)
def test_full_queue_stops_accepting_until_a_worker_takes_one(no_leaks: Resources) -> None:
    class Tiny(socketserver.ThreadPoolTCPServer):
        max_workers = 1
        queue_size = 1

    with serving(Tiny(("127.0.0.1", 0), Gate)) as server:
        running = connect(server.server_address)
        assert recv_exactly(running, 8) == b"started\n"
        queued = connect(server.server_address)  # fills the queue of one
        waiting = connect(server.server_address)
        # Once the listener polls readable, `waiting` is in the kernel
        # backlog, where a loop that still watched it would accept it.
        readable, _, _ = select.select([server.socket], [], [], WAIT)
        loop_has_turned(server)
        assert readable and not server._reactor.is_watching(server)
        assert len(server._pool().in_flight()) == 2
        running.sendall(b"done\n")  # the worker takes `queued` ...
        assert recv_exactly(queued, 8) == b"started\n"
        queued.sendall(b"done\n")  # ... and then `waiting`, accepted again
        assert recv_exactly(waiting, 8) == b"started\n"
        waiting.sendall(b"done\n")
        for sock in (running, queued, waiting):
            assert sock.recv(16) == b""
            sock.close()


@pytest.mark.timeout(30)
def test_drain_cuts_a_connection_that_outlives_the_deadline(no_leaks: Resources) -> None:
    server = socketserver.ThreadPoolTCPServer(("127.0.0.1", 0), Gate)
    with serving(server):
        stuck = connect(server.server_address)
        assert recv_exactly(stuck, 8) == b"started\n"
        assert server.drain(timeout=0.1) == 1
        assert stuck.recv(16) == b""
        stuck.close()


stream_payloads = st.lists(st.binary(min_size=1, max_size=2048), min_size=1, max_size=8)


@pytest.mark.timeout(60)
def test_arbitrary_chunks_round_trip(no_leaks: Resources) -> None:
    with serving(socketserver.ThreadPoolTCPServer(("127.0.0.1", 0), Echo)) as server:

        @given(chunks=stream_payloads)
        def round_trip(chunks: list[bytes]) -> None:
            with connect(server.server_address) as client:
                for chunk in chunks:
                    client.sendall(chunk)
                client.shutdown(socket.SHUT_WR)
                assert recv_until_eof(client) == b"".join(chunks)

        round_trip()


class Held(socketserver.BaseRequestHandler):
    """Reads 4 bytes: b"hold" waits for ``release`` then raises ``exit_with``; others are served."""

    entered = threading.Event()
    release = threading.Event()
    exit_with: type[BaseException] | None = None

    def handle(self) -> None:
        if self.request.recv(4) == b"hold":
            self.entered.set()
            assert self.release.wait(WAIT)
            if self.exit_with is not None:
                raise self.exit_with
        self.request.sendall(b"served")


def hold_one_and_queue_one(server: socketserver.ThreadPoolTCPServer) -> tuple[Any, Any]:
    """Start serving; one request holds the only worker, a second is queued behind it."""
    handed_over = threading.Semaphore(0)  # released once per request queued
    process_request = server.process_request

    def recording(request: Any, client_address: Any) -> None:
        process_request(request, client_address)
        handed_over.release()

    server.process_request = recording  # type: ignore[method-assign]
    loop = threading.Thread(target=server.serve_forever, daemon=True)
    loop.start()
    holder = connect(server.server_address)
    holder.sendall(b"hold")
    assert handed_over.acquire(timeout=WAIT)
    assert Held.entered.wait(WAIT)
    waiting = connect(server.server_address)
    waiting.sendall(b"next")
    assert handed_over.acquire(timeout=WAIT)
    return loop, (holder, waiting)


@pytest.mark.timeout(30)
def test_server_close_waits_for_the_worker_started_for_a_queued_request(
    no_leaks: Resources,
) -> None:
    class OneCore(socketserver.ThreadPoolTCPServer):
        core_workers = 1
        spawn_delay = 60.0  # the queued request gets its worker only when the loop ends

    Held.entered.clear()
    Held.release.clear()
    Held.exit_with = None
    server = OneCore(("127.0.0.1", 0), Held)
    started: list[threading.Thread] = []
    started_when_shutdown_returns: list[int] = []
    start_worker = server._start_worker

    def recording_start(pool: Any) -> None:
        start_worker(pool)
        started.append(threading.current_thread())

    class Done(threading.Event):  # what lets shutdown() return
        def set(self) -> None:
            started_when_shutdown_returns.append(len(started))
            super().set()

    server._start_worker = recording_start  # type: ignore[method-assign]
    server._serving_done = Done()
    loop, (holder, waiting) = hold_one_and_queue_one(server)
    server.shutdown()
    # The loop started the queued request's worker before it let shutdown()
    # return, so a server_close() right then knows of it and waits for it.
    # (Counted as started, not as alive: it may have served and left already.)
    assert started_when_shutdown_returns == [2]
    Held.release.set()
    server.server_close()
    assert len(server._threads) == 0
    assert recv_until_eof(waiting) == b"served"
    loop.join(WAIT)
    for sock in (holder, waiting):
        sock.close()


@pytest.mark.timeout(30)
def test_a_queued_request_is_served_when_the_last_worker_exits_after_close(
    monkeypatch: pytest.MonkeyPatch, no_leaks: Resources
) -> None:
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # SystemExit is the point

    class One(socketserver.ThreadPoolTCPServer):
        max_workers = 1

    Held.entered.clear()
    Held.release.clear()
    Held.exit_with = SystemExit
    server = One(("127.0.0.1", 0), Held)
    loop, (holder, waiting) = hold_one_and_queue_one(server)
    server.shutdown()
    loop.join(WAIT)
    pool = server._pool()
    close = pool.close

    def close_then_release() -> Any:
        closed = close()  # type: ignore[func-returns-value]
        Held.release.set()  # the only worker dies of SystemExit after close()
        return closed

    pool.close = close_then_release  # type: ignore[method-assign]
    server.server_close()
    # Its replacement finished the queue, and server_close() waited for it.
    assert len(server._threads) == 0
    assert recv_until_eof(waiting) == b"served"
    assert recv_until_eof(holder) == b""
    for sock in (holder, waiting):
        sock.close()
