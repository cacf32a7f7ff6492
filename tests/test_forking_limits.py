"""ForkingMixIn at max_children does not block the loop; drain() ends every child.

Issue 10, item 3.  At the limit the loop stops accepting instead of waiting
in ``waitpid()``, so ``shutdown()``, ``drain()`` and the other servers of a
``ServerGroup`` carry on while a child runs; the loop reaps a child as soon
as its pidfd turns readable, and closes that pidfd.  Each test that could
hang on a blocked loop runs the blocking call on a helper thread and joins
it with a bound, then releases the child so that nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support import (
    WAIT,
    Resources,
    child_pids,
    connect,
    loop_has_turned,
    open_fds,
    recv_exactly,
    serving,
)

import minisocketserver as socketserver
from minisocketserver import forking_mixin


def _have_pidfd() -> bool:
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):  # not Linux; ENOSYS: a kernel before 5.3
        return False
    return True


#: Whether this platform gives the loop a pidfd per child.
HAVE_PIDFD = _have_pidfd()

#: What a correct server needs, at most, for what should take milliseconds
#: (a wake-up, a reap), on a loaded CI machine.
MARGIN = 1.0


class Held(socketserver.StreamRequestHandler):
    """Sends its PID, then holds the connection until the client sends a line."""

    def handle(self) -> None:
        self.wfile.write(b"%8d\n" % os.getpid())
        self.rfile.readline()


class Stubborn(Held):
    """Held, in a child that ignores SIGTERM."""

    def handle(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        super().handle()


class Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


class OneChild(socketserver.ForkingTCPServer):
    max_children = 1


def started(client: socket.socket) -> int:
    """The PID of the child that serves ``client``, once its handler runs."""
    return int(recv_exactly(client, 9))


def release(*clients: socket.socket) -> None:
    """End the children holding ``clients`` (each waits for a line), then close."""
    for client in clients:
        with contextlib.suppress(OSError):
            client.sendall(b"done\n")
        client.close()


def timed_on_a_thread(call: Callable[[], Any], bound: float) -> tuple[bool, float, list[Any]]:
    """Run ``call`` on a helper thread; (returned within ``bound``, seconds, [result]).

    The helper is a daemon left to finish later if ``call`` blocks: the
    test then releases what blocks it and joins it before leaving.
    """
    result: list[Any] = []
    helper = threading.Thread(target=lambda: result.append(call()), daemon=True)
    start = time.monotonic()
    helper.start()
    helper.join(bound)
    return not helper.is_alive(), time.monotonic() - start, result


@contextlib.contextmanager
def loop_on_a_thread(serve: Callable[..., None]) -> Iterator[threading.Thread]:
    loop = threading.Thread(target=serve, args=(0.05,), daemon=True)
    loop.start()
    try:
        yield loop
    finally:
        loop.join(WAIT)
        assert not loop.is_alive(), "serve_forever() did not return"


def assert_reaped(pid: int) -> None:
    """``pid`` was our child and is gone for good: neither running nor a zombie."""
    assert pid not in child_pids()
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


@pytest.mark.timeout(30)
def test_shutdown_returns_at_once_while_a_child_holds_the_limit(no_leaks: Resources) -> None:
    server = OneChild(("127.0.0.1", 0), Held)
    with server, loop_on_a_thread(server.serve_forever):
        client = connect(server.server_address)
        try:
            started(client)
            # Before the fix the loop sat in waitpid() until the child ended.
            returned, _, _ = timed_on_a_thread(server.shutdown, MARGIN)
        finally:
            release(client)  # server_close() waits for the child
        assert returned, "shutdown() waited for the child at max_children"


@pytest.mark.timeout(30)
def test_drain_at_max_children_returns_by_its_deadline(no_leaks: Resources) -> None:
    server = OneChild(("127.0.0.1", 0), Held)
    with server, loop_on_a_thread(server.serve_forever):
        client = connect(server.server_address)
        try:
            pid = started(client)
            returned, _, cut = timed_on_a_thread(lambda: server.drain(0.2), 0.2 + MARGIN)
        finally:
            release(client)
        assert returned, "drain() waited for the child at max_children"
    assert cut == [1]
    assert_reaped(pid)


@pytest.mark.timeout(30)
def test_drain_kills_a_child_that_ignores_sigterm(no_leaks: Resources) -> None:
    class Server(socketserver.ForkingTCPServer):
        drain_grace = 0.2

    server = Server(("127.0.0.1", 0), Stubborn)
    with server, loop_on_a_thread(server.serve_forever):
        client = connect(server.server_address)
        try:
            pid = started(client)  # SIGTERM is ignored from here on
            bound = 0.2 + Server.drain_grace + MARGIN
            returned, took, cut = timed_on_a_thread(lambda: server.drain(0.2), bound)
            # The child is gone: its copy of the connection was closed by
            # the kernel, so the client reads EOF, not the line it waits on.
            if returned:
                assert client.recv(16) == b""
        finally:
            release(client)
        assert returned, "drain() waited for a child that ignores SIGTERM"
    assert cut == [1]
    assert took >= 0.2 + Server.drain_grace  # SIGKILL only after the grace
    assert_reaped(pid)
    assert server.active_children == set()


@pytest.mark.timeout(30)
def test_a_group_serves_its_other_members_while_a_forking_one_is_at_its_limit(
    no_leaks: Resources,
) -> None:
    forking = OneChild(("127.0.0.1", 0), Held)
    threading_ = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    group = socketserver.ServerGroup([forking, threading_])
    with group, loop_on_a_thread(group.serve_forever):
        held = connect(forking.server_address)
        try:
            started(held)  # the forking member is at its limit from here on
            for i in range(3):
                with connect(threading_.server_address) as client:
                    client.settimeout(MARGIN)  # not WAIT: the old loop never answers
                    client.sendall(b"%d\n" % i)
                    assert client.recv(16) == b"%d\n" % i, "the group's loop is blocked"
        finally:
            release(held)
            group.shutdown()


@pytest.mark.timeout(30)
def test_at_the_limit_the_listener_is_unwatched_and_an_exit_reaps_without_polling(
    no_leaks: Resources,
) -> None:
    if not HAVE_PIDFD:
        pytest.skip("reaping on exit needs pidfds (Linux 5.3+)")
    # poll_interval of a minute: only the child's pidfd can make the loop
    # reap it (and accept the waiting client) within the test's bounds.
    with serving(OneChild(("127.0.0.1", 0), Held), poll_interval=60) as server:
        first = connect(server.server_address)
        second = connect(server.server_address)
        try:
            started(first)
            # The second connection is in the backlog once the listener
            # polls readable; a loop still watching it would accept it.
            readable, _, _ = select.select([server.socket], [], [], WAIT)
            loop_has_turned(server)
            assert readable and len(server.active_children) == 1
            assert not server._reactor.is_watching(server)
            release(first)
            started(second)  # the first child was reaped on its exit
        finally:
            release(first, second)


@pytest.mark.timeout(30)
def test_without_pidfds_the_periodic_reap_resumes_accepting(
    monkeypatch: pytest.MonkeyPatch, no_leaks: Resources
) -> None:
    monkeypatch.setattr(forking_mixin, "_HAVE_PIDFD", False)
    with serving(OneChild(("127.0.0.1", 0), Held), poll_interval=0.01) as server:
        first = connect(server.server_address)
        second = connect(server.server_address)
        try:
            started(first)
            assert server._exit_watches is None  # nothing was opened
            release(first)
            started(second)
        finally:
            release(first, second)


class ReportsReaps(socketserver.ForkingTCPServer):
    """Puts each PID it reaps on ``reaped``, after its pidfd is closed."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reaped: queue.Queue[int] = queue.Queue()

    def collect_children(self, *, blocking: bool = False) -> None:
        before = set(self.active_children or ())
        super().collect_children(blocking=blocking)
        for pid in sorted(before - (self.active_children or set())):
            self.reaped.put(pid)


