"""Hostile review of the issue 10 fixes: each test here FAILS on main (799d796).

Every test names its bug in its docstring.  Servers listen on 127.0.0.1
only; every wait is bounded (support.WAIT); where a test must show that
something does NOT happen (a loop spinning, a client never served) it
watches for a short, stated interval.

fix10 added the tests marked "fix10" (each fails before its fix, or shows
the way out the fix points to), changed the expectation of
test_our_mixin_on_stdlibs_http_server (a clear refusal, see there) and
adjusted two tests whose set-up the fixes made wrong (see their docstrings
and comments: test_shutdown_waits_for_a_loop_started_while_the_previous_one_was_ending,
test_group_member_closed_at_its_thread_limit_does_not_kill_the_group).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import WAIT, connect, loop_has_turned, recv_exactly

import minisocketserver as socketserver
from minisocketserver import forking_mixin
from minisocketserver import server as server_module

HOST = "127.0.0.1"


@pytest.fixture
def thread_errors() -> Iterator[list[BaseException | None]]:
    """Exceptions that ended a thread during the test (threading.excepthook)."""
    errors: list[BaseException | None] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)
    try:
        yield errors
    finally:
        threading.excepthook = previous


class Hello(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(b"hi\n")


class StdlibStyleReaper(socketserver.ForkingTCPServer):
    """A ForkingTCPServer subclass written for stdlib: its own reaper, no super()."""

    max_children = 2

    def collect_children(self, *, blocking: bool = False) -> None:
        for pid in list(self.active_children or ()):
            try:
                done, _ = os.waitpid(pid, 0 if blocking else os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.active_children.discard(pid)  # type: ignore[union-attr]


def _served(address: Any, patience: float) -> bool:
    """Whether a client connecting now gets the greeting within ``patience`` s."""
    with connect(address) as client:
        client.settimeout(patience)
        try:
            return client.recv(3) == b"hi\n"
        except TimeoutError:
            return False


@contextlib.contextmanager
def _paused_member_beside_another() -> Iterator[
    tuple[Any, Any, threading.Event, threading.Thread, list[BaseException]]
]:
    """A ServerGroup of two threading servers, served on a thread: ``limited``
    (max_threads = 1) paused with its one worker held until ``release``, and
    ``other`` answering; yields (limited, other, release, loop, died), where
    ``died`` collects what escaped the group's loop.  Everything is stopped
    and closed on the way out."""
    release = threading.Event()

    class Held(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(b"hi\n")
            release.wait(WAIT)

    class Limited(socketserver.ThreadingTCPServer):
        max_threads = 1
        # server_close() must return while the worker is still held (the
        # tests release it after the close), also on the loop's own thread.
        block_on_close = False

    limited = Limited((HOST, 0), Held)
    other = socketserver.ThreadingTCPServer((HOST, 0), Hello)
    group = socketserver.ServerGroup([limited, other])
    died: list[BaseException] = []

    def serve() -> None:
        try:
            group.serve_forever()
        except BaseException as exc:
            died.append(exc)

    loop = threading.Thread(target=serve, daemon=True)
    loop.start()
    try:
        with connect(limited.server_address) as holder:
            assert recv_exactly(holder, 3) == b"hi\n"  # its one worker is busy
            loop_has_turned(other)
            yield limited, other, release, loop, died
    finally:
        release.set()
        if loop.is_alive():
            group.shutdown()
            loop.join(WAIT)
        group.server_close()


@pytest.mark.timeout(30)
def test_forking_collect_children_overridden_without_super_keeps_accepting() -> None:
    """BUG: ForkingMixIn pauses accepting at max_children and only its OWN
    collect_children() resumes it.  A stdlib-style subclass that overrides
    collect_children() (reaping itself, not calling super) makes the server
    stop accepting for good after max_children connections, although every
    child was reaped.  Stdlib serves every client with the same subclass."""
    server = StdlibStyleReaper((HOST, 0), Hello)
    loop = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    loop.start()
    try:
        results = [_served(server.server_address, patience=3.0) for _ in range(4)]
        assert results == [True] * 4, (results, server.active_children)
    finally:
        server.shutdown()
        loop.join(WAIT)
        server.server_close()


@pytest.mark.timeout(30)
def test_forking_without_pidfd_service_actions_overridden_keeps_accepting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BUG (the macOS/BSD path, or pidfd_open failing with EMFILE): with no
    pidfd the only reaper is service_actions(); a stdlib-style subclass that
    overrides service_actions() without super() (stdlib then merely leaves
    zombies and keeps serving) makes our server stop accepting for good at
    max_children."""
    monkeypatch.setattr(forking_mixin, "_HAVE_PIDFD", False)

    class Periodic(socketserver.ForkingTCPServer):
        max_children = 2
        ticks = 0

        def service_actions(self) -> None:  # its own periodic work, no super()
            self.ticks += 1

    server = Periodic((HOST, 0), Hello)
    loop = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    loop.start()
    try:
        results = [_served(server.server_address, patience=2.0) for _ in range(3)]
        assert results == [True] * 3, results
    finally:
        server.shutdown()
        loop.join(WAIT)
        server.server_close()
        server.collect_children(blocking=True)
        for pid in list(server.active_children or ()):
            os.waitpid(pid, 0)  # reap the zombies the override left


