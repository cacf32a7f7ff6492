"""serve_forever() and shutdown(): at once, remembered, refused from the loop itself.

Issue 2, items 3 and 4.  Timing is never asserted: a loop that waited for
``poll_interval`` (60 s here) would hit the test's timeout and fail.
"""

from __future__ import annotations

import selectors
import socketserver as stdlib
import threading
from typing import Any

import pytest
from stdlib_oracle import IMPLS, describe_exc, stream_exchange
from support import WAIT, Resources, connect, serving

import minisocketserver as ours

# method="thread": a shutdown bug deadlocks, and the default signal method
# would raise into a cleanup (serving()'s shutdown()) that then blocks
# forever; the thread method dumps every stack and ends the run instead.
pytestmark = pytest.mark.timeout(10, method="thread")


class Upper(ours.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read().upper())


class StdlibUpper(stdlib.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read().upper())


class ServiceActionsTCPServer(ours.TCPServer):
    """Overrides service_actions, so its loop waits with poll_interval as timeout."""

    def service_actions(self) -> None:
        pass


LOOP_CLASSES = [
    ours.TCPServer,
    ours.ThreadingTCPServer,
    ours.ForkingTCPServer,
    ServiceActionsTCPServer,
]


@pytest.mark.parametrize("cls", LOOP_CLASSES, ids=lambda c: c.__name__)
def test_shutdown_does_not_wait_for_a_long_poll_interval(
    cls: type[ours.TCPServer], no_leaks: Resources
) -> None:
    with serving(cls(("127.0.0.1", 0), Upper), poll_interval=60) as server:
        # A request served proves the loop is inside its wait when
        # shutdown() comes, not before it.
        assert stream_exchange("tcp", server.server_address, b"x") == b"X"
    # serving() asserted that the loop returned; the 10 s timeout bounds it.


def _shutdown_flag(server: Any) -> bool:
    """The 'shutdown was requested' flag, ours or stdlib's (name-mangled) one."""
    if isinstance(server, ours.BaseServer):
        return bool(server._shutdown_requested)
    return bool(server._BaseServer__shutdown_request)


@pytest.mark.parametrize("impl_name", list(IMPLS))
def test_shutdown_before_serve_forever_is_remembered(
    impl_name: str, no_leaks: Resources
) -> None:
    impl = IMPLS[impl_name]
    accepted = []

    class Server(impl.TCPServer):  # type: ignore[name-defined, misc]
        def get_request(self) -> Any:
            accepted.append(1)
            return super().get_request()

    handler = Upper if impl is ours else StdlibUpper
    with Server(("127.0.0.1", 0), handler) as server, connect(server.server_address):
        # shutdown() blocks until a loop has run and stopped, so it runs on
        # its own thread; join() is the wait while it sets the flag.
        stopper = threading.Thread(target=server.shutdown)
        stopper.start()
        for _ in range(int(WAIT * 1000)):
            if _shutdown_flag(server):
                break
            stopper.join(0.001)
        assert _shutdown_flag(server)
        # A connection is pending, yet the loop returns before its first wait.
        server.serve_forever(poll_interval=60)
        stopper.join(WAIT)
        assert not stopper.is_alive()
        assert accepted == []


