"""ThreadingMixIn: one new thread per request.

Design map, part 4 of 6 (the concurrency models: this one first).  The
mixin overrides one hook, ``process_request``: instead of running the
handler on the loop's thread it starts a thread that does ``finish_request``
then ``shutdown_request``, and returns to the loop at once.  Put it first
in the bases so its ``process_request`` wins the MRO::

    class ThreadingTCPServer(ThreadingMixIn, TCPServer): ...

    loop thread:    select -> accept -> verify -> process_request -> select ...
                                                      | Thread.start()
    worker thread:                  process_request_thread -> finish_request
                                        -> handler -> shutdown_request -> (thread ends)

Resource handling: the worker owns the request from ``start()`` on and shuts
it down whatever the handler does; the hand-off is one step a
``KeyboardInterrupt`` on the loop's thread cannot split (see
``server.HandOff``).  The server remembers the workers it has started until
each one finishes, and ``server_close()`` waits for the non-daemon ones when
``block_on_close`` is true (daemon workers are not waited for, as in stdlib).
A thread that fails to start leaves no trace, and the loop shuts its request
down; ``server_close()`` from another thread waits for a ``start()`` under
way before it joins.

Where we differ from stdlib: a worker forgets itself the moment it
finishes.  Stdlib drops finished threads only when the next request
arrives, so after a burst an idle server holds every finished ``Thread``
object until traffic resumes.  And ``max_threads`` (off by default) bounds
the workers: stdlib starts a thread for every connection it is offered.
Stdlib keeps a thread that failed to start in its list, so its
``server_close()`` then raises ``RuntimeError('cannot join thread before it
is started')``; and a ``KeyboardInterrupt`` just after the hand-off makes
it shut the request down under the worker.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from .reactor import Reactor
from .server import BaseServer, HandOff, MixInBase, refuse_stdlib_base
from .sockets import TCPServer, UDPServer

#: Seconds ``drain()`` waits for workers to end once their connections are
#: cut; a handler that ignores its socket (a CPU loop, a sleep) is left
#: running after that rather than hanging the caller.
DRAIN_GRACE = 1.0


def run_to_completion(server: BaseServer, request: Any, client_address: Any) -> None:
    """A request's life on a worker thread: handler, errors, then shutdown.

    Error handling: an ``Exception`` goes to ``handle_error()``; anything
    else (``SystemExit``) ends the thread, as in stdlib.  Resource handling:
    the request is shut down on every path.
    """
    try:
        server.finish_request(request, client_address)
    except Exception:
        server.handle_error(request, client_address)
    finally:
        server.shutdown_request(request)


def cut_connections(requests: list[Any]) -> None:
    """Shut down, under their handlers, the connections among ``requests``.

    ``SHUT_RDWR`` makes a blocked ``recv()`` return EOF and a ``send()`` fail
    with EPIPE, so a handler waiting on its client ends; closing the socket
    from here instead would race with the handler still using it.
    Datagram requests have no connection to cut and are left alone.
    """
    for request in requests:
        if isinstance(request, socket.socket):
            with contextlib.suppress(OSError):  # already closed by its handler
                request.shutdown(socket.SHUT_RDWR)


class _ThreadRegistry:
    """The worker threads a server started and has not yet seen finish.

    Code written for stdlib reads ``len(server._threads)`` to count live
    workers, so this keeps the name ``_threads`` on the server and supports
    ``len()`` and iteration.  A lock guards the set: workers remove
    themselves from their own threads while the loop adds new ones.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Worker -> the request it serves (so drain() can cut it).
        self._live: dict[threading.Thread, Any] = {}
        # join() waits here while a worker is between append() and the
        # return of its start(): Thread.join() raises RuntimeError on a
        # thread whose start() has not yet got going, and server_close() on
        # another thread (with handle_request() on this one, or as a loop
        # stops) can come right then.  As the pool's _Pool._starting.
        self._start_returned = threading.Condition(self._lock)
        self._starting: set[threading.Thread] = set()

    def append(self, thread: threading.Thread, request: Any = None) -> None:
        """Remember a worker about to start; ``started()`` must follow, whatever ``start()`` did.

        Called before ``start()``, so that a worker that finishes at once
        cannot forget itself before it is remembered.
        """
        with self._lock:
            self._live[thread] = request
            self._starting.add(thread)

    def started(self, thread: threading.Thread) -> None:
        """The worker's ``start()`` returned or raised: ``join()`` may look at it now."""
        with self._lock:
            self._starting.discard(thread)
            self._start_returned.notify_all()

    def requests(self) -> list[tuple[threading.Thread, Any]]:
        """The live workers and their requests, as a snapshot."""
        with self._lock:
            return list(self._live.items())

    def forget(self, thread: threading.Thread) -> None:
        """Called by a worker as its last act."""
        with self._lock:
            self._live.pop(thread, None)

    def join(self) -> None:
        """Wait for every remembered non-daemon worker to finish.

        Daemon workers are not waited for, as in stdlib: a daemon worker
        may be held by an idle keep-alive client for as long as the client
        likes (``http.server.ThreadingHTTPServer`` sets ``daemon_threads``
        for exactly that reason), and the interpreter does not wait for it
        at exit either.  They stay remembered, for ``max_threads`` and
        ``drain()``.
        """
        while True:
            with self._lock:
                while self._starting:
                    self._start_returned.wait()
                thread = next((t for t in self._live if not t.daemon), None)
            if thread is None:
                return
            # Join outside the lock: the worker needs it to forget itself.
            thread.join()
            self.forget(thread)

    def __len__(self) -> int:
        with self._lock:
            return len(self._live)

    def __iter__(self) -> Iterator[threading.Thread]:
        with self._lock:
            return iter(list(self._live))