@pytest.mark.timeout(30)

@contextlib.contextmanager
def group_counting_accepts(
    plain: Any,
) -> Iterator[tuple[Any, list[int], threading.Thread]]:
    """``plain`` and a threading server in one ServerGroup, served on a thread.

    Yields the other member, a one-item list counting the loop's accept
    attempts on ``plain``, and the loop's thread; shuts the group down and
    closes it on the way out.
    """
    other = socketserver.ThreadingTCPServer((HOST, 0), Hello)
    group = socketserver.ServerGroup([plain, other])
    attempts = [0]
    original = plain._handle_request_noblock

    def counting() -> bool:
        attempts[0] += 1
        return bool(original())

    plain._handle_request_noblock = counting
    loop = threading.Thread(target=group.serve_forever, daemon=True)
    loop.start()
    try:
        yield other, attempts, loop
    finally:
        group.shutdown()
        loop.join(WAIT)
        group.server_close()

def test_group_member_closed_without_shutdown_does_not_spin_the_loop() -> None:
    """BUG: a ServerGroup member closed with server_close() and no shutdown()
    stays registered; poll() reports its closed descriptor (POLLNVAL) at
    once on every wait, accept() fails with EBADF, and the group's loop
    spins at 100% CPU for as long as the other members are served (measured:
    0.99 s of CPU per 1 s of wall time, idle).  Expected: the loop stops
    watching a closed listener (or server_close() takes the member out of the
    loop, as MultiplexingMixIn.server_close() does)."""
    plain = socketserver.ThreadingTCPServer((HOST, 0), Hello)
    with group_counting_accepts(plain) as (other, attempts, _):
        assert _served(other.server_address, patience=WAIT)
        plain.server_close()  # no shutdown(): the loop still watches it
        assert _served(other.server_address, patience=WAIT)  # wakes the loop once
        time.sleep(0.3)  # measuring an absence: how often the loop turns idle
        assert attempts[0] < 10, f"{attempts[0]} accept() attempts on a closed listener in 0.3 s"


@pytest.mark.timeout(30)
def test_group_member_closed_at_its_thread_limit_does_not_kill_the_group(
    thread_errors: list[BaseException | None],
) -> None:
    """BUG: a member paused at max_threads (or queue full, max_children, an
    EMFILE back-off) and then closed without shutdown(): when its worker
    finishes, _resume_accepting() re-watches the closed listener and
    selector.register() raises ValueError('Invalid file descriptor: -1')
    OUT OF serve_forever(): the whole ServerGroup stops serving every other
    member.  (Seen unprovoked for ForkingTCPServer in a stress run of
    server_close()/shutdown()/drain() from several threads.)"""
    with _paused_member_beside_another() as (limited, other, release, loop, died):
        limited.server_close()  # no shutdown()
        release.set()
        for thread in list(limited._threads):
            thread.join(WAIT)
        loop.join(0.5)  # the loop must NOT end
        assert not died, f"the group's loop died: {died!r}"
        assert _served(other.server_address, patience=WAIT)