def test_shutdown_from_a_sync_handler_raises_into_handle_error(no_leaks: Resources) -> None:
    errors: list[str] = []

    class Server(ours.TCPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            errors.append(describe_exc())

    class Stopper(ours.StreamRequestHandler):
        def handle(self) -> None:
            data = self.rfile.read()
            if data == b"stop":
                self.server.shutdown()
            self.wfile.write(data.upper())

    with serving(Server(("127.0.0.1", 0), Stopper)) as server:
        assert stream_exchange("tcp", server.server_address, b"stop") == b""
        # Not deadlocked, and still serving.
        assert stream_exchange("tcp", server.server_address, b"go") == b"GO"
    assert len(errors) == 1
    assert errors[0].startswith("RuntimeError: ")
    assert "thread running serve_forever()" in errors[0]


def test_shutdown_from_service_actions_raises_out_of_serve_forever(no_leaks: Resources) -> None:
    class Server(ours.TCPServer):
        def service_actions(self) -> None:
            self.shutdown()

    with Server(("127.0.0.1", 0), Upper) as server:
        with pytest.raises(RuntimeError, match="serve_forever"):
            server.serve_forever(poll_interval=0.001)
        # The loop left cleanly: it can serve again, and stop from elsewhere.
        server.service_actions = lambda: None  # type: ignore[method-assign]
        with serving(server):
            assert stream_exchange("tcp", server.server_address, b"a") == b"A"


@pytest.mark.parametrize("impl_name", list(IMPLS))
def test_shutdown_from_a_worker_thread_stops_the_loop(
    impl_name: str, no_leaks: Resources
) -> None:
    """A threading handler is not on the loop's thread: there, shutdown() works."""
    impl = IMPLS[impl_name]

    class Stopper(impl.StreamRequestHandler):  # type: ignore[name-defined, misc]
        def handle(self) -> None:
            self.server.shutdown()
            self.wfile.write(b"stopped")

    with impl.ThreadingTCPServer(("127.0.0.1", 0), Stopper) as server:
        loop = threading.Thread(target=server.serve_forever, args=(0.05,))
        loop.start()
        with connect(server.server_address) as client:
            assert client.recv(100) == b"stopped"
        loop.join(WAIT)
        assert not loop.is_alive()


@pytest.mark.parametrize("cls", LOOP_CLASSES[:3], ids=lambda c: c.__name__)
def test_serve_forever_again_after_shutdown(
    cls: type[ours.TCPServer], no_leaks: Resources
) -> None:
    with cls(("127.0.0.1", 0), Upper) as server:
        for round_ in (b"one", b"two", b"three"):
            loop = threading.Thread(target=server.serve_forever, args=(60,))
            loop.start()
            assert stream_exchange("tcp", server.server_address, round_) == round_.upper()
            server.shutdown()
            loop.join(WAIT)
            assert not loop.is_alive()


def test_context_manager_closes_the_server(no_leaks: Resources) -> None:
    with ours.TCPServer(("127.0.0.1", 0), Upper) as server:
        assert server.fileno() == server.socket.fileno() >= 0
    assert server.socket.fileno() == -1


# -- the idle loop ----------------------------------------------------------


def counting_selector(timeouts: list[float | None]) -> type[selectors.BaseSelector]:
    base: Any = ours.BaseServer.selector_class

    class Counting(base):  # type: ignore[misc]
        def select(self, timeout: float | None = None) -> Any:
            timeouts.append(timeout)
            return super().select(timeout)

    return Counting  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "base", [ours.TCPServer, ours.ThreadingTCPServer], ids=lambda c: c.__name__
)
def test_idle_loop_without_service_actions_waits_without_timeout(
    base: type[ours.TCPServer], no_leaks: Resources
) -> None:
    """Difference from stdlib, which wakes every poll_interval for nothing."""
    timeouts: list[float | None] = []

    class Server(base):  # type: ignore[valid-type, misc]
        selector_class = counting_selector(timeouts)

    with serving(Server(("127.0.0.1", 0), Upper), poll_interval=0.001) as server:
        assert stream_exchange("tcp", server.server_address, b"a") == b"A"
    assert timeouts, "serve_forever() did not use selector_class"
    assert set(timeouts) == {None}


@pytest.mark.parametrize(
    "base", [ours.ForkingTCPServer, ServiceActionsTCPServer], ids=lambda c: c.__name__
)
def test_loop_with_service_actions_calls_it_every_poll_interval(
    base: type[ours.TCPServer], no_leaks: Resources
) -> None:
    timeouts: list[float | None] = []
    called_often = threading.Event()
    calls = []

    class Server(base):  # type: ignore[valid-type, misc]
        selector_class = counting_selector(timeouts)

        def service_actions(self) -> None:
            calls.append(1)
            if len(calls) >= 5:
                called_often.set()
            super().service_actions()

    # No client at all: only the poll_interval timeout can make it iterate.
    with serving(Server(("127.0.0.1", 0), Upper), poll_interval=0.001):
        assert called_often.wait(WAIT)
    assert set(timeouts) == {0.001}
