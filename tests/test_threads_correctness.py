"""Issue 10, correctness pass of the thread models: who owns a request, when.

* daemon workers are not joined by ``server_close()``, as in stdlib (an idle
  keep-alive client must not hold the close up), for ``ThreadingMixIn`` and
  for the pool;
* a worker thread that cannot start leaves no trace, and its request is
  shut down exactly once, by whoever owns it;
* ``drain()`` cuts queued requests of the pool for good: they never run;
* an interrupt inside ``Thread.start()`` leaves the request to exactly one
  owner, the worker or the loop's error path.

Thread start failures are simulated by patching ``threading.Thread.start``
for calls made on the loop's thread (the only one that starts workers, but
for a pool worker replacing itself), so that the test's own threads start.
"""

from __future__ import annotations

import collections
import logging
import socketserver as stdlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import WAIT, Resources, connect, loop_has_turned, recv_exactly, recv_until_eof

import minisocketserver as ours
from minisocketserver.threadpool_mixin import _Pool

LOOP_NAME = "serve_forever under test"


class Held:
    """What the handlers below saw, and a gate to hold them."""

    def __init__(self) -> None:
        self.entered = threading.Semaphore(0)  # released once per handler started
        self.release = threading.Event()
        self.ran: list[Any] = []  # the requests a handler ran on


def gate_handler(held: Held, module: Any = ours) -> type:
    """A handler that says "started", then holds its connection until EOF or ``release``."""

    class Gate(module.StreamRequestHandler):  # type: ignore[misc,name-defined]
        def handle(self) -> None:
            held.ran.append(self.request)
            self.wfile.write(b"started\n")
            held.entered.release()
            self.rfile.readline()  # an idle keep-alive client: EOF, or a line, ends it

    return Gate


def echo_handler(held: Held) -> type:
    """Answers one line, recording the request it ran on."""

    class Echo(ours.StreamRequestHandler):
        def handle(self) -> None:
            held.ran.append(self.request)
            self.wfile.write(b"<" + self.rfile.readline().strip() + b">\n")

    return Echo


def start_loop(server: Any, poll_interval: float = 0.5) -> threading.Thread:
    loop = threading.Thread(
        target=server.serve_forever, args=(poll_interval,), name=LOOP_NAME, daemon=True
    )
    loop.start()
    return loop


def bounded(function: Callable[[], object]) -> threading.Thread:
    """Run ``function`` on a thread; the caller joins it with a bound (a hang fails, not hangs)."""
    thread = threading.Thread(target=function, name=f"bounded {function.__name__}", daemon=True)
    thread.start()
    return thread


# -- item 1: daemon workers are not joined ---------------------------------


@pytest.mark.timeout(30)
def test_server_close_does_not_wait_for_a_daemon_worker_held_by_an_idle_client(
    no_leaks: Resources,
) -> None:
    """``http.server.ThreadingHTTPServer``'s case: a keep-alive client sits idle.

    Stdlib is the oracle: ``server_close()`` returns at once with a daemon
    worker blocked in ``readline()``.  Ours must too, and still count the
    worker (it is there for ``max_threads`` and ``drain()``).
    """
    for module in (stdlib, ours):
        held = Held()

        class Daemonic(module.ThreadingTCPServer):  # type: ignore[misc,name-defined]
            daemon_threads = True

        server = Daemonic(("127.0.0.1", 0), gate_handler(held, module))
        loop = start_loop(server, poll_interval=0.01)  # stdlib's shutdown() polls
        with connect(server.server_address) as idle:
            assert recv_exactly(idle, 8) == b"started\n"
            server.shutdown()
            loop.join(WAIT)
            closer = bounded(server.server_close)
            closer.join(WAIT)
            assert not closer.is_alive(), f"{module.__name__}: server_close() waits for the client"
            if module is ours:
                assert len(server._threads) == 1  # still counted until it ends
        # The client left: its worker sees EOF and ends (no_leaks joins it).
        closer.join(WAIT)


