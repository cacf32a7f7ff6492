"""What the loop borrows from the process, and gives back on every path.

Issue 10, items 6 and 8: ``serve_loop()`` installs the reactor's wake-up
channel as Python's signal wake-up descriptor, and claims each server it
serves for its thread.  Both must be undone on every path out, a signal at
the worst moment included, and a second loop must not claim a server that
one is serving already.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import pytest
from support import WAIT, connect

import minisocketserver as ours
from minisocketserver.reactor import Reactor

#: The generator under ``Reactor.signals_wake`` (contextmanager wraps it).
SIGNALS_WAKE = Reactor.signals_wake.__wrapped__.__code__  # type: ignore[attr-defined]


def interrupt_after_call(n: int) -> tuple[Any, list[int]]:
    """A profile function raising KeyboardInterrupt as the ``n``-th C call made
    by ``signals_wake`` returns: exactly where CPython runs a signal handler
    that arrived during a call (its eval breaker is checked as calls return).
    Also returns a list that counts the calls seen.

    Only C calls count (``c_return``, reported with the caller's frame): a
    Python function's ``return`` could be a gc callback that happened to run
    there, and the garbage collector swallows what its callbacks raise.
    """
    seen = [0]

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "c_return" and frame.f_code is SIGNALS_WAKE:
            seen[0] += 1
            if seen[0] == n:
                sys.setprofile(None)
                raise KeyboardInterrupt

    return profile, seen


@pytest.fixture
def wakeup_fd() -> Iterator[int]:
    """Python's signal wake-up descriptor set to one of ours for the test."""
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno())
    try:
        yield writer.fileno()
    finally:
        signal.set_wakeup_fd(previous)
        reader.close()
        writer.close()


@pytest.mark.parametrize("n", range(1, 8))
def test_a_signal_at_any_call_of_signals_wake_leaves_the_wakeup_fd_as_it_was(
    n: int, wakeup_fd: int
) -> None:
    """Before the fix, a KeyboardInterrupt right after ``set_wakeup_fd()`` returned
    (before its result was stored and the ``try`` entered) left the reactor's
    descriptor installed, closed by the time anyone looked."""
    profile, seen = interrupt_after_call(n)
    interrupted = False
    with Reactor(ours.TCPServer.selector_class) as reactor:
        sys.setprofile(profile)
        try:
            with reactor.signals_wake():
                sys.setprofile(None)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            sys.setprofile(None)
    if not interrupted:
        assert seen[0] < n, "every call of signals_wake was interrupted once"
    assert signal.set_wakeup_fd(wakeup_fd) == wakeup_fd


def test_the_interrupt_points_cover_the_install(wakeup_fd: int) -> None:
    """The parametrised test above reaches past the install (so it tested it)."""
    profile, seen = interrupt_after_call(10**6)
    with Reactor(ours.TCPServer.selector_class) as reactor:
        sys.setprofile(profile)
        try:
            with reactor.signals_wake():
                sys.setprofile(None)
                installed = signal.set_wakeup_fd(-1)
                signal.set_wakeup_fd(installed)
        finally:
            sys.setprofile(None)
    assert installed != wakeup_fd  # the reactor's own was in place
    assert 1 <= seen[0] < 8
    assert signal.set_wakeup_fd(wakeup_fd) == wakeup_fd


class Echo(ours.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


def test_serve_forever_twice_at_once_raises_and_the_first_loop_goes_on() -> None:
    """Before the fix the second call started a stray loop on the same listener,
    and shutdown() stopped only one of the two."""
    with ours.TCPServer(("127.0.0.1", 0), Echo) as server:
        for _ in range(2):  # once the first loop has returned, serving again is fine
            loop = threading.Thread(target=server.serve_forever, daemon=True)
            loop.start()
            with connect(server.server_address) as client:  # the loop runs
                client.sendall(b"one loop\n")
                assert client.makefile("rb").readline() == b"one loop\n"
            with pytest.raises(RuntimeError, match="already being served"):
                server.serve_forever()
            with connect(server.server_address) as client:
                client.sendall(b"still one loop\n")
                assert client.makefile("rb").readline() == b"still one loop\n"
            server.shutdown()
            loop.join(WAIT)
            assert not loop.is_alive()


def race_two_loops() -> list[BaseException]:
    """Start two serve_forever() on one server at once; what the loser raised."""
    server = ours.TCPServer(("127.0.0.1", 0), Echo)
    start = threading.Barrier(2)
    errors: list[BaseException] = []
    refused = threading.Event()

    def run() -> None:
        start.wait(WAIT)
        try:
            server.serve_forever()
        except RuntimeError as exc:
            errors.append(exc)
            refused.set()

    loops = [threading.Thread(target=run, daemon=True) for _ in range(2)]
    for loop in loops:
        loop.start()
    # Shut down only once one has been refused: a shutdown() before both
    # had tried would let the second start a loop of its own, legally.
    assert refused.wait(WAIT), "both loops claimed the server"
    server.shutdown()
    for loop in loops:
        loop.join(WAIT)
        assert not loop.is_alive()
    server.server_close()
    return errors


def test_two_threads_racing_into_serve_forever_leave_one_loop() -> None:
    """The check and the claim are one step: of two loops started together,
    one serves and the other raises, every time."""
    for _ in range(50):
        errors = race_two_loops()
        assert len(errors) == 1, errors
