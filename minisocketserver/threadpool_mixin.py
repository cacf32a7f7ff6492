"""ThreadPoolMixIn: reused worker threads and a bounded queue.

Design map, part 4 of 6 (the concurrency models).  Not in stdlib.
``ThreadingMixIn`` starts (and tears down) one thread per
connection; here ``core_workers`` threads are started on demand and kept,
and accepted connections wait in a queue of at most ``queue_size`` until a
worker is free.  When every worker is held (no request finished for
``spawn_delay`` while some wait), surplus workers are started, up to
``max_workers``, and leave once the queue is empty::

    loop thread:   accept -> process_request: queue.append(request) -> select ...
                                   | (queue full: stop watching the listener)
    pool workers:  take a request -> process_request_thread -> take the next ...

Why: starting a thread costs a ``clone()``, a stack mapping and its
teardown on every connection; a pool pays that once per worker.  The price:
a worker is held for a connection's whole life, so with long-lived
connections (keep-alive, chat) each one past the busy workers waits
``spawn_delay`` for a worker of its own, and past ``max_workers`` clients
wait in the queue however idle the busy ones are.  Use it for many short requests; use
``ThreadingMixIn`` or the multiplexing model for many long connections.

Backpressure: when ``queue_size`` connections wait, the loop stops
accepting until a worker takes one, so a flood waits in the kernel's listen
backlog instead of in our memory.

Resource handling: a queued connection belongs to the pool (from the moment
it is queued: a ``KeyboardInterrupt`` on the loop's thread then leaves it
there, see ``server.HandOff``); a worker owns it from ``take()`` until
``shutdown_request()``.  ``server_close()`` lets the workers finish what is
queued, then stops them, and (``block_on_close``) waits for the non-daemon
ones.  ``drain()`` cuts what is queued for good: it leaves the queue and is
shut down, never run.  When a worker cannot start (``can't start new
thread``), what is queued waits for the workers there are; with none, it
is shut down rather than left to wait forever.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from typing import Any

from .reactor import Reactor, Timer
from .server import HandOff, MixInBase, logger, refuse_stdlib_base
from .sockets import TCPServer
from .threading_mixin import DRAIN_GRACE, cut_connections, run_to_completion


class _Pool:
    """The queue and the workers' bookkeeping, under one condition variable.

    Invariant: ``len(self._queue) <= queue_size``, because the loop stops
    accepting when the queue is full and only the loop submits.
    """

    def __init__(self, max_workers: int, core_workers: int, queue_size: int) -> None:
        self.max_workers = max_workers
        self.core_workers = min(core_workers, max_workers)
        self.queue_size = queue_size
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # idle workers wait here for work
        # drain() waits here for the pool to empty.  A second condition on the
        # same lock, so that finishing a request wakes drain() alone: with one
        # condition, notify_all() woke every idle worker on every request
        # only for each to find no work (connection rate 0.87x stdlib's in a full
        # run of ``python benchmarks/run.py``; docs/optimisations.md).
        self._emptied = threading.Condition(lock)
        # join() waits here while a worker is between add_worker() and the
        # return of its start(): Thread.join() raises on a thread whose
        # start() has not yet got going, and a worker replacing itself can
        # start one while server_close() joins.
        self._start_returned = threading.Condition(lock)
        self._starting: set[threading.Thread] = set()
        # (request, client_address, time.monotonic() when queued, the loop's
        # hand-off of the request or None)
        self._queue: collections.deque[tuple[Any, Any, float, HandOff | None]] = (
            collections.deque()
        )
        self._workers: list[threading.Thread] = []
        self._idle = 0
        self._in_flight: dict[int, Any] = {}  # id(request) -> request, queued or running
        self._last_done = 0.0  # time.monotonic() when a worker last finished a request
        self._closed = False

    def submit(self, request: Any, client_address: Any, handoff: HandOff | None) -> bool:
        """Queue a request (loop thread); True if no idle worker is there to take it."""
        with self._cond:
            self._queue.append((request, client_address, time.monotonic(), handoff))
            self._in_flight[id(request)] = request
            self._cond.notify()
            # The idle workers take the queue's head, one request each.
            return len(self._queue) > self._idle

    def starved(self, delay: float) -> tuple[int, float | None]:
        """How many workers to start now: the pool is stuck if none finished for ``delay``.

        A request that waits while workers keep finishing requests will be
        taken by one of them soon; one that waits while none has finished
        anything for ``delay`` seconds waits on workers held by slow or
        long-lived connections, and each such request gets a new worker
        (at most ``max_workers`` in all).  Returns ``(count, next_due)``:
        start ``count`` workers now, and look again at the ``monotonic()``
        time ``next_due`` (``None``: no request is left waiting for a
        worker, or the pool is full and only a finishing worker can help).
        With ``delay=0``, every waiting request gets a worker.
        """
        with self._cond:
            room = self.max_workers - len(self._workers)
            # Requests beyond what the idle workers take, oldest first.
            unserved = [queued_at for _, _, queued_at, _ in self._queue][self._idle :]
            last_done = self._last_done
        if not unserved or room <= 0:
            return 0, None
        now = time.monotonic()
        if delay and now - last_done < delay:
            return 0, last_done + delay  # the workers are moving: look again later
        stale = sum(1 for queued_at in unserved if queued_at <= now - delay)
        count = min(stale, room)
        if count < len(unserved) and count < room:
            return count, unserved[count] + delay
        return count, None

    def below_core(self) -> bool:
        """Whether fewer than ``core_workers`` workers exist (started or starting)."""
        with self._cond:
            return len(self._workers) < self.core_workers

    def add_worker(self, worker: threading.Thread) -> None:
        """Count a worker about to start; ``started()`` must follow, whatever ``start()`` did."""
        with self._cond:
            self._workers.append(worker)
            self._starting.add(worker)

    def started(self, worker: threading.Thread) -> None:
        """The worker's ``start()`` returned or raised: ``join()`` may look at it now."""
        with self._cond:
            self._starting.discard(worker)
            self._start_returned.notify_all()

    def retire(self, worker: threading.Thread) -> bool:
        """A worker is exiting; True if queued work is left with no worker idle.

        A worker exits once the pool is closed and empty, as a surplus
        worker that found nothing queued, or early when a handler raised
        ``SystemExit``/``KeyboardInterrupt`` through it.  Then it must stop
        counting against ``max_workers``, and what it leaves queued needs
        another worker, also after ``close()``: the pool's promise is that
        the queue is finished.
        """
        with self._cond:
            if worker in self._workers:  # take() removed a surplus worker already
                self._workers.remove(worker)
            return (
                bool(self._queue) and self._idle == 0 and len(self._workers) < self.max_workers
            )

    def take(
        self, worker: threading.Thread
    ) -> tuple[tuple[Any, Any, HandOff | None] | None, bool]:
        """Block until a request is queued (worker thread).

        Returns ``(item, was_full)``: ``item`` is ``(request,
        client_address, handoff)``, or ``None`` once the pool is closed and
        empty, or at once for a worker beyond ``core_workers`` that finds
        nothing queued; ``was_full`` tells the worker the loop may have
        paused accepting and should re-check now that there is room.
        """
        with self._cond:
            while not self._queue and not self._closed:
                if len(self._workers) > self.core_workers:
                    # Started because the pool was stuck; with nothing to do,
                    # it leaves.  Removed here, under the lock, so that two
                    # surplus workers cannot both see room to leave.
                    self._workers.remove(worker)
                    return None, False
                self._idle += 1
                self._cond.wait()
                self._idle -= 1
            if not self._queue:
                return None, False
            was_full = len(self._queue) >= self.queue_size
            request, client_address, _, handoff = self._queue.popleft()
            return (request, client_address, handoff), was_full

    def done(self, request: Any) -> None:
        """A worker finished with ``request``."""
        with self._cond:
            self._last_done = time.monotonic()
            self._in_flight.pop(id(request), None)
            if not self._in_flight:
                self._emptied.notify_all()

    def withdraw(self, stranded_only: bool) -> list[tuple[Any, HandOff | None]]:
        """Take every queued request back out of the queue; no worker will run them.

        The caller owns what is returned, and shuts it down.  With
        ``stranded_only``, only if no worker is left to take them (every
        start failed): a queue nobody takes would wait forever.
        """
        with self._cond:
            if stranded_only and self._workers:
                return []
            withdrawn = [(request, handoff) for request, _, _, handoff in self._queue]
            self._queue.clear()
            for request, _ in withdrawn:
                self._in_flight.pop(id(request), None)
            if not self._in_flight:
                self._emptied.notify_all()
            return withdrawn

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

    def close(self) -> None:
        """Let workers finish the queue, then exit."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def join(self) -> None:
        """Wait until no non-daemon worker is left, replacements started meanwhile included.

        Daemon workers are not waited for: see ``ThreadPoolMixIn.server_close``.
        """
        while True:
            with self._cond:
                while self._starting:
                    self._start_returned.wait()
                workers = [worker for worker in self._workers if not worker.daemon]
            if not workers:
                return
            # Outside the lock: a worker needs it to retire.
            for worker in workers:
                worker.join()

    def __len__(self) -> int:
        """Live workers (what ``len(server._threads)`` means for a pool)."""
        with self._cond:
            return sum(worker.is_alive() for worker in self._workers)


class ThreadPoolMixIn(MixInBase):
    """Handle requests on a pool of reused worker threads.

    Class variables:
        core_workers     workers started on demand and kept.
        max_workers      workers at most, surplus ones included.
        spawn_delay      how long the pool may go without finishing a
                         request, while requests wait, before surplus
                         workers are started for them.
        queue_size       accepted connections waiting for a worker, at most;
                         at that mark the loop stops accepting.
        daemon_threads   workers are daemon threads, not waited for by
                         ``server_close()``.
        block_on_close   ``server_close()`` waits for the non-daemon workers.

    Methods to override: process_request_thread (same as ThreadingMixIn).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse, as the class statement runs, a mix with stdlib's server classes.

        See ``server.refuse_stdlib_base``: our mixin on stdlib's
        ``TCPServer`` (``http.server`` imported stdlib's) cannot work.
        """
        super().__init_subclass__(**kwargs)
        refuse_stdlib_base(cls, ThreadPoolMixIn)

    #: Worker threads at most.  Each handles one connection at a time, for
    #: the connection's whole life.
    max_workers: int = 64
    #: Workers started as soon as a request finds none idle, and kept while
    #: idle.  Past them, up to ``max_workers``, a worker is started only
    #: when the pool is stuck: requests wait and no worker has finished one
    #: for ``spawn_delay`` seconds (all are held by slow or long-lived
    #: connections).  Such a surplus worker leaves as soon as it finds the
    #: queue empty.  Why not start a worker for every waiting request: each
    #: thread blocked in I/O is one more contender for the GIL, and short
    #: requests are served sooner by queueing for a running worker.
    #: Measured (docs/optimisations.md, ``python benchmarks/costs.py pool
    #: --core 1 2 4 6 --repeats 2``, 16 clients connecting, one line each):
    #: 2 workers made 2.3-3.9 voluntary + 0.5-0.7 involuntary context
    #: switches per connection at 6,562-7,292 connections/s; 6 workers
    #: 6.5-6.7 + 1.7 at 5,296-5,477.
    core_workers: int = 2
    #: Seconds without a finished request, while requests wait, after which
    #: the pool counts as stuck and starts a worker for each request that
    #: has waited that long.  The price for long-lived connections: one past
    #: the busy workers waits this long for its own.
    spawn_delay: float = 0.002
    #: Accepted connections that may wait for a free worker.
    queue_size: int = 128
    #: Start workers as daemon threads: neither the interpreter at exit nor
    #: ``server_close()`` waits for them (see ``server_close``).
    daemon_threads: bool = False
    #: Make ``server_close()`` wait for the non-daemon workers to finish the
    #: queue.
    block_on_close: bool = True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Called on a pool worker for each request it takes: run it to completion."""
        run_to_completion(self, request, client_address)

    def _pool(self) -> _Pool:
        pool: _Pool | None = vars(self).get("_threads")
        if pool is None:
            # Stored as ``_threads`` so that code written for stdlib's
            # ThreadingMixIn, which reads len(server._threads), still works.
            pool = self._threads = _Pool(self.max_workers, self.core_workers, self.queue_size)
        return pool

    # The loop's timer for _grow(), while one is set.
    _growth_timer: Timer | None = None

    def process_request(self, request: Any, client_address: Any) -> None:
        """Called by the loop for each verified request: queue it for a worker.

        Error handling: if a worker is needed and none can start
        (``RuntimeError: can't start new thread``), the request waits in
        the queue for the workers there are, and the failure is logged;
        with no worker at all nothing would ever take it, so it leaves the
        queue and the exception goes back to the loop, which reports it
        and shuts the request down.  Never both: a request that stays
        queued is the pool's.
        """
        pool = self._pool()
        handoff = self._handoff_for(request)
        if pool.submit(request, client_address, handoff):
            try:
                self._need_workers(pool)
            except Exception as exc:
                withdrawn = pool.withdraw(stranded_only=True)
                if all(item[0] is not request for item in withdrawn):
                    self._could_not_start(pool, exc)  # it waits for the workers there are
                else:
                    self._shut_down_queued([item for item in withdrawn if item[0] is not request])
                    raise  # left unclaimed below: the loop's error path shuts it down
        if handoff is not None:
            # Queued, so the pool's from here on: an interrupt now must not
            # make the loop shut it down under the worker that takes it.
            handoff.take()
        if pool.full():
            self._pause_accepting("queue full")

    def _need_workers(self, pool: _Pool) -> None:
        """A request waits with no idle worker: start one now, or time it (loop thread)."""
        reactor = self._reactor
        if reactor is None:
            # No loop (handle_request(), or after serve_forever()) would
            # come back to time the wait: give every waiting request a worker.
            self._grow(delay=0.0)
        elif pool.below_core():
            self._start_worker(pool)
        elif self._growth_timer is None:
            self._growth_timer = reactor.call_later(self.spawn_delay, self._on_growth_timer)

    def _on_growth_timer(self) -> None:
        """The loop's timer for ``_grow()``.

        A worker that cannot start is logged, not raised out of
        ``serve_forever()``; the requests wait for the workers there are.
        """
        try:
            self._grow()
        except Exception as exc:
            self._could_not_start(self._pool(), exc)

    def _grow(self, delay: float | None = None) -> None:
        """Start a worker for each request that waited ``spawn_delay`` (loop thread).

        Called by the loop's timer; with ``delay=0`` by ``_need_workers``
        when there is no loop, and by ``_serving_ended`` when the loop goes.
        Raises what ``_start_worker`` raises, and then starts no more.
        """
        self._growth_timer = None
        pool = self._pool()
        count, next_due = pool.starved(self.spawn_delay if delay is None else delay)
        for _ in range(count):
            self._start_worker(pool)
        reactor = self._reactor
        if next_due is not None and reactor is not None:
            self._growth_timer = reactor.call_later(
                next_due - time.monotonic(), self._on_growth_timer
            )

    def _start_worker(self, pool: _Pool) -> None:
        """Start one pool worker; raises ``RuntimeError`` if the thread cannot start."""
        worker = threading.Thread(
            target=self._work, args=(pool,), daemon=self.daemon_threads,
            name=f"pool worker {len(pool) + 1}",
        )
        pool.add_worker(worker)
        try:
            worker.start()
        except BaseException:
            # RuntimeError("can't start new thread"): out of threads or
            # memory.  A worker that never ran must not be waited for.
            pool.retire(worker)
            raise
        finally:
            pool.started(worker)

    def _could_not_start(self, pool: _Pool, exc: Exception) -> None:
        """No worker could start for the queue: log it; with no worker left, empty the queue.

        Called where nobody else would report the failure: the growth
        timer, the loop's end, a worker replacing itself.  Queued requests
        wait for the workers there are; with none left they would wait
        forever, so they are shut down (their clients see EOF).
        """
        logger.warning(
            "%s: cannot start a pool worker: %s; %d worker(s) serve the queue",
            type(self).__name__, exc, len(pool),
        )
        self._shut_down_queued(pool.withdraw(stranded_only=True))

    def _shut_down_queued(self, withdrawn: list[tuple[Any, HandOff | None]]) -> None:
        """Shut down requests taken back out of the queue, never to run.

        One whose hand-off the loop's error path took back (an interrupt
        came between queueing it and claiming it) was shut down there.
        """
        for request, handoff in withdrawn:
            if handoff is None or handoff.take():
                self.shutdown_request(request)

    def _work(self, pool: _Pool) -> None:
        """A worker thread's life: take requests until the pool closes, or none is left.

        A surplus worker (beyond ``core_workers``) leaves as soon as it
        finds the queue empty; see ``_Pool.take``.

        Error handling: as under ``ThreadingMixIn``, an exception that is
        not an ``Exception`` (``SystemExit``) ends the thread it is raised
        on; here a replacement is started if work is waiting.
        """
        try:
            while True:
                item, was_full = pool.take(threading.current_thread())
                if item is None:
                    return
                reactor = self._reactor
                if was_full and reactor is not None:
                    reactor.call_soon_threadsafe(self._queue_has_room)
                request, client_address, handoff = item
                try:
                    # Lost only if the loop was interrupted between queueing
                    # the request and claiming it: it shut the request down.
                    if handoff is None or handoff.take():
                        self.process_request_thread(request, client_address)
                finally:
                    pool.done(request)
        finally:
            if pool.retire(threading.current_thread()):
                try:
                    self._start_worker(pool)
                except Exception as exc:
                    self._could_not_start(pool, exc)

    def _queue_has_room(self) -> None:
        """Posted to the loop's thread when a worker took from a full queue."""
        if not self._pool().full():
            self._resume_accepting("queue full")

    def _attach(self, reactor: Reactor) -> None:
        """Start watching the listener, unless the queue is still full."""
        super()._attach(reactor)
        if self._pool().full():
            self._pause_accepting("queue full")

    def _serving_ended(self) -> None:
        """The loop and its timers are going: start the workers that queued requests wait for.

        Before ``super()``, which lets ``shutdown()`` return: a worker
        started after it could be missed by a ``server_close()`` called
        right then.  The timer is cancelled, not just forgotten: in a
        ``ServerGroup`` the loop goes on without this server.
        """
        if self._growth_timer is not None:
            self._growth_timer.cancel()
            self._growth_timer = None
        try:
            self._grow(delay=0.0)
        except Exception as exc:
            self._could_not_start(self._pool(), exc)
        finally:
            super()._serving_ended()  # whatever happened above: shutdown() must return

    def _wait_for_requests(self, deadline: float) -> bool:
        """Called by ``drain()``: wait until nothing is queued or running."""
        return self._pool().wait_empty(deadline)

    def _cut_requests(self) -> int:
        """Called by ``drain()``: end every queued or running connection.

        A cut request never runs: queued ones leave the queue and are shut
        down here (a worker freed by a cut would otherwise run them on a
        connection the drain has given up on), running ones are shut down
        under their workers (see ``cut_connections``).
        """
        pool = self._pool()
        queued = pool.withdraw(stranded_only=False)  # first: no worker may take one now
        running = pool.in_flight()
        self._shut_down_queued(queued)
        cut_connections(running)
        pool.wait_empty(time.monotonic() + DRAIN_GRACE)
        return len(queued) + len(running)

    def server_close(self) -> None:
        """Close the listener; workers finish the queue and stop.

        With ``block_on_close``, waits for the non-daemon workers.  Daemon
        workers (``daemon_threads``) are not waited for, as stdlib's
        ``ThreadingMixIn`` waits for no daemon thread: whoever asks for
        daemon workers (``http.server`` does, for keep-alive clients) asks
        for a close that an idle client cannot hold up.  They still finish
        the queue and leave, unless the interpreter exits first.
        """
        super().server_close()
        pool = self._pool()
        pool.close()
        if self.block_on_close:
            pool.join()


class ThreadPoolTCPServer(ThreadPoolMixIn, TCPServer):
    """A stream server that handles connections on a pool of worker threads."""


if hasattr(socket, "AF_UNIX"):
    from .sockets import UnixStreamServer

    class ThreadPoolUnixStreamServer(ThreadPoolMixIn, UnixStreamServer):
        """A Unix-domain stream server with a pool of worker threads."""