@pytest.mark.timeout(30)
def test_threading_server_close_while_a_worker_is_starting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BUG (issue 10 item 2 promised this error gone): ThreadingMixIn registers a
    worker before Thread.start(); server_close() from another thread while
    the loop is inside start() calls join() on it and raises
    RuntimeError('cannot join thread before it is started').  The pool waits
    for such a start (_Pool._starting); the per-thread model does not.  A
    stress of server_close()/shutdown()/drain() from several threads hit it
    unprovoked (1 in 40 runs); here start() is held open to make it certain."""
    in_start = threading.Event()
    go = threading.Event()
    original_start = threading.Thread.start

    def held_start(self: threading.Thread) -> None:
        if threading.current_thread().name == "review-loop":
            in_start.set()
            go.wait(WAIT)
        original_start(self)

    monkeypatch.setattr(threading.Thread, "start", held_start)
    server = socketserver.ThreadingTCPServer((HOST, 0), Hello)
    loop = threading.Thread(target=server.serve_forever, name="review-loop", daemon=True)
    original_start(loop)
    closer_error: list[BaseException] = []

    def close() -> None:
        try:
            server.server_close()
        except BaseException as exc:
            closer_error.append(exc)

    closer = threading.Thread(target=close, daemon=True)
    try:
        with connect(server.server_address) as client:
            assert in_start.wait(WAIT)
            original_start(closer)
            closer.join(0.2)  # it must wait for the start, not fail
            go.set()
            closer.join(WAIT)
            assert client.recv(3) == b"hi\n"
        assert not closer_error, closer_error
    finally:
        go.set()
        server.shutdown()
        loop.join(WAIT)


def _pidfds() -> set[int]:
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[pidfd]":
                found.add(int(name))
        except OSError:
            pass
    return found


@pytest.mark.timeout(30)
@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfds are Linux-only")
def test_an_interrupt_right_after_pidfd_open_leaks_no_descriptor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BUG (new with the pidfd reaping of item 3): ForkingMixIn._watch_exit()
    holds the raw number from os.pidfd_open() in a local until it is stored
    in _exit_watches; a KeyboardInterrupt landing in between (any bytecode
    of the loop's thread, e.g. Ctrl-C) leaks the descriptor for the life of
    the process: no object owns it, so nothing ever closes it.  Seen
    unprovoked in a SIGINT storm against serve_forever() on the main thread
    ('anon_inode:[pidfd]' left open after server_close()); here the
    interrupt is injected at the first bytecode after pidfd_open returns."""

    class Interrupted:
        def __init__(self, fd: int) -> None:
            raise KeyboardInterrupt  # as a signal handler would, right here

    monkeypatch.setattr(forking_mixin, "_ChildExit", Interrupted)
    before = _pidfds()
    server = socketserver.ForkingTCPServer((HOST, 0), Hello)
    interrupted: list[BaseException] = []

    def serve() -> None:
        try:
            server.serve_forever()
        except KeyboardInterrupt as exc:
            interrupted.append(exc)

    loop = threading.Thread(target=serve, daemon=True)
    loop.start()
    try:
        with connect(server.server_address) as client:
            assert client.recv(3) == b"hi\n"
        loop.join(WAIT)
        assert interrupted, "the injected interrupt did not leave serve_forever()"
    finally:
        if loop.is_alive():
            server.shutdown()
            loop.join(WAIT)
        server.server_close()
    leaked = _pidfds() - before
    assert not leaked, f"pidfds left open after server_close(): {sorted(leaked)}"


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "mixin", ["ThreadingMixIn", "ForkingMixIn", "ThreadPoolMixIn", "MultiplexingMixIn"]
)
def test_our_mixin_on_stdlibs_http_server(mixin: str) -> None:
    """BUG (ForkingMixIn: a regression from the issue 10 fixes): with the
    README's drop-in alias ``import minisocketserver as socketserver``, the
    canonical ``class ThreadedHTTPServer(socketserver.ThreadingMixIn,
    HTTPServer)`` puts OUR mixin on stdlib's TCPServer (http.server imports
    the real socketserver).  At 9761848 (before issue 10) ForkingMixIn served
    it; now its collect_children() reads self._reactor (item 3), so stdlib's
    loop dies with AttributeError in its first service_actions() and the
    second request is never answered.  ThreadingMixIn now fails EVERY
    request (process_request calls self._handoff_for(), item 10; at 9761848
    it answered, then its worker raised on self._reactor).  The pool never
    worked there.

    Expectation changed by fix10, deliberately: a clear refusal instead of a
    half-working mix.  The reviewer asked for serving (a stdlib-behaviour
    fallback in every mixin) or a README note; the lead chose to refuse the
    class statement with a TypeError that names the cause (http.server
    imported stdlib's socketserver before the alias) and the way out
    (install() first, or ``python -m minisocketserver run``).  The next test
    shows the same class statement serving once install() came first."""
    import http.server

    with pytest.raises(TypeError) as refused:

        class Server(getattr(socketserver, mixin), http.server.HTTPServer):  # type: ignore[misc]
            pass

    message = str(refused.value)
    assert f"minisocketserver's {mixin}" in message
    assert "socketserver.TCPServer (through http.server.HTTPServer)" in message
    assert "http.server imported stdlib's socketserver before the alias" in message
    assert "minisocketserver.install() before importing http.server" in message
    assert "python -m minisocketserver run" in message
    assert "docs/running-stdlib-servers.md" in message