@pytest.mark.timeout(30)
def test_pool_server_close_does_not_wait_for_daemon_workers_held_by_idle_clients(
    no_leaks: Resources,
) -> None:
    held = Held()

    class Daemonic(ours.ThreadPoolTCPServer):
        daemon_threads = True

    server = Daemonic(("127.0.0.1", 0), gate_handler(held))
    loop = start_loop(server)
    with connect(server.server_address) as idle:
        assert recv_exactly(idle, 8) == b"started\n"
        server.shutdown()
        loop.join(WAIT)
        closer = bounded(server.server_close)
        closer.join(WAIT)
        assert not closer.is_alive(), "server_close() waits for the idle client's worker"
    closer.join(WAIT)


# -- item 2: a thread that cannot start --------------------------------------


class StartFailures:
    """``Thread.start()`` on the loop's thread fails the next ``fail`` times."""

    def __init__(self) -> None:
        self.fail = 0  # set by the test, on its thread, while the loop waits
        self.failed = 0
        self.happened = threading.Event()


@pytest.fixture
def failing_starts(monkeypatch: pytest.MonkeyPatch) -> Iterator[StartFailures]:
    failures = StartFailures()
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if threading.current_thread().name == LOOP_NAME and failures.fail > 0:
            failures.fail -= 1
            failures.failed += 1
            failures.happened.set()
            raise RuntimeError("can't start new thread")
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    yield failures


def recording(server_class: type, held: Held) -> Any:
    """A subclass of ``server_class`` that records errors and each request's shutdowns."""

    class Recording(server_class):  # type: ignore[misc,valid-type]
        errors: list[BaseException | None]
        shut: collections.Counter[int]  # id(request) -> shutdown_request() calls
        requests: list[Any]  # kept alive, so that no id() is reused
        handed_over: threading.Semaphore

        def handle_error(self, request: Any, client_address: Any) -> None:
            self.errors.append(sys.exc_info()[1])

        def process_request(self, request: Any, client_address: Any) -> None:
            try:
                super().process_request(request, client_address)
            finally:
                self.handed_over.release()

        def shutdown_request(self, request: Any) -> None:
            if id(request) not in self.shut:
                self.requests.append(request)
            self.shut[id(request)] += 1
            super().shutdown_request(request)

    Recording.errors = []
    Recording.shut = collections.Counter()
    Recording.requests = []
    Recording.handed_over = threading.Semaphore(0)
    return Recording


@pytest.mark.timeout(30)
def test_a_thread_that_cannot_start_leaves_no_trace(
    failing_starts: StartFailures, no_leaks: Resources
) -> None:
    held = Held()

    class Limited(ours.ThreadingTCPServer):
        max_threads = 2

    server = recording(Limited, held)(("127.0.0.1", 0), echo_handler(held))
    loop = start_loop(server)
    try:
        failing_starts.fail = 3  # more than max_threads: leaked slots would stop accepting
        for _ in range(3):
            with connect(server.server_address) as client:
                assert recv_until_eof(client) == b""  # shut down by the loop, once
            assert server.handed_over.acquire(timeout=WAIT)
            assert len(server._threads) == 0
        assert failing_starts.failed == 3
        assert [type(e) for e in server.errors] == [RuntimeError] * 3
        assert sorted(server.shut.values()) == [1, 1, 1] and held.ran == []
        for i in range(3):  # accepting goes on, past max_threads
            with connect(server.server_address) as client:
                client.sendall(b"%d\n" % i)
                assert recv_until_eof(client) == b"<%d>\n" % i
        # Neither joins a thread that never started (RuntimeError before).
        assert server.drain(WAIT) == 0
    finally:
        server.shutdown()
        loop.join(WAIT)
        server.server_close()


