"""ThreadingMixIn: one new thread per request.

Design map, part 4 of 6.  The mixin overrides one hook, ``process_request``:
instead of running the handler on the loop's thread it starts a thread that
does ``finish_request`` then ``shutdown_request``, and returns to the loop at
once.  Put it first in the bases so its ``process_request`` wins the MRO::

    class ThreadingTCPServer(ThreadingMixIn, TCPServer): ...

    loop thread:    select -> accept -> verify -> process_request -> select ...
                                                      | Thread.start()
    worker thread:                  process_request_thread -> finish_request
                                        -> handler -> shutdown_request -> (thread ends)

Resource handling: the worker owns the request from ``start()`` on and shuts
it down whatever the handler does.  The server remembers the workers it has
started until each one finishes, and ``server_close()`` waits for the rest
when ``block_on_close`` is true.

Where we differ from stdlib: a worker forgets itself the moment it
finishes.  Stdlib drops finished threads only when the next request
arrives, so after a burst an idle server holds every finished ``Thread``
object until traffic resumes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

from .server import MixInBase
from .sockets import TCPServer, UDPServer


class _ThreadRegistry:
    """The worker threads a server started and has not yet seen finish.

    Code written for stdlib reads ``len(server._threads)`` to count live
    workers, so this keeps the name ``_threads`` on the server and supports
    ``len()`` and iteration.  A lock guards the set: workers remove
    themselves from their own threads while the loop adds new ones.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: dict[threading.Thread, None] = {}  # insertion-ordered set

    def append(self, thread: threading.Thread) -> None:
        """Remember a worker (called before it starts, so it cannot be missed)."""
        with self._lock:
            self._live[thread] = None

    def forget(self, thread: threading.Thread) -> None:
        """Called by a worker as its last act."""
        with self._lock:
            self._live.pop(thread, None)

    def join(self) -> None:
        """Wait for every remembered worker to finish."""
        while True:
            with self._lock:
                if not self._live:
                    return
                thread = next(iter(self._live))
            # Join outside the lock: the worker needs it to forget itself.
            thread.join()
            self.forget(thread)

    def __len__(self) -> int:
        with self._lock:
            return len(self._live)

    def __iter__(self) -> Iterator[threading.Thread]:
        with self._lock:
            return iter(list(self._live))


class _Untracked(_ThreadRegistry):
    """Stands in for the registry while workers are not tracked.

    It is the class-level default of ``_threads``, so ``len(server._threads)``
    is 0 before the first request, and it stays in place when
    ``block_on_close`` is false because nobody will ever join the workers.
    """

    def append(self, thread: threading.Thread) -> None:
        pass


class ThreadingMixIn(MixInBase):
    """Handle each request in a new thread.

    Class variables:
        daemon_threads   workers are daemon threads: the interpreter may
                         exit while they still run (default False).
        block_on_close   ``server_close()`` waits for running workers
                         (default True).

    Methods to override:
        process_request_thread(request, client_address): the body of a
        worker thread.
    """

    #: Start workers as daemon threads, so they do not keep the interpreter
    #: alive at exit.
    daemon_threads: bool = False
    #: Make ``server_close()`` wait until every running worker has finished.
    block_on_close: bool = True
    # Per-instance registry, created on first use; the shared class default
    # tracks nothing (see _Untracked).
    _threads: _ThreadRegistry = _Untracked()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """The worker thread's body: run the handler, then end the request.

        Called on the new thread.  Error handling: an ``Exception`` goes to
        ``handle_error()``; the request is shut down on every path.
        """
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Called by the loop for each verified request: start a worker."""
        if self.block_on_close and isinstance(self._threads, _Untracked):
            self._threads = _ThreadRegistry()
        worker = threading.Thread(
            target=self._run_worker, args=(request, client_address), daemon=self.daemon_threads
        )
        # Registered before start(): a worker that finished at once would
        # otherwise forget itself before it was remembered, and stay forever.
        self._threads.append(worker)
        worker.start()

    def _run_worker(self, request: Any, client_address: Any) -> None:
        # Kept apart from process_request_thread so that a subclass which
        # overrides that hook (without calling super) still cannot make the
        # registry grow.
        try:
            self.process_request_thread(request, client_address)
        finally:
            self._threads.forget(threading.current_thread())

    def server_close(self) -> None:
        """Close the listening socket, then wait for the workers (``block_on_close``)."""
        super().server_close()
        self._threads.join()


class ThreadingUDPServer(ThreadingMixIn, UDPServer):
    """A datagram server that handles each datagram in a new thread."""


class ThreadingTCPServer(ThreadingMixIn, TCPServer):
    """A stream server that handles each connection in a new thread."""


if hasattr(socket, "AF_UNIX"):
    from .sockets import UnixDatagramServer, UnixStreamServer

    class ThreadingUnixStreamServer(ThreadingMixIn, UnixStreamServer):
        """A Unix-domain stream server with a thread per connection."""

    class ThreadingUnixDatagramServer(ThreadingMixIn, UnixDatagramServer):
        """A Unix-domain datagram server with a thread per datagram."""