#: A minute: with pidfds the loop must reap each child on its exit, not on
#: a periodic wake-up; without, the periodic reap is all there is.
POLL_FOR_EXITS = 60 if HAVE_PIDFD else 0.01


@pytest.mark.timeout(30)
def test_pidfds_are_closed_as_children_are_reaped(no_leaks: Resources) -> None:
    with serving(ReportsReaps(("127.0.0.1", 0), Held), POLL_FOR_EXITS) as server:
        baseline: set[int] = set()
        for round in range(21):
            with connect(server.server_address) as client:
                pid = started(client)
                client.sendall(b"done\n")
            assert server.reaped.get(timeout=WAIT) == pid
            # The first round is the baseline: the loop runs, its reactor's
            # descriptors are open.
            baseline = baseline or open_fds()
            assert open_fds() == baseline, f"round {round}: a reaped child's pidfd is open"


@pytest.mark.timeout(30)
def test_a_stopped_loop_closes_the_pidfds_and_a_new_one_watches_the_children(
    no_leaks: Resources,
) -> None:
    server = ReportsReaps(("127.0.0.1", 0), Held)
    clients: list[socket.socket] = []
    try:
        with loop_on_a_thread(server.serve_forever):
            clients.extend(connect(server.server_address) for _ in range(3))
            pids = {started(client) for client in clients}
            loop_has_turned(server)  # it has forked the third child
            assert len(pidfds()) == (3 if HAVE_PIDFD else 0)
            server.shutdown()  # the children run on
        assert server.active_children == pids
        assert pidfds() == [], "pidfds outlived the loop"
        # Only a new loop that watches the old children again reaps them
        # on their exit.
        with serving(server, POLL_FOR_EXITS):
            release(*clients)
            assert {server.reaped.get(timeout=WAIT) for _ in pids} == pids
    finally:
        release(*clients)
        server.server_close()


def pidfds() -> list[int]:
    """This process's open pidfds."""
    found = []
    for fd in open_fds():
        # FileNotFoundError: listdir()'s own descriptor, closed since.
        with contextlib.suppress(FileNotFoundError):
            if os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[pidfd]":
                found.append(fd)
    return found
