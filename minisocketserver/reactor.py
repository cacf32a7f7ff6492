"""The loop underneath every server: one selector, one wake-up channel, timers.

Design map, part 1 of 6 (read in this order: reactor, server, sockets, the
concurrency models -- threading_mixin, threadpool_mixin, forking_mixin,
multiplexing_mixin, server_group --, handlers, tracer)::

    Reactor.select(timeout)            one blocking call per loop iteration
      ├─ listening socket readable  -> BaseServer._on_listener_ready   (server.py)
      ├─ a connection readable      -> the multiplexing model's callback
      ├─ a timer due                -> e.g. resume accepting after a back-off
      ├─ call_soon_threadsafe(fn)   -> fn, posted by another thread
      └─ wake-up channel readable   -> drained here; someone called wake()

A :class:`Reactor` knows nothing about servers.  It maps file objects to
callbacks, keeps timers, waits for the first of them to be ready, and hands
back what is ready.  ``BaseServer.serve_forever`` runs one reactor for one
server; a ``ServerGroup`` runs one reactor for many.

Invariants:

1. Every file object registered with the selector has a callback taking the
   ready event mask; the wake-up channel is registered for the reactor's
   whole life and is never handed to a caller.
2. ``wake()`` and ``call_soon_threadsafe()`` may be called from any thread at
   any time, before, during or after ``close()``; they never block on the
   loop and never raise.  Everything else runs on the loop's thread only:
   selectors are not thread-safe.
3. ``select()`` returns the work to run but does not run it, so the caller
   can check its own stop flag between the wait and the dispatch (a
   shutdown that arrived during the wait must not start a new request).
4. ``select()`` never waits past the earliest timer.
5. ``watch()`` never leaves a file object unwatched: an entry left in the
   selector's table by an earlier file object with the same descriptor
   number, closed behind the reactor's back, is replaced, not modified.
6. A cancelled timer holds no callback, and cancelled timers are never most
   of a heap of more than a few dozen: nothing it referenced stays alive.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import heapq
import itertools
import selectors
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Protocol

#: A callback receives the mask of events that are ready
#: (``selectors.EVENT_READ`` and/or ``selectors.EVENT_WRITE``).
Callback = Callable[[int], None]

#: What ``select()`` hands back: a function and the one argument to call it
#: with, ``function(argument)``.  A pair rather than a bound callable, so
#: that no object is allocated per ready descriptor.
Ready = tuple[Callable[[Any], None], Any]


def run_callback(function: Callable[[], None]) -> None:
    """How a timer's or a posted callback is run: ``(run_callback, callback)``."""
    function()

#: The size of select()'s descriptor sets with glibc (and most Unixes): the
#: highest descriptor number it can watch, plus one.  Python does not
#: expose it; CPython's select() checks against the same constant.
FD_SETSIZE = 1024


class FileLike(Protocol):
    """Anything a selector can watch: it has a descriptor."""

    def fileno(self) -> int: ...


class Timer:
    """A callback due at a ``time.monotonic()`` instant; ``cancel()`` it freely."""

    __slots__ = ("_reactor", "callback", "cancelled", "when")

    def __init__(
        self, when: float, callback: Callable[[], None], reactor: Reactor | None = None
    ) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self._reactor = reactor  # told of the cancel, to compact its heap

    def cancel(self) -> None:
        """The callback will not run (cancelling twice, or after it ran, is harmless).

        Called on the loop's thread (or once no loop runs).  The callback is
        dropped at once: a cancelled timer may sit in the heap for a long
        time, and its callback (a handler's bound method) must not keep the
        handler, and its buffers, alive meanwhile.
        """
        if self.cancelled:
            return
        self.cancelled = True
        self.callback = _nothing
        reactor, self._reactor = self._reactor, None
        if reactor is not None:
            reactor._timer_cancelled()


def _nothing() -> None:
    """What a cancelled timer holds instead of its callback."""