@pytest.mark.timeout(30)
def test_a_pool_with_no_worker_that_cannot_start_one_returns_the_request_to_the_loop(
    failing_starts: StartFailures, no_leaks: Resources
) -> None:
    """No worker at all: the request leaves the queue, the loop reports and shuts it down.

    Before the fix it was shut down by the loop but stayed queued, and the
    next worker ran it again, on a closed descriptor.
    """
    held = Held()
    server = recording(ours.ThreadPoolTCPServer, held)(("127.0.0.1", 0), echo_handler(held))
    loop = start_loop(server)
    try:
        failing_starts.fail = 1
        with connect(server.server_address) as client:
            assert recv_until_eof(client) == b""
        assert server.handed_over.acquire(timeout=WAIT)
        assert [type(e) for e in server.errors] == [RuntimeError]
        assert server._pool().in_flight() == []
        with connect(server.server_address) as client:  # its worker starts
            client.sendall(b"next\n")
            assert recv_until_eof(client) == b"<next>\n"
        assert len(held.ran) == 1  # the failed request never ran
    finally:
        server.shutdown()
        loop.join(WAIT)
        server.server_close()
    assert sorted(server.shut.values()) == [1, 1]
    assert len(server.errors) == 1


@pytest.mark.parametrize("path", ["process_request", "growth timer"])
@pytest.mark.timeout(30)
def test_a_request_queued_when_no_more_workers_can_start_waits_for_a_running_one(
    path: str,
    failing_starts: StartFailures,
    caplog: pytest.LogCaptureFixture,
    no_leaks: Resources,
) -> None:
    """A worker runs but another cannot start: the request stays queued, the failure is logged.

    It is the pool's, so the loop neither reports it through
    ``handle_error`` nor shuts it down (before the fix it did both, from
    ``process_request``, and the running worker later ran it on a closed
    descriptor; from the growth timer, the RuntimeError left
    ``serve_forever()``).
    """
    held = Held()

    class Pool(ours.ThreadPoolTCPServer):
        # "process_request": the second request is below core_workers and its
        # worker is started at once; "growth timer": the pool is stuck after
        # spawn_delay.
        core_workers = 2 if path == "process_request" else 1
        spawn_delay = 0.001

    class Both(ours.StreamRequestHandler):
        def handle(self) -> None:
            held.ran.append(self.request)
            line = self.rfile.readline()
            if line == b"hold\n":
                held.entered.release()
                assert held.release.wait(WAIT)
            self.wfile.write(b"<" + line.strip() + b">\n")

    server = recording(Pool, held)(("127.0.0.1", 0), Both)
    loop = start_loop(server)
    try:
        with connect(server.server_address) as holder:
            holder.sendall(b"hold\n")
            assert held.entered.acquire(timeout=WAIT)
            assert server.handed_over.acquire(timeout=WAIT)
            failing_starts.fail = 1
            with (
                caplog.at_level(logging.WARNING, logger="minisocketserver"),
                connect(server.server_address) as waiting,
            ):
                waiting.sendall(b"waits\n")
                assert server.handed_over.acquire(timeout=WAIT)
                assert failing_starts.happened.wait(WAIT)
                held.release.set()
                assert recv_until_eof(holder) == b"<hold>\n"
                assert recv_until_eof(waiting) == b"<waits>\n"
            loop_has_turned(server)  # the loop survived the failure
            assert failing_starts.failed == 1
            assert server.errors == []
            assert any("cannot start a pool worker" in r.getMessage() for r in caplog.records)
    finally:
        held.release.set()
        server.shutdown()
        loop.join(WAIT)
        server.server_close()
    assert sorted(server.shut.values()) == [1, 1]