_INSTALLED_FIRST = """
import sys, threading, urllib.request
import minisocketserver
minisocketserver.install()
import http.server
import minisocketserver as socketserver

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

class Server(getattr(socketserver, sys.argv[1]), http.server.HTTPServer):
    pass

server = Server(("127.0.0.1", 0), Handler)
loop = threading.Thread(target=server.serve_forever, args=(0.01,))
loop.start()
url = f"http://127.0.0.1:{server.server_address[1]}/"
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    for _ in range(2):
        with opener.open(url, timeout=5) as reply:
            sys.stdout.write(reply.read().decode() + "\\n")
finally:
    server.shutdown()
    loop.join()
    server.server_close()
"""


@pytest.mark.timeout(30)
@pytest.mark.parametrize("mixin", ["ThreadingMixIn", "ForkingMixIn", "ThreadPoolMixIn"])
def test_our_mixin_on_http_server_after_install_serves(mixin: str) -> None:
    """fix10: with install() first (in a child interpreter: install() alters
    sys.modules), http.server's HTTPServer is built on our TCPServer, and
    the same class statement that is refused above serves every request."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _INSTALLED_FIRST, mixin],
        capture_output=True, text=True, timeout=2 * WAIT, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "ok"], (done.stdout, done.stderr)


@pytest.mark.timeout(30)
def test_shutdown_waits_for_a_loop_started_while_the_previous_one_was_ending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """BUG (serve_forever restarted after shutdown): _serving_ended() sets
    _serving_thread = None BEFORE _serving_done.set().  A serve_forever()
    on another thread that claims the server in between (allowed: the
    thread is None) clears the event, and then the ending loop sets it:
    the new loop runs with _serving_done already set, so the next
    shutdown() returns at once while the loop is still running a request
    (a server_close() that follows closes under it; for the multiplexing
    model that breaks its 'the loop owns the connections' rule).  Here the
    gap between the two statements is widened by an Event whose set()
    waits; expected: shutdown() waits for the new loop.  Fix: set the
    event under _claim_lock together with clearing _serving_thread (or
    clear _serving_thread last, after set()).

    Changed by the fix (fix10): with the fix the second loop cannot claim
    the server while the first one's end is under way (that is the fix), so
    the test no longer waits for it to serve before letting the end finish;
    it waits until the second loop has claimed the server OR is blocked on
    the claim lock held by the ending loop, then lets the end finish."""
    in_set = threading.Event()
    go = threading.Event()
    release = threading.Event()
    handling = threading.Event()

    class SlowSet(threading.Event):
        armed = True

        def set(self) -> None:
            if self.armed:
                self.armed = False
                in_set.set()
                go.wait(WAIT)
            super().set()

    class Blocking(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            handling.set()
            release.wait(WAIT)

    class WatchedLock:
        """server._claim_lock, telling which threads found it held by another."""

        def __init__(self) -> None:
            self._lock = threading.Lock()
            self.waiting: set[int | None] = set()

        def __enter__(self) -> None:
            if not self._lock.acquire(blocking=False):
                self.waiting.add(threading.get_ident())
                self._lock.acquire()

        def __exit__(self, *exc: object) -> None:
            self._lock.release()

    claim_lock = WatchedLock()
    monkeypatch.setattr(server_module, "_claim_lock", claim_lock)
    server = socketserver.TCPServer((HOST, 0), Blocking)
    first = threading.Thread(target=server.serve_forever, daemon=True)
    second = threading.Thread(target=server.serve_forever, daemon=True)
    first.start()
    try:
        loop_has_turned_soon(server)
        server._serving_done = SlowSet()
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        assert in_set.wait(WAIT)  # the first loop is between the two statements
        second.start()
        # The second loop either claimed the server (the bug's window is
        # open) or waits for the claim until the first loop's end is done.
        deadline = time.monotonic() + WAIT
        while server._serving_thread != second.ident and second.ident not in claim_lock.waiting:
            assert time.monotonic() < deadline, "the second loop never tried to claim"
            time.sleep(0.001)
        go.set()
        loop_has_turned_soon(server)  # the second loop serves now
        stopper.join(WAIT)
        first.join(WAIT)
        with connect(server.server_address):
            assert handling.wait(WAIT)  # the second loop runs a request
            late = threading.Thread(target=server.shutdown, daemon=True)
            late.start()
            late.join(0.5)
            returned_early = not late.is_alive()
            release.set()
            late.join(WAIT)
        assert not returned_early, "shutdown() returned while serve_forever() was still running"
    finally:
        go.set()
        release.set()
        if second.is_alive():
            server.shutdown()
        second.join(WAIT)
        server.server_close()


def loop_has_turned_soon(server: Any) -> None:
    """loop_has_turned(), once the loop has set its reactor (bounded)."""
    deadline = time.monotonic() + WAIT
    while server._reactor is None:
        assert time.monotonic() < deadline, "the loop never started"
        time.sleep(0.001)
    loop_has_turned(server)


@pytest.mark.timeout(30)
def test_an_interrupt_while_the_group_loop_ends_leaves_no_member_marked_served() -> None:
    """BUG (low): serve_loop()'s finally calls each member's _serving_ended()
    in turn with no protection; a second KeyboardInterrupt (Ctrl-C pressed
    twice) landing while member 1 is being let go skips every later member:
    it stays marked as served by a loop that is gone (_serving_thread set,
    _serving_done never set), so its shutdown() from another thread hangs
    forever and serve_forever() on it raises 'already being served' for the
    rest of the process.  ServerGroup.server_close() already uses the
    'close every one, then re-raise' pattern; this loop needs it too.  The
    interrupt is injected right after member 1's _serving_ended() returns."""
    first = socketserver.ThreadingTCPServer((HOST, 0), Hello)
    second = socketserver.ThreadingTCPServer((HOST, 0), Hello)
    group = socketserver.ServerGroup([first, second])
    original = first._serving_ended

    def interrupted() -> None:
        original()
        raise KeyboardInterrupt  # the second Ctrl-C, as a signal handler raises it

    first._serving_ended = interrupted  # type: ignore[method-assign]
    ended: list[BaseException] = []

    def serve() -> None:
        try:
            group.serve_forever()
        except BaseException as exc:
            ended.append(exc)

    loop = threading.Thread(target=serve, daemon=True)
    loop.start()
    try:
        loop_has_turned_soon(first)

        def first_ctrl_c() -> None:
            raise KeyboardInterrupt  # the first Ctrl-C ends the loop with both members in it

        reactor = first._reactor
        assert reactor is not None
        reactor.call_soon_threadsafe(first_ctrl_c)
        loop.join(WAIT)
        assert not loop.is_alive()
        assert ended and isinstance(ended[0], KeyboardInterrupt), ended
        # What shutdown() waits on, and what serve_forever() checks:
        assert second._serving_done.is_set(), "second.shutdown() would wait forever"
        assert second._serving_thread is None, "the second member is still marked as served"
    finally:
        group.server_close()