class Reactor:
    """A selector plus a self-pipe, so another thread can interrupt the wait.

    Why a wake-up channel: stdlib ``serve_forever`` polls its shutdown flag
    every ``poll_interval`` (0.5 s by default), so ``shutdown()`` waits on
    average a quarter of a second and at worst the whole interval (the full
    run of docs/performance.md, ``python benchmarks/run.py`` at commit
    9761848, measured stdlib's ThreadingTCPServer at p50 149 ms, p99 480 ms
    over 50 trials; python/cpython gh-88932).  Here
    ``shutdown()`` writes one byte to a socketpair the selector is watching,
    and the wait ends at once.

    Resource handling: the reactor owns its selector and the two ends of the
    socketpair and closes them in ``close()``; it never closes the file
    objects callers register.
    """

    def __init__(self, selector_class: type[selectors.BaseSelector]) -> None:
        self._selector = selector_class()
        # select() takes fd_set bitmaps of FD_SETSIZE bits: CPython's
        # select() raises ValueError for a descriptor numbered 1024 or more,
        # on that wait and every later one, which would take down the whole
        # loop.  watch() refuses such a descriptor up front instead.  (poll
        # and epoll have no such limit; Windows' select() counts sockets
        # rather than numbering them, so the check does not apply there.)
        select_based = issubclass(selector_class, selectors.SelectSelector)
        self._fd_limit = FD_SETSIZE if select_based and sys.platform != "win32" else None
        # A socketpair rather than os.pipe(): on Windows select() accepts
        # only sockets, and this keeps one code path everywhere.
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        # wake() and close() race when shutdown() runs while the loop exits:
        # without the lock a late wake() could send on a descriptor number
        # that close() just released and the kernel already gave to a new
        # socket.
        self._wake_lock = threading.Lock()
        self._closed = False
        # Timers sit in a heap ordered by deadline; the counter breaks ties
        # so that heapq never compares two Timer objects.  Cancelled timers
        # stay in the heap until they reach the top (lazy deletion: O(log n)
        # cancel would need an index for no gain at a server's timer counts)
        # or until they are most of it: one long idle timeout at the top
        # would otherwise pin every later cancelled entry behind it (issue
        # 10: 2,000 short connections under one idle client kept their 32 KiB
        # each; ``python -m pytest tests/test_multiplexing_correctness.py -k
        # release_their_buffers``).
        # Loop thread only, like the selector.
        self._timers: list[tuple[float, int, Timer]] = []
        self._cancelled_timers = 0  # entries of _timers that are cancelled
        self._timer_seq = itertools.count()
        # deque.append and popleft are atomic, so other threads post here
        # without taking a lock the loop would contend for.
        self._posted: collections.deque[Callable[[], None]] = collections.deque()
        # The key itself is kept so that select() can recognise the channel
        # by identity, the cheapest test there is, once per ready descriptor.
        self._wake_key = self._selector.register(
            self._wake_reader, selectors.EVENT_READ, self._drain_wakeups
        )

    # -- registration -----------------------------------------------------

    def watch(self, fileobj: FileLike, events: int, callback: Callback) -> None:
        """Call ``callback(mask)`` whenever ``fileobj`` is ready for ``events``.

        Raises ``ValueError`` when the selector cannot watch ``fileobj``
        (see ``check_watchable``); nothing is registered then.
        """
        self.check_watchable(fileobj)
        # Register first: a new file object is the common case (every
        # accepted connection), and a selector reports "not registered" with
        # a KeyError whose message holds the socket's repr(), which costs a
        # getsockname() and a getpeername(): once 9.5% of the multiplexing
        # server's samples under a connection storm (py-spy under ``loadgen -m
        # connrate``, docs/optimisations.md, commit 6a480ab).
        try:
            self._selector.register(fileobj, events, callback)
        except KeyError:  # its descriptor number is in the selector's table
            self._rewatch(fileobj, events, callback)

    def _rewatch(self, fileobj: FileLike, events: int, callback: Callback) -> None:
        """``watch()`` met a descriptor number registered already: modify, or replace.

        Either ``fileobj`` itself is watched (change what for, and the
        callback), or the entry is stale: an earlier file object with that
        number was closed behind the loop's back (a handler closing its own
        socket, a server closed without ``shutdown()``), and the kernel gave
        the number to ``fileobj``.  Modifying that entry would watch
        nothing: epoll dropped the old registration when the descriptor
        closed, so the new socket's client would hang.  Replace it instead.
        """
        key = self._selector.get_key(fileobj)
        if key.fileobj is fileobj:
            try:
                self._selector.modify(fileobj, events, callback)
                return
            except OSError:
                # ENOENT/EBADF: the kernel no longer knows this descriptor
                # (closed and reopened under the same object); the selector
                # has dropped its entry, so registering again is all it takes.
                pass
        else:
            # The stale entry's own unregister tolerates the kernel's ENOENT
            # (selectors' epoll does); anything else means it is gone anyway.
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(key.fileobj)
        self._selector.register(fileobj, events, callback)

    def modify(self, fileobj: FileLike, events: int, callback: Callback) -> None:
        """Change the events (or the callback) of a file object watched already."""
        self._selector.modify(fileobj, events, callback)

    def unwatch(self, fileobj: FileLike) -> None:
        """Stop watching ``fileobj``; a file object not watched is ignored."""
        # KeyError: not registered.  ValueError: its descriptor is already
        # closed (fileno() == -1), so the selector cannot even look it up;
        # there is nothing left to stop watching.
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fileobj)

    def check_watchable(self, fileobj: FileLike) -> None:
        """Raise ``ValueError``, with the way out, if the selector cannot watch ``fileobj``."""
        if self._fd_limit is not None and fileobj.fileno() >= self._fd_limit:
            raise ValueError(
                f"descriptor {fileobj.fileno()} is beyond select()'s limit "
                f"(FD_SETSIZE = {FD_SETSIZE}); set selector_class to "
                "selectors.PollSelector or EpollSelector to serve more connections"
            )

    def is_watching(self, fileobj: FileLike) -> bool:
        """Whether ``fileobj`` is registered with the selector now."""
        try:
            self._selector.get_key(fileobj)
        except (KeyError, ValueError):
            return False
        return True

    # -- timers and posted work -------------------------------------------

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback()`` on the loop's thread ``delay`` seconds from now."""
        timer = Timer(time.monotonic() + delay, callback, self)
        heapq.heappush(self._timers, (timer.when, next(self._timer_seq), timer))
        return timer

    def _timer_cancelled(self) -> None:
        """Called by ``Timer.cancel()``: compact the heap once cancelled entries dominate.

        Rebuilding costs O(n) and happens after at least n/2 cancels since
        the last one: amortised O(1) per cancel, and the heap never holds
        more than twice its live timers (plus a small constant).
        """
        self._cancelled_timers += 1
        if self._cancelled_timers > 64 and 2 * self._cancelled_timers > len(self._timers):
            self._timers = [entry for entry in self._timers if not entry[2].cancelled]
            heapq.heapify(self._timers)
            self._cancelled_timers = 0

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` on the loop's thread at its next iteration (any thread)."""
        self._posted.append(callback)
        self.wake()

    # -- waiting ----------------------------------------------------------

    def select(self, timeout: float | None) -> list[Ready]:
        """Wait up to ``timeout`` seconds (``None``: forever) for readiness.

        Returns the work to run, in this order: descriptor callbacks, due
        timers, posted callbacks.  The wake-up channel is drained here and
        never returned.
        """
        timeout = self._cap_by_next_timer(timeout)
        wake_key = self._wake_key
        ready: list[Ready] = []
        append = ready.append  # this loop runs once per ready descriptor
        for key, mask in self._selector.select(timeout):
            if key is wake_key:
                self._drain_wakeups(mask)
            else:
                append((key.data, mask))
        if self._timers:
            self._collect_due_timers(ready)
        while self._posted:
            append((run_callback, self._posted.popleft()))
        return ready

    def _cap_by_next_timer(self, timeout: float | None) -> float | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
            self._cancelled_timers -= 1
        if not self._timers:
            return timeout
        until_next = max(0.0, self._timers[0][0] - time.monotonic())
        return until_next if timeout is None else min(timeout, until_next)

    def _collect_due_timers(self, ready: list[Ready]) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                self._cancelled_timers -= 1
            else:
                # A timer runs once; out of the heap, it has nothing to report.
                timer.cancelled = True
                timer._reactor = None
                ready.append((run_callback, timer.callback))

    def wake(self) -> None:
        """Make the current or next ``select()`` return at once (any thread)."""
        with self._wake_lock:
            if self._closed:
                return
            # BlockingIOError: the buffer is full of earlier wake-ups the loop
            # has not drained yet, so it is going to wake anyway.
            with contextlib.suppress(BlockingIOError):
                self._wake_writer.send(b"\0")

    @contextlib.contextmanager
    def signals_wake(self) -> Iterator[None]:
        """While in the block, a signal caught by any thread wakes ``select()``.

        Called by ``serve_loop()`` around its loop.  Python runs signal
        handlers on the main thread only, but the kernel may deliver a
        process-directed signal (Ctrl-C's SIGINT) to any thread: a worker
        blocked in ``recv()`` just retries (PEP 475), and a main thread
        asleep in ``select()`` with no timeout would not hear of it until
        its next wake-up, possibly never (stdlib's loop notices within its
        0.5 s ``poll_interval``).  ``signal.set_wakeup_fd`` makes the C-level
        handler write a byte to our wake-up channel, as asyncio does; the
        loop wakes and the handler (``KeyboardInterrupt``) runs at once.
        Only the main thread may set it; elsewhere this does nothing.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        # ``saved`` holds the descriptor Python had before ours.  A signal
        # handler (KeyboardInterrupt) runs as soon as a C call returns, so in
        # ``previous = signal.set_wakeup_fd(...)`` it can strike after the
        # call installed our descriptor and before the result is stored: the
        # previous descriptor would be lost and ours left installed after
        # close(), and once the kernel reuses its number, signal bytes would
        # go into an unrelated file or a client's connection (issue 10).
        # list.extend() over map() stores the result inside one C call
        # that calls set_wakeup_fd (through partial, also C) itself: no
        # Python code runs in between, so no handler can either.
        install = functools.partial(signal.set_wakeup_fd, warn_on_full_buffer=False)
        saved: list[int] = []
        try:
            saved.extend(map(install, (self._wake_writer.fileno(),)))
            yield
        finally:
            if saved:  # empty only if a signal struck before anything changed
                signal.set_wakeup_fd(saved[0])

    def _drain_wakeups(self, mask: int) -> None:
        # Read until EAGAIN so one select() consumes any number of wake()s;
        # a byte left behind would make every later select() return at once.
        try:
            while self._wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass

    # -- lifetime ---------------------------------------------------------

    def close(self) -> None:
        """Release the selector and the wake-up channel (idempotent)."""
        with self._wake_lock:
            if self._closed:
                return
            self._closed = True
            self._selector.close()
            self._wake_reader.close()
            self._wake_writer.close()

    def __enter__(self) -> Reactor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
