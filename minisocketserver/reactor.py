"""The loop underneath every server: one selector, one wake-up channel, callbacks.

Design map, part 1 of 6 (read in this order: reactor, server, sockets,
threading_mixin / forking_mixin, handlers, tracer)::

    Reactor.select(timeout)            one blocking call per loop iteration
      ├─ listening socket readable  -> BaseServer._on_listener_ready   (server.py)
      ├─ a connection readable      -> the multiplexing model's callback
      └─ wake-up channel readable   -> drained here; someone called wake()

A :class:`Reactor` knows nothing about servers.  It maps file objects to
callbacks, waits for any of them to become ready, and hands back what is
ready.  ``BaseServer.serve_forever`` runs one reactor for one server; a
``ServerGroup`` runs one reactor for many.

Invariants:

1. Every file object registered with the selector has a callback taking the
   ready event mask; the wake-up channel is registered for the reactor's
   whole life and is never handed to a caller.
2. ``wake()`` may be called from any thread at any time, before, during or
   after ``close()``; it never blocks and never raises.
3. ``select()`` returns the callbacks to run but does not run them, so the
   caller can check its own stop flag between the wait and the dispatch (a
   shutdown that arrived during the wait must not start a new request).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

#: A callback receives the mask of events that are ready
#: (``selectors.EVENT_READ`` and/or ``selectors.EVENT_WRITE``).
Callback = Callable[[int], None]


class FileLike(Protocol):
    """Anything a selector can watch: it has a descriptor."""

    def fileno(self) -> int: ...


class Reactor:
    """A selector plus a self-pipe, so another thread can interrupt the wait.

    Why a wake-up channel: stdlib ``serve_forever`` polls its shutdown flag
    every ``poll_interval`` (0.5 s by default), so ``shutdown()`` waits on
    average a quarter of a second and at worst the whole interval (we
    measured p50 300 ms, p99 492 ms; python/cpython gh-88932).  Here
    ``shutdown()`` writes one byte to a socketpair the selector is watching,
    and the wait ends at once.

    Resource handling: the reactor owns its selector and the two ends of the
    socketpair and closes them in ``close()``; it never closes the file
    objects callers register.
    """

    def __init__(self, selector_class: type[selectors.BaseSelector]) -> None:
        self._selector = selector_class()
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
        self._selector.register(self._wake_reader, selectors.EVENT_READ, self._drain_wakeups)

    # -- registration -----------------------------------------------------

    def watch(self, fileobj: FileLike, events: int, callback: Callback) -> None:
        """Call ``callback(mask)`` whenever ``fileobj`` is ready for ``events``."""
        try:
            self._selector.modify(fileobj, events, callback)
        except KeyError:
            self._selector.register(fileobj, events, callback)

    def unwatch(self, fileobj: FileLike) -> None:
        """Stop watching ``fileobj``; a file object not watched is ignored."""
        # KeyError: not registered.  ValueError: its descriptor is already
        # closed (fileno() == -1), so the selector cannot even look it up;
        # there is nothing left to stop watching.
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(fileobj)

    def is_watching(self, fileobj: FileLike) -> bool:
        """Whether ``fileobj`` is registered with the selector now."""
        try:
            self._selector.get_key(fileobj)
        except (KeyError, ValueError):
            return False
        return True

    # -- waiting ----------------------------------------------------------

    def select(self, timeout: float | None) -> list[tuple[Callback, int]]:
        """Wait up to ``timeout`` seconds (``None``: forever) for readiness.

        Returns ``(callback, mask)`` pairs for the caller to run.  The
        wake-up channel is drained here and never returned.
        """
        ready = []
        for key, mask in self._selector.select(timeout):
            callback: Callback = key.data
            if callback == self._drain_wakeups:
                self._drain_wakeups(mask)
            else:
                ready.append((callback, mask))
        return ready

    def wake(self) -> None:
        """Make the current or next ``select()`` return at once (any thread)."""
        with self._wake_lock:
            if self._closed:
                return
            # BlockingIOError: the buffer is full of earlier wake-ups the loop
            # has not drained yet, so it is going to wake anyway.
            with contextlib.suppress(BlockingIOError):
                self._wake_writer.send(b"\0")

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