@pytest.mark.timeout(30)
def test_pool_join_waits_for_a_worker_whose_start_is_under_way(no_leaks: Resources) -> None:
    """A worker replacing itself after ``close()`` registers a thread, then starts it.

    ``server_close()`` joining right between the two raised ``RuntimeError:
    cannot join thread before it is started`` (seen under load in
    test_the_pool_still_serves_after_more_system_exits_than_workers).
    """
    pool = _Pool(max_workers=2, core_workers=1, queue_size=8)
    pool.close()
    release = threading.Event()

    def work() -> None:  # what a real worker does after close(): leave
        release.wait(WAIT)
        pool.retire(threading.current_thread())

    worker = threading.Thread(target=work, name="registered worker")
    pool.add_worker(worker)  # as _start_worker() does, before start()
    # Released when the joiner is done (an error) or waits for the start.
    progress = threading.Semaphore(0)

    start_returned = getattr(pool, "_start_returned", None)  # absent before the fix
    if start_returned is not None:
        wait = start_returned.wait

        def signalling_wait(timeout: float | None = None) -> bool:
            progress.release()
            return wait(timeout)  # type: ignore[no-any-return]

        start_returned.wait = signalling_wait
    errors: list[BaseException] = []

    def join() -> None:
        try:
            pool.join()
        except BaseException as exc:
            errors.append(exc)
        finally:
            progress.release()

    joiner = bounded(join)
    assert progress.acquire(timeout=WAIT)
    assert errors == []
    worker.start()
    pool.started(worker)  # as _start_worker() does once start() returned
    release.set()
    joiner.join(WAIT)
    assert not joiner.is_alive() and errors == []
    assert not worker.is_alive()  # join() waited for it


# -- item 3 (8b): drain() cuts queued requests of the pool for good --------


@pytest.mark.timeout(30)
def test_pool_drain_cuts_queued_requests_and_they_never_run(no_leaks: Resources) -> None:
    held = Held()

    class One(ours.ThreadPoolTCPServer):
        max_workers = 1
        core_workers = 1

    server = recording(One, held)(("127.0.0.1", 0), gate_handler(held))
    loop = start_loop(server)
    running = connect(server.server_address)
    queued = []
    try:
        assert recv_exactly(running, 8) == b"started\n"
        assert server.handed_over.acquire(timeout=WAIT)
        for _ in range(2):
            queued.append(connect(server.server_address))
            assert server.handed_over.acquire(timeout=WAIT)
        assert server.drain(0.05) == 3  # one running, two queued
        assert server._pool().in_flight() == []
        server.server_close()
        assert len(held.ran) == 1  # only the running one ever ran
        for client in (running, *queued):
            assert recv_until_eof(client) == b""
    finally:
        for client in (running, *queued):
            client.close()
        server.shutdown()  # already done by drain(): returns at once
        loop.join(WAIT)
        server.server_close()
    assert sorted(server.shut.values()) == [1, 1, 1]


# -- item 4: an interrupt inside Thread.start() -----------------------------


@pytest.mark.timeout(30)
def test_an_interrupt_inside_thread_start_leaves_the_request_to_one_owner(
    monkeypatch: pytest.MonkeyPatch, no_leaks: Resources
) -> None:
    """SIGINT lands inside ``start()``, once the worker runs: the worker or the loop owns it.

    Whichever claims it first; which one is a race, but never both (the
    request shut down twice, a handler run on a closed socket) and never
    neither (a leak: ``no_leaks`` checks).
    """
    real_start = threading.Thread.start

    def interrupted_start(thread: threading.Thread) -> None:
        real_start(thread)
        if threading.current_thread().name == LOOP_NAME:
            raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", interrupted_start)
    held = Held()
    server = recording(ours.ThreadingTCPServer, held)(("127.0.0.1", 0), echo_handler(held))
    raised: list[BaseException] = []

    def serve() -> None:
        try:
            server.serve_forever()
        except KeyboardInterrupt as exc:
            raised.append(exc)

    loop = threading.Thread(target=serve, name=LOOP_NAME)
    loop.start()
    try:
        with connect(server.server_address) as client:
            loop.join(WAIT)
            assert raised, "the interrupt did not leave the loop"
            client.sendall(b"hello\n")
            answer = recv_until_eof(client)
        assert answer in (b"<hello>\n", b"")
        assert len(held.ran) == (1 if answer else 0)
    finally:
        server.server_close()  # waits for the worker, if it won
    assert list(server.shut.values()) == [1]
    assert server.errors == []
