"""ThreadPoolMixIn: a fixed set of reused worker threads and a bounded queue.

Not in stdlib.  ``ThreadingMixIn`` starts (and tears down) one thread per
connection; here up to ``max_workers`` threads are started on demand and
kept, and accepted connections wait in a queue of at most ``queue_size``
until a worker is free::

    loop thread:   accept -> process_request: queue.append(request) -> select ...
                                   | (queue full: stop watching the listener)
    pool workers:  take a request -> process_request_thread -> take the next ...

Why: starting a thread costs a ``clone()``, a stack mapping and its
teardown on every connection; a pool pays that once per worker.  The price:
a worker is held for a connection's whole life, so with long-lived
connections (keep-alive, chat) more than ``max_workers`` clients wait in the
queue however idle the busy ones are.  Use it for many short requests; use
``ThreadingMixIn`` or the multiplexing model for many long connections.

Backpressure: when ``queue_size`` connections wait, the loop stops
accepting until a worker takes one, so a flood waits in the kernel's listen
backlog instead of in our memory.

Resource handling: a queued connection belongs to the pool; a worker owns
it from ``take()`` until ``shutdown_request()``.  ``server_close()`` lets the
workers finish what is queued, then stops them, and (``block_on_close``)
waits for them.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from typing import Any

from .reactor import Reactor
from .server import MixInBase
from .sockets import TCPServer
from .threading_mixin import DRAIN_GRACE, cut_connections, run_to_completion


class _Pool:
    """The queue and the workers' bookkeeping, under one condition variable.

    Invariant: ``len(self._queue) <= queue_size``, because the loop stops
    accepting when the queue is full and only the loop submits.
    """

    def __init__(self, max_workers: int, queue_size: int) -> None:
        self.max_workers = max_workers
        self.queue_size = queue_size
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # idle workers wait here for work
        # drain() waits here for the pool to empty.  A second condition on the
        # same lock, so that finishing a request wakes drain() alone: with one
        # condition, notify_all() woke every idle worker on every request
        # only for each to find no work (connection rate 0.87x stdlib's).
        self._emptied = threading.Condition(lock)
        self._queue: collections.deque[tuple[Any, Any]] = collections.deque()
        self._workers: list[threading.Thread] = []
        self._idle = 0
        self._in_flight: dict[int, Any] = {}  # id(request) -> request, queued or running
        self._closed = False

    def submit(self, request: Any, client_address: Any) -> bool:
        """Queue a request (loop thread); True when a worker must be started for it."""
        with self._cond:
            self._queue.append((request, client_address))
            self._in_flight[id(request)] = request
            self._cond.notify()
            return self._idle == 0 and len(self._workers) < self.max_workers

    def add_worker(self, worker: threading.Thread) -> None:
        with self._cond:
            self._workers.append(worker)

    def retire(self, worker: threading.Thread) -> bool:
        """A worker is exiting; True if queued work is left with no worker idle.

        A worker exits normally once the pool is closed, or early when a
        handler raised ``SystemExit``/``KeyboardInterrupt`` through it: it
        must then stop counting against ``max_workers``, and what it leaves
        queued needs another worker.
        """
        with self._cond:
            self._workers.remove(worker)
            return not self._closed and bool(self._queue) and self._idle == 0

    def take(self) -> tuple[tuple[Any, Any] | None, bool]:
        """Block until a request is queued (worker thread).

        Returns ``(item, was_full)``: ``item`` is ``None`` once the pool is
        closed and empty; ``was_full`` tells the worker the loop may have
        paused accepting and should re-check now that there is room.
        """
        with self._cond:
            self._idle += 1
            while not self._queue and not self._closed:
                self._cond.wait()
            self._idle -= 1
            if not self._queue:
                return None, False
            was_full = len(self._queue) >= self.queue_size
            return self._queue.popleft(), was_full

    def done(self, request: Any) -> None:
        """A worker finished with ``request``."""
        with self._cond:
            self._in_flight.pop(id(request), None)
            if not self._in_flight:
                self._emptied.notify_all()

    def full(self) -> bool:
        with self._cond:
            return len(self._queue) >= self.queue_size

    def in_flight(self) -> list[Any]:
        with self._cond:
            return list(self._in_flight.values())

    def wait_empty(self, deadline: float) -> bool:
        """Wait until nothing is queued or running, or ``deadline``; True if empty."""
        with self._cond:
            while self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._emptied.wait(remaining)
            return True

    def close(self) -> list[threading.Thread]:
        """Let workers finish the queue, then exit; returns them for joining."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            return list(self._workers)

    def __len__(self) -> int:
        """Live workers (what ``len(server._threads)`` means for a pool)."""
        with self._cond:
            return sum(worker.is_alive() for worker in self._workers)