# -- fix10: a listener closed on the loop's own thread (no shutdown() is possible there)


@pytest.mark.timeout(30)
def test_a_listener_closed_on_the_loops_thread_is_unwatched() -> None:
    """fix10, item 3(b): server_close() on the loop's own thread (here a
    posted callback; a synchronous handler or a timer does the same) cannot
    take the member out of the loop, so the loop must stop watching the
    closed listener itself instead of spinning on its POLLNVAL."""
    plain = socketserver.TCPServer((HOST, 0), Hello)
    with group_counting_accepts(plain) as (other, attempts, loop):
        loop_has_turned_soon(other)
        reactor = other._reactor
        assert reactor is not None
        reactor.call_soon_threadsafe(plain.server_close)
        assert _served(other.server_address, patience=WAIT)  # after the close
        time.sleep(0.3)  # measuring an absence: how often the loop turns idle
        assert attempts[0] < 10, f"{attempts[0]} accept() attempts on a closed listener in 0.3 s"
        assert loop.is_alive()


@pytest.mark.timeout(30)
def test_a_listener_closed_on_the_loops_thread_while_paused_is_not_watched_again(
    thread_errors: list[BaseException | None],
) -> None:
    """fix10, item 4(b): a member paused at max_threads and closed on the
    loop's own thread: when its worker finishes, _resume_accepting() must
    not re-register the closed listener (ValueError('Invalid file
    descriptor: -1') out of serve_forever() would end the whole group)."""
    with _paused_member_beside_another() as (limited, other, release, loop, died):
        reactor = other._reactor
        assert reactor is not None
        reactor.call_soon_threadsafe(limited.server_close)
        loop_has_turned(other)  # the close has run
        assert limited.fileno() == -1
        release.set()
        for thread in list(limited._threads):
            thread.join(WAIT)
        loop_has_turned(other)  # the finished worker's posted resume has run
        assert _served(other.server_address, patience=WAIT)
        assert not died, f"the group's loop died: {died!r}"
        assert loop.is_alive()
    assert not thread_errors, thread_errors