class ThreadingMixIn(MixInBase):
    """Handle each request in a new thread.

    Class variables:
        daemon_threads   workers are daemon threads: the interpreter and
                         ``server_close()`` do not wait for them
                         (default False).
        block_on_close   ``server_close()`` waits for running non-daemon
                         workers (default True).
        max_threads      bound on concurrent workers (default None: none).

    Methods to override:
        process_request_thread(request, client_address): the body of a
        worker thread.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse, as the class statement runs, a mix with stdlib's server classes.

        See ``server.refuse_stdlib_base``: our mixin on stdlib's
        ``TCPServer`` (``http.server`` imported stdlib's) cannot work.
        """
        super().__init_subclass__(**kwargs)
        refuse_stdlib_base(cls, ThreadingMixIn)

    #: Start workers as daemon threads, so they do not keep the interpreter
    #: alive at exit, and ``server_close()`` does not wait for them (they are
    #: still counted by ``max_threads`` and cut by ``drain()``).
    daemon_threads: bool = False
    #: Make ``server_close()`` wait until every running non-daemon worker
    #: has finished.
    block_on_close: bool = True
    #: At most this many workers at once (``None``: no limit, as stdlib).
    #: At the limit the loop stops accepting until a worker finishes, so
    #: excess clients wait in the kernel's listen backlog instead of each
    #: costing a thread (about 8 MiB of reserved stack, ``ulimit -s``) here.
    max_threads: int | None = None
    # The class default is never filled: process_request gives each server
    # its own registry on first use, and until then len(server._threads) is 0.
    _threads: _ThreadRegistry = _ThreadRegistry()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """The worker thread's body: run the handler, then end the request.

        Called on the new thread; see ``run_to_completion`` for what happens
        to errors and to the request.
        """
        run_to_completion(self, request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Called by the loop for each verified request: start a worker.

        Error handling: if the thread cannot start (``RuntimeError: can't
        start new thread``: out of threads or memory), the exception goes
        back to the loop, which reports it and shuts the request down; the
        worker leaves no trace (no slot against ``max_threads``, nothing
        for ``server_close()`` or ``drain()`` to wait on).
        """
        if "_threads" not in vars(self):
            self._threads = _ThreadRegistry()
        handoff = self._handoff_for(request)
        worker = threading.Thread(
            target=self._run_worker, args=(request, client_address, handoff),
            daemon=self.daemon_threads,
        )
        try:
            # Registered before start(): a worker that finished at once would
            # otherwise forget itself before it was remembered, and stay
            # forever.  Inside the try, so that started() follows whatever
            # lands after it (join() waits for that).
            self._threads.append(worker, request)
            worker.start()
        except BaseException:
            # Usually the thread never ran.  But an interrupt inside start()
            # can land once it runs: then whoever claims the request first
            # keeps it, and a worker that got it stays registered.
            if handoff is None or handoff.take_back():
                self._threads.forget(worker)
            raise
        finally:
            self._threads.started(worker)
        if handoff is not None:
            # On the worker's behalf, so that an interrupt from here on
            # leaves the request to it, however late the worker runs.
            handoff.take()
        if self._at_thread_limit():
            self._pause_accepting("max_threads")

    def _at_thread_limit(self) -> bool:
        return self.max_threads is not None and len(self._threads) >= self.max_threads

    def _attach(self, reactor: Reactor) -> None:
        """Start watching the listener, unless workers of an earlier loop fill the limit."""
        super()._attach(reactor)
        if self._at_thread_limit():
            self._pause_accepting("max_threads")

    def _worker_finished(self) -> None:
        """Posted to the loop's thread by each finishing worker, with ``max_threads``."""
        if not self._at_thread_limit():
            self._resume_accepting("max_threads")

    def _run_worker(self, request: Any, client_address: Any, handoff: HandOff | None) -> None:
        # Kept apart from process_request_thread so that a subclass which
        # overrides that hook (without calling super) still cannot make the
        # registry grow.
        try:
            # A worker that lost the claim (the loop was interrupted before
            # the hand-off was done, and shut the request down) leaves it.
            if handoff is None or handoff.take():
                self.process_request_thread(request, client_address)
        finally:
            self._threads.forget(threading.current_thread())
            reactor = self._reactor
            if self.max_threads is not None and reactor is not None:
                # Selectors are not thread-safe: the loop re-checks the
                # limit on its own thread.
                reactor.call_soon_threadsafe(self._worker_finished)

    def _wait_for_requests(self, deadline: float) -> bool:
        """Called by ``drain()``: join workers until they are all gone or ``deadline``."""
        for worker, _ in self._threads.requests():
            worker.join(max(0.0, deadline - time.monotonic()))
        return len(self._threads) == 0

    def _cut_requests(self) -> int:
        """Called by ``drain()``: shut each remaining connection down under its worker.

        The workers then end as their handlers see EOF (see
        ``cut_connections``) and close the sockets as usual.
        """
        remaining = self._threads.requests()
        cut_connections([request for _, request in remaining])
        grace = time.monotonic() + DRAIN_GRACE
        for worker, _ in remaining:
            worker.join(max(0.0, grace - time.monotonic()))
        return len(remaining)

    def server_close(self) -> None:
        """Close the listening socket, then wait for the non-daemon workers (``block_on_close``)."""
        super().server_close()
        if self.block_on_close:
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