class ThreadPoolMixIn(MixInBase):
    """Handle requests on a pool of reused worker threads.

    Class variables:
        max_workers      worker threads at most (started on demand).
        queue_size       accepted connections waiting for a worker, at most;
                         at that mark the loop stops accepting.
        daemon_threads   workers are daemon threads.
        block_on_close   ``server_close()`` waits for the workers.

    Methods to override: process_request_thread (same as ThreadingMixIn).
    """

    #: Worker threads at most.  Each handles one connection at a time, for
    #: the connection's whole life.
    max_workers: int = 64
    #: Accepted connections that may wait for a free worker.
    queue_size: int = 128
    #: Start workers as daemon threads.
    daemon_threads: bool = False
    #: Make ``server_close()`` wait for the workers to finish the queue.
    block_on_close: bool = True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Called on a pool worker for each request it takes: run it to completion."""
        run_to_completion(self, request, client_address)

    def _pool(self) -> _Pool:
        pool: _Pool | None = vars(self).get("_threads")
        if pool is None:
            # Stored as ``_threads`` so that code written for stdlib's
            # ThreadingMixIn, which reads len(server._threads), still works.
            pool = self._threads = _Pool(self.max_workers, self.queue_size)
        return pool

    def process_request(self, request: Any, client_address: Any) -> None:
        """Called by the loop for each verified request: queue it for a worker."""
        pool = self._pool()
        if pool.submit(request, client_address):
            self._start_worker(pool)
        if pool.full():
            self._pause_accepting("queue full")

    def _start_worker(self, pool: _Pool) -> None:
        worker = threading.Thread(
            target=self._work, args=(pool,), daemon=self.daemon_threads,
            name=f"pool worker {len(pool) + 1}",
        )
        pool.add_worker(worker)
        worker.start()

    def _work(self, pool: _Pool) -> None:
        """A worker thread's life: take requests until the pool closes.

        Error handling: as under ``ThreadingMixIn``, an exception that is
        not an ``Exception`` (``SystemExit``) ends the thread it is raised
        on; here a replacement is started if work is waiting.
        """
        try:
            while True:
                item, was_full = pool.take()
                if item is None:
                    return
                reactor = self._reactor
                if was_full and reactor is not None:
                    reactor.call_soon_threadsafe(self._queue_has_room)
                request, client_address = item
                try:
                    self.process_request_thread(request, client_address)
                finally:
                    pool.done(request)
        finally:
            if pool.retire(threading.current_thread()):
                self._start_worker(pool)

    def _queue_has_room(self) -> None:
        """Posted to the loop's thread when a worker took from a full queue."""
        if not self._pool().full():
            self._resume_accepting("queue full")

    def _attach(self, reactor: Reactor) -> None:
        """Start watching the listener, unless the queue is still full."""
        super()._attach(reactor)
        if self._pool().full():
            self._pause_accepting("queue full")

    def _wait_for_requests(self, deadline: float) -> bool:
        """Called by ``drain()``: wait until nothing is queued or running."""
        return self._pool().wait_empty(deadline)

    def _cut_requests(self) -> int:
        """Called by ``drain()``: shut down every queued or running connection."""
        pool = self._pool()
        remaining = pool.in_flight()
        cut_connections(remaining)
        pool.wait_empty(time.monotonic() + DRAIN_GRACE)
        return len(remaining)

    def server_close(self) -> None:
        """Close the listener; workers finish the queue and stop (awaited if ``block_on_close``)."""
        super().server_close()
        workers = self._pool().close()
        if self.block_on_close:
            for worker in workers:
                worker.join()


class ThreadPoolTCPServer(ThreadPoolMixIn, TCPServer):
    """A stream server that handles connections on a pool of worker threads."""


if hasattr(socket, "AF_UNIX"):
    from .sockets import UnixStreamServer

    class ThreadPoolUnixStreamServer(ThreadPoolMixIn, UnixStreamServer):
        """A Unix-domain stream server with a pool of worker threads."""