@pytest.mark.timeout(30)
def test_threading_server_close_while_handle_request_starts_a_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """fix10, item 6: the same race without serve_forever(): no loop is
    there for server_close() to stop first, so it meets the worker inside
    start() and must wait for the start to return before joining (it
    raised RuntimeError('cannot join thread before it is started'))."""
    in_start = threading.Event()
    go = threading.Event()
    original_start = threading.Thread.start

    def held_start(self: threading.Thread) -> None:
        if threading.current_thread().name == "review-handle-request":
            in_start.set()
            go.wait(WAIT)
        original_start(self)

    monkeypatch.setattr(threading.Thread, "start", held_start)
    server = socketserver.ThreadingTCPServer((HOST, 0), Hello)
    driver = threading.Thread(target=server.handle_request, name="review-handle-request")
    closer_error: list[BaseException] = []

    def close() -> None:
        try:
            server.server_close()
        except BaseException as exc:
            closer_error.append(exc)

    closer = threading.Thread(target=close, daemon=True)
    try:
        with connect(server.server_address) as client:
            original_start(driver)
            assert in_start.wait(WAIT)
            original_start(closer)
            closer.join(0.2)  # it must wait for the start, not fail
            assert not closer_error, closer_error
            go.set()
            closer.join(WAIT)
            assert client.recv(3) == b"hi\n"
        assert not closer.is_alive()
        assert not closer_error, closer_error
    finally:
        go.set()
        driver.join(WAIT)
        server.server_close()
