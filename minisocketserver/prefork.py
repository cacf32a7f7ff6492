"""PreforkMixIn: a master process that forks workers, each serving the one listener.

Design map, part 4 of 6 (a layer above the concurrency models: read it after
them).  Not in stdlib.  One Python process runs on one core; the pre-fork
model (Apache's, nginx's, gunicorn's) binds the listener once, then forks
``workers`` processes that each run a whole server loop on it, with any
concurrency model, while the master only supervises::

    master (main thread, its own Reactor, no thread ever):
        bind + listen (the constructor, as usual) -> serve_forever():
        fork worker 1..N -> wait on: each worker's pidfd (exit), the status
        pipe (a worker serves / leaves), the signals (queued by handlers),
        a tick (heartbeats, deadlines) -> reap, replace, restart, stop
    worker (a forked copy of the master's server object):
        worker_init() -> the model's serve_forever() on the inherited
        listener -> "ready" on the status pipe; a timer writes a heartbeat
        into shared memory; EOF on the master's pipe = the master is gone
        -> SIGTERM (or max_requests, or no master): stop accepting,
        drain(graceful_timeout), server_close(), exit 0

Invariants:

1. The master starts no thread and runs in the main thread of its process:
   forking a multi-threaded process copies one thread and every lock the
   others held (Python 3.12+ warns about it).  Its signal handlers only queue
   the signal; its loop acts on it (as gunicorn's arbiter does).
2. The master's children are its workers and nothing else.  A SIGUSR2
   upgrade forks twice, so that the new master is not a child of the old
   one (anyone counting workers with ``ps --ppid`` sees workers only).
3. Signals are blocked around ``fork()``: one aimed at the master while it
   forks is delivered to the master, after the fork, never to the child
   before the child has replaced the master's handlers with its own.
4. No zombie: each worker is reaped as soon as its pidfd turns readable
   (and on every tick, which is all the reaping there is without pidfds,
   before Linux 5.3).  No orphan: each worker watches the read end of a
   pipe whose write end only the master holds; EOF means the master died
   (even by SIGKILL) and the worker leaves gracefully.

Listener sharing.  By default every worker accepts on the one listening
socket the master bound.  Each worker would wait for it in its own
poll(): one connection then wakes every idle worker, one wins the
accept() and the others get EAGAIN and go back to sleep (the thundering
herd).  Where Linux has ``EPOLLEXCLUSIVE`` (4.5+), each worker's loop waits
with epoll and registers the listener with that flag, so the kernel wakes
one waiting worker per connection.  The listener is non-blocking in every
process (the flag belongs to the open file, shared by all): a worker that
loses a race gets EAGAIN instead of blocking its loop in accept().
Measured by ``python tests/prefork_herd.py`` (4 synchronous workers, 200
sequential connections, 3 runs): the workers' loops were woken 1.75-1.89
times per connection with the flag (the one that accepts: in select, then
in the handler's read), 3.96-4.21 times with poll() and no flag; accept()
found nothing (EAGAIN) 0.02-0.03 times per connection against 0.10-0.43
(most woken losers see the queue empty before poll() returns).

``reuse_port = True``: each worker binds its own ``SO_REUSEPORT`` listener
on the master's address instead, and the kernel spreads connections over
the sockets by a hash of the addresses: no herd, no shared queue.  The
cost: connections waiting in a leaving worker's queue are reset by the
kernel when it closes its socket (a rolling restart or a recycled worker
refuses those few clients), and a stalled worker's queue is not served by
the others.  (Linux 5.14+ can hand such a queue to another member of the
group, but only where an administrator set ``net.ipv4.tcp_migrate_req``;
the class does not rely on it.)  The master keeps its own socket bound but not listening: it
holds the port between worker generations (and resolves port 0 once, for
every worker), and, not listening, it is in no reuseport group, so no
connection ever queues on it.

Signals to the master (gunicorn's conventions):

    SIGHUP    rolling restart: for each old worker, one at a time, fork a
              new one, wait until it serves, then stop the old one
              gracefully; the shared listener queues meanwhile, so nobody
              is refused
    SIGTERM   graceful stop (``shutdown()`` from another thread too): each
              worker stops accepting and drains for ``graceful_timeout``,
              then cuts what is left; the master's SIGKILL comes after
              that cut's time (``_CUT_MARGIN``); ``serve_forever()`` returns
    SIGINT, SIGQUIT  fast stop: workers cut their requests now
    SIGTTIN, SIGTTOU one worker more / less (never below one)
    SIGUSR2   upgrade: re-exec the program (``sys.executable`` and the
              original argv) with the listener passed as descriptor 3 by
              the ``LISTEN_FDS`` protocol (activation.py), named
              ``prefork``; a ``PreforkMixIn`` server built in the new
              process adopts it instead of binding, and once its first
              worker serves, the new master sends SIGTERM to the old one,
              which drains its workers and returns.

Workers: SIGTERM = graceful, SIGINT/SIGQUIT = fast; every other signal the
master handles is back to its default in a worker.  A worker whose loop
does not turn for ``worker_timeout`` seconds (a synchronous handler stuck,
``kill -STOP``) is killed with SIGKILL and replaced: in the synchronous
model that bounds a request's time, as gunicorn's sync workers do.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import random
import select
import selectors
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, NoReturn

from .activation import SD_LISTEN_FDS_START, listen_fds_with_names
from .reactor import Reactor
from .server import BaseServer, _claim, logger, refuse_stdlib_base
from .sockets import TCPServer

# For the type checker the mixin is a TCPServer (it has a listening socket);
# at run time it derives from object, like the other mixins, so that the MRO
# of e.g. PreforkMixIn + ThreadingTCPServer has the stdlib shape.
if TYPE_CHECKING:
    _StreamServerBase = TCPServer
else:
    _StreamServerBase = object

#: The name the master gives its listener in ``LISTEN_FDNAMES`` on SIGUSR2,
#: and the name a new master looks for (a systemd socket unit can use it
#: too: ``FileDescriptorName=prefork``).
LISTEN_NAME = "prefork"

# Set by an upgrading master in the environment of the program it
# re-executes: "<old master pid>:<new master pid>".  The second pid makes it
# as strict as LISTEN_PID: only the process it was meant for acts on it.
_UPGRADE_VARIABLE = "MINISOCKETSERVER_PREFORK_UPGRADE"

# The signals the master handles; each handler only queues the number.
_MASTER_SIGNALS = (
    signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT,
    signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2,
)

# Worker -> master messages on the status pipe: a code and the worker's pid.
# Five bytes, far below PIPE_BUF, so concurrent writers never interleave.
_MESSAGE = struct.Struct("=ci")
_READY = b"R"    # the loop watches the listener: the worker serves
_LEAVING = b"L"  # leaving on its own (max_requests, master gone): replace me now

# The new master's pid, from the middle process of a SIGUSR2 upgrade.
_PID = struct.Struct("=i")

# A heartbeat is a time.monotonic() value, a system-wide clock on Linux,
# so the master can compare it with its own; one double, written in one store.
_BEAT = struct.Struct("=d")

#: Whether each worker's loop waits for the shared listener with
#: EPOLLEXCLUSIVE (Linux 4.5+).  tests/prefork_herd.py turns it off to
#: measure the herd it prevents.
_EXCLUSIVE = hasattr(select, "EPOLLEXCLUSIVE") and hasattr(select, "epoll")

_HAVE_PIDFD = hasattr(os, "pidfd_open")

#: Seconds the master waits before it replaces a worker that died before it
#: served: a worker that cannot start must not make the master fork in a loop,
#: whatever its exit status (one that exits 0 at once loops as fast).
_RESPAWN_DELAY = 1.0

#: Seconds the master's SIGKILL waits past a leaving worker's drain
#: deadline (plus the model's ``drain_grace``, ForkingMixIn's): at that
#: deadline the worker cuts its requests itself (ForkingMixIn: SIGTERM to
#: its children, SIGKILL after drain_grace) and exits; a SIGKILL at the
#: same moment would win that race and orphan the children.
_CUT_MARGIN = 0.5

#: Seconds between a leaving worker's looks at the connections its loop
#: still holds (see ``_pf_leave_when_idle``): short, it runs only then.
_IDLE_CHECK = 0.01


class _Fd:
    """A bare descriptor as the reactor watches it (a pidfd, a pipe's end)."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


class _Worker:
    """The master's record of one worker (master's loop thread only)."""

    __slots__ = ("exit_watch", "heartbeat", "killed", "leave_deadline", "pid", "serving",
                 "started")

    def __init__(self, pid: int, heartbeat: mmap.mmap) -> None:
        self.pid = pid
        self.heartbeat = heartbeat
        self.started = time.monotonic()
        self.serving = False  # its "ready" message arrived
        # Set when the master told it to leave (or it said it leaves): from
        # then on it answers to this deadline, no longer to its heartbeat.
        self.leave_deadline: float | None = None
        self.killed = False
        self.exit_watch: _Fd | None = None

    def last_beat(self) -> float:
        beat: float = _BEAT.unpack_from(self.heartbeat, 0)[0]
        return max(beat, self.started)


def _exclusive_selector(listener_fd: int) -> type[selectors.BaseSelector]:
    """An epoll selector class that registers ``listener_fd`` with EPOLLEXCLUSIVE.

    Called in a worker, before its loop starts.  ``selectors`` has no way
    to pass the flag, and the flag cannot be added by EPOLL_CTL_MOD
    (EINVAL), only at EPOLL_CTL_ADD: so the registration ``selectors``
    made is replaced at once by one with the flag.  The listener is only
    ever watched for reading, so ``selectors`` never modifies it (it calls
    epoll's modify only when the events change); a pause of the accepts
    unregisters it and the resume registers it again, through here.

    Why not a private epoll holding the listener, itself watched by the
    loop's poll(): the kernel ends an exclusive wake-up at the first epoll
    that has a task in epoll_wait() on it (``ep_poll_callback`` returns
    "woken" only then), and nobody waits on a nested epoll directly, so it
    would go on to wake every worker's.  The loop's own epoll is the one
    its thread waits in.

    Measured: see the module docstring.
    """

    class ExclusiveListenerSelector(selectors.EpollSelector):
        def register(
            self, fileobj: Any, events: int, data: Any = None
        ) -> selectors.SelectorKey:
            key = super().register(fileobj, events, data)
            if key.fd == listener_fd and events == selectors.EVENT_READ:
                # CPython's epoll-based selector keeps its select.epoll here.
                epoll: select.epoll = self._selector  # type: ignore[attr-defined]
                epoll.unregister(key.fd)
                try:
                    epoll.register(key.fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
                except OSError:  # EINVAL: a kernel without the flag
                    epoll.register(key.fd, select.EPOLLIN)
            return key

    return ExclusiveListenerSelector


def _take_inherited_listener() -> socket.socket | None:
    """The listener passed to this process as ``prefork`` by ``LISTEN_FDS``, if any.

    Called by the constructor.  Only when a descriptor is named ``prefork``
    are the variables consumed (``listen_fds_with_names``): a program that
    was given other listeners (systemd's, for its own servers) keeps them
    for its own use.  The inherited sockets not named so are left open,
    detached, at their numbers.
    """
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    if LISTEN_NAME not in names or os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    adopted: socket.socket | None = None
    for name, sock in listen_fds_with_names():
        if name == LISTEN_NAME and adopted is None:
            adopted = sock
        else:
            sock.detach()
    return adopted


class PreforkMixIn(_StreamServerBase):
    """Serve with ``workers`` pre-forked processes; the master supervises them.

    Put it first in the bases, before the concurrency model:
    ``class App(PreforkMixIn, ThreadingTCPServer)`` (any stream model:
    TCPServer, ThreadingMixIn, ThreadPoolMixIn, ForkingMixIn,
    MultiplexingMixIn, the TLS servers).  Construct it as the model's class
    (the master binds and listens once); ``serve_forever()`` must then run
    in the main thread of the process.

    Methods for callers (in the master):
        serve_forever(poll_interval), shutdown(), drain(timeout),
        server_close(), worker_pids().  ``shutdown()``, ``drain()`` and
        ``server_close()`` come from another thread, as for any server, and
        act on the whole group; that thread is then the program's own, and
        every later fork (a replacement, a restart) forks a multi-threaded
        process.  Signals need no thread: SIGTERM is the same graceful stop.

    Methods to override (each docstring says who calls it, and when):
        worker_init(), worker_started(pid), worker_exited(pid, status).

    Class variables: workers, reuse_port, worker_timeout, max_requests,
    max_requests_jitter, graceful_timeout (see each).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse, as the class statement runs, a mix with stdlib's server classes."""
        super().__init_subclass__(**kwargs)
        refuse_stdlib_base(cls, PreforkMixIn)

    #: How many workers to run; ``None``: one per CPU (``os.cpu_count()``).
    workers: int | None = None
    #: ``True``: each worker binds its own ``SO_REUSEPORT`` listener on the
    #: master's address (IP only); see the module docstring for the cost.
    reuse_port: bool = False
    #: Seconds a worker's loop may go without a heartbeat before the master
    #: kills it (SIGKILL) and starts another; ``None``: never.
    worker_timeout: float | None = 30.0
    #: A worker leaves gracefully after this many requests, and the master
    #: starts its replacement; 0: never.  Bounds what a leak can grow to.
    max_requests: int = 0
    #: Plus ``random.randint(0, max_requests_jitter)`` per worker, so that
    #: workers started together do not all leave together.
    max_requests_jitter: int = 0
    #: Seconds a stopping worker may drain its requests before it cuts
    #: them (SIGTERM, ``shutdown()``, SIGHUP, SIGTTOU, max_requests); the
    #: master SIGKILLs a worker still there ``_CUT_MARGIN`` s (plus the
    #: model's ``drain_grace``) later.
    graceful_timeout: float = 30.0

    # Every private name here starts with _pf_: a mixin shares the instance's
    # namespace with the model under it (ForkingMixIn has a _reap of its own).
    # "master" while serve_forever() supervises, "worker" in a worker, None
    # otherwise.  Each process has its own copy of the object after fork().
    _pf_role: str | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Build the server; adopt a listener passed as ``prefork`` instead of binding.

        ``from_socket()`` takes precedence: a socket handed over explicitly
        is the one served.
        """
        if getattr(self, "_socket_to_adopt", None) is None:
            inherited = _take_inherited_listener()
            if inherited is not None:
                self._socket_to_adopt = inherited
        # Master's state, touched only by the master's loop (its main thread),
        # except _pf_workers, read by worker_pids() from any thread: list() of a
        # dict is one C call under the GIL, so it sees a consistent table.
        self._pf_workers: dict[int, _Worker] = {}
        self._pf_target = 0
        self._pf_signals: list[int] = []
        self._pf_stopping: tuple[float, int] | None = None  # (deadline, signal sent)
        self._pf_drain_timeout: float | None = None
        self._pf_cut = 0  # workers killed by the last stop's deadline
        self._pf_rolling: list[int] = []  # old workers a SIGHUP still has to replace
        self._pf_rolling_new: int | None = None  # the new worker the restart waits for
        self._pf_upgrade_from: int | None = None  # old master to stop once we serve
        # The new master a SIGUSR2 started, until it exits (a pidfd, or -1
        # where there is none): a second SIGUSR2 meanwhile is ignored, as
        # gunicorn's arbiter does, else two new masters would both serve.
        self._pf_upgrade_to: tuple[int, int] | None = None
        # No fork before this time.monotonic(): a worker that fails before it
        # serves (an import error in worker_init) would otherwise be
        # replaced, fail and be replaced again, as fast as fork() goes.
        self._pf_respawn_after = 0.0
        self._pf_status_buffer = bytearray()
        # Descriptors shared with the workers, made by serve_forever().
        self._pf_status_r = self._pf_status_w = self._pf_alive_r = self._pf_alive_w = -1
        # Worker's state (in the worker only).
        self._pf_requests_left = 0
        self._pf_worker_pid = -1
        super().__init__(*args, **kwargs)
        if self.reuse_port and self.address_family not in (socket.AF_INET, socket.AF_INET6):
            self.server_close()  # the caller never gets the object to close
            raise ValueError(f"{type(self).__name__}.reuse_port needs an IP listener")

    # -- construction: with reuse_port, the master holds the port ----------

    def server_bind(self) -> None:
        """Called by the constructor: with ``reuse_port``, set SO_REUSEPORT before binding."""
        if self.reuse_port and not getattr(self, "_adopted", False):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def server_activate(self) -> None:
        """Called by the constructor: listen, except with ``reuse_port`` (workers listen)."""
        if not self.reuse_port:
            super().server_activate()

    # -- hooks --------------------------------------------------------------

    def worker_init(self) -> None:
        """Called in each worker right after fork, before its loop starts.

        The worker's signal handlers are set already; open per-process
        resources here (a database connection must not be shared by forks).
        """

    def worker_started(self, pid: int) -> None:
        """Called in the master right after it forked worker ``pid``."""

    def worker_exited(self, pid: int, status: int) -> None:
        """Called in the master after it reaped worker ``pid`` (``status`` as from waitpid)."""

    def worker_pids(self) -> list[int]:
        """The master's live workers (forked, not yet reaped), oldest first (any thread)."""
        return list(self._pf_workers)

    # -- the master ----------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Fork the workers, then supervise them until shutdown() or a stopping signal.

        Runs in the main thread of the process only (signal handlers can be
        set nowhere else).  ``poll_interval`` bounds how late the master
        notices a stale heartbeat or an expired deadline; exits are seen at
        once (pidfds).  In a worker, this is the model's own loop.
        """
        if self._pf_role == "worker":
            super().serve_forever(poll_interval)
            return
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError(
                f"{type(self).__name__}.serve_forever() must run in the main thread: "
                "the master handles signals and forks its workers"
            )
        _claim([self])
        self._pf_role = "master"
        saved: dict[int, Any] = {}
        try:
            with Reactor(selectors.DefaultSelector) as reactor, reactor.signals_wake():
                self._reactor = reactor
                for signum in _MASTER_SIGNALS:
                    saved[signum] = signal.signal(signum, self._pf_queue_signal)
                self._pf_supervise(reactor, poll_interval)
        finally:
            for number, handler in saved.items():
                signal.signal(number, handler)
            self._pf_role = None
            self._pf_close_master_channels()
            BaseServer._serving_ended(self)  # the models' _attach never ran here

    def _pf_queue_signal(self, signum: int, frame: Any) -> None:
        """The master's handler for every signal it takes: queue it, the loop acts."""
        self._pf_signals.append(signum)

    def _pf_supervise(self, reactor: Reactor, poll_interval: float) -> None:
        """The master's loop: keep ``workers`` workers, act on signals, until all are gone."""
        self._pf_open_master_channels(reactor)
        if not self.reuse_port:
            # Shared by every process (O_NONBLOCK is a flag of the open
            # file): a worker that loses the race for a connection gets
            # EAGAIN instead of blocking its loop in accept().
            self.socket.setblocking(False)
        self._pf_target = max(1, self.workers or os.cpu_count() or 1)
        self._pf_take_upgrade_variable()
        tick = poll_interval
        if self.worker_timeout is not None:
            tick = min(tick, self.worker_timeout / 4)
        while True:
            if self._shutdown_requested and self._pf_stopping is None:
                timeout = self._pf_drain_timeout
                self._pf_stop("graceful stop (shutdown())", signal.SIGTERM,
                              self.graceful_timeout if timeout is None else timeout)
            if self._pf_stopping is None:
                self._pf_keep_workers()
            elif not self._pf_workers:
                return
            for function, argument in reactor.select(tick):
                function(argument)
            self._pf_act_on_signals()
            self._pf_reap()
            self._pf_check_deadlines()

    def _pf_open_master_channels(self, reactor: Reactor) -> None:
        """The status pipe (workers -> master) and the alive pipe (master's life -> workers)."""
        self._pf_status_r, self._pf_status_w = os.pipe()
        self._pf_alive_r, self._pf_alive_w = os.pipe()
        # A worker must never block on the status pipe: it holds 13,000
        # messages, so it fills only under a master that stopped reading
        # (kill -STOP), and a worker hanging on it would stop serving too.
        os.set_blocking(self._pf_status_w, False)
        os.set_blocking(self._pf_status_r, False)
        reactor.watch(_Fd(self._pf_status_r), selectors.EVENT_READ, self._pf_on_status)

    def _pf_close_master_channels(self) -> None:
        for fd in (self._pf_status_r, self._pf_status_w, self._pf_alive_r, self._pf_alive_w):
            if fd != -1:
                os.close(fd)
        self._pf_status_r = self._pf_status_w = self._pf_alive_r = self._pf_alive_w = -1
        for worker in self._pf_workers.values():
            self._pf_forget(worker)
        self._pf_workers.clear()
        if self._pf_upgrade_to is not None and self._pf_upgrade_to[1] != -1:
            os.close(self._pf_upgrade_to[1])
        self._pf_upgrade_to = None

    def _pf_keep_workers(self) -> None:
        """Start workers up to the target; stop the oldest beyond it (SIGTTOU)."""
        active = [w for w in self._pf_workers.values() if w.leave_deadline is None]
        excess = len(active) - self._pf_target - (1 if self._pf_rolling_new is not None else 0)
        for worker in active[:max(0, excess)]:
            self._pf_stop_worker(worker, signal.SIGTERM, self.graceful_timeout)
        if time.monotonic() < self._pf_respawn_after:
            return
        for _ in range(self._pf_target - len(active)):
            self._pf_spawn()
        if self._pf_rolling and self._pf_rolling_new is None:
            self._pf_rolling_new = self._pf_spawn()

    def _pf_spawn(self) -> int:
        """Fork one worker; returns its pid (master)."""
        heartbeat = mmap.mmap(-1, _BEAT.size)  # anonymous and shared: the worker writes it
        everything = signal.valid_signals()
        # Blocked around fork(): a signal for the master that arrived in the
        # child before it resets the handlers would run the master's handler
        # there (queuing it in the child's copy), and be lost to the master.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, everything)
        try:
            pid = os.fork()
            if pid == 0:
                self._pf_worker_main(heartbeat, previous)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        worker = self._pf_workers[pid] = _Worker(pid, heartbeat)
        self._pf_watch_exit(worker)
        active = sum(w.leave_deadline is None for w in self._pf_workers.values())
        logger.info("prefork: worker %d started (%d of %d)", pid, active, self._pf_target)
        self.worker_started(pid)
        return pid

    def _pf_watch_exit(self, worker: _Worker) -> None:
        """Have the master's loop reap ``worker`` the moment it exits (a pidfd), if it can."""
        if not _HAVE_PIDFD or self._reactor is None:
            return  # the tick reaps
        try:
            watch = _Fd(os.pidfd_open(worker.pid))
        except OSError:  # ENOSYS: before Linux 5.3; the tick reaps
            return
        worker.exit_watch = watch
        self._reactor.watch(watch, selectors.EVENT_READ, lambda mask: self._pf_reap())

    def _pf_forget(self, worker: _Worker) -> None:
        """Release what the master held for ``worker`` (reaped)."""
        if worker.exit_watch is not None:
            if self._reactor is not None:
                self._reactor.unwatch(worker.exit_watch)
            os.close(worker.exit_watch.fd)
            worker.exit_watch = None
        worker.heartbeat.close()

    def _pf_reap(self) -> None:
        """waitpid(WNOHANG) each worker; log, forget, and let the loop replace it."""
        for pid, worker in list(self._pf_workers.items()):
            try:
                exited, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                exited, status = pid, 0  # reaped by someone else
            if not exited:
                continue
            del self._pf_workers[pid]
            self._pf_forget(worker)
            if pid in self._pf_rolling:
                self._pf_rolling.remove(pid)
            if pid == self._pf_rolling_new:
                self._pf_rolling_new = None  # died before serving: the loop forks another
            how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"status {os.waitstatus_to_exitcode(status)}")
            replaced = self._pf_stopping is None and worker.leave_deadline is None
            if replaced and not worker.serving:
                self._pf_respawn_after = time.monotonic() + _RESPAWN_DELAY
            logger.info("prefork: worker %d exited (%s)%s", pid, how,
                        ", replacing it" if replaced else "")
            self.worker_exited(pid, status)

    def _pf_on_status(self, mask: int) -> None:
        """Reactor callback: messages from the workers on the status pipe."""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self._pf_status_r, 4096):
                self._pf_status_buffer += chunk
        buffer = self._pf_status_buffer
        while len(buffer) >= _MESSAGE.size:
            code, pid = _MESSAGE.unpack_from(buffer, 0)
            del buffer[:_MESSAGE.size]
            worker = self._pf_workers.get(pid)
            if worker is None:
                continue
            if code == _READY:
                self._pf_worker_serves(worker)
            elif code == _LEAVING and worker.leave_deadline is None:
                worker.leave_deadline = time.monotonic() + self.graceful_timeout

    def _pf_worker_serves(self, worker: _Worker) -> None:
        """A worker's loop watches the listener: go on with a restart or an upgrade."""
        worker.serving = True
        logger.debug("prefork: worker %d serves", worker.pid)
        if worker.pid == self._pf_rolling_new:
            self._pf_rolling_new = None
            while self._pf_rolling:
                old = self._pf_workers.get(self._pf_rolling.pop(0))
                if old is not None and old.leave_deadline is None:
                    self._pf_stop_worker(old, signal.SIGTERM, self.graceful_timeout)
                    break
            if not self._pf_rolling:
                logger.info("prefork: rolling restart done")
        if self._pf_upgrade_from is not None:
            logger.info("prefork: upgrade: serving; stopping the old master %d",
                        self._pf_upgrade_from)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pf_upgrade_from, signal.SIGTERM)
            self._pf_upgrade_from = None

    def _pf_stop_worker(self, worker: _Worker, signum: int, timeout: float) -> None:
        """Tell ``worker`` to leave (SIGTERM: gracefully); SIGKILL it after ``timeout``."""
        if worker.leave_deadline is None:
            worker.leave_deadline = time.monotonic() + timeout
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker.pid, signum)

    def _pf_stop(self, why: str, signum: int, timeout: float) -> None:
        """Stop the whole group: every worker gets ``signum``, SIGKILL after ``timeout``."""
        logger.info("prefork: %s: %d workers", why, len(self._pf_workers))
        self._pf_stopping = (time.monotonic() + timeout, signum)
        self._pf_cut = 0
        self._pf_rolling.clear()
        for worker in self._pf_workers.values():
            worker.leave_deadline = None  # the group's deadline replaces its own
            self._pf_stop_worker(worker, signum, timeout)

    def _pf_check_deadlines(self) -> None:
        """SIGKILL each worker past its deadline, or silent for ``worker_timeout``."""
        now = time.monotonic()
        for worker in self._pf_workers.values():
            if worker.killed:
                continue
            if worker.leave_deadline is not None:
                late = now > worker.leave_deadline + getattr(self, "drain_grace", 0.0) \
                    + _CUT_MARGIN
                reason = "still draining at its deadline"
            else:
                silence = now - worker.last_beat()
                late = self.worker_timeout is not None and silence > self.worker_timeout
                reason = f"silent for {silence:.1f} s (worker_timeout)"
            if late:
                logger.info("prefork: worker %d %s, killing it", worker.pid, reason)
                worker.killed = True
                if self._pf_stopping is not None:
                    self._pf_cut += 1
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGKILL)

    def _pf_act_on_signals(self) -> None:
        """Act on the signals the handlers queued, in order (the master's loop)."""
        while self._pf_signals:
            signum = self._pf_signals.pop(0)
            if self._pf_stopping is not None:
                # Stopping: nothing new starts, but a Ctrl-C during a
                # graceful stop makes it a fast one.
                if signum in (signal.SIGINT, signal.SIGQUIT) \
                        and self._pf_stopping[1] == signal.SIGTERM:
                    self._pf_stop(f"fast stop ({signal.Signals(signum).name})",
                                  signal.SIGQUIT, self.graceful_timeout)
                continue
            if signum == signal.SIGTERM:
                self._pf_stop("graceful stop (SIGTERM)", signal.SIGTERM, self.graceful_timeout)
            elif signum in (signal.SIGINT, signal.SIGQUIT):
                self._pf_stop(f"fast stop ({signal.Signals(signum).name})", signal.SIGQUIT,
                              self.graceful_timeout)
            elif signum == signal.SIGHUP:
                old = [w.pid for w in self._pf_workers.values() if w.leave_deadline is None]
                logger.info("prefork: rolling restart (SIGHUP): %d workers to replace", len(old))
                self._pf_rolling = old
            elif signum == signal.SIGTTIN:
                self._pf_target += 1
                logger.info("prefork: one worker more (SIGTTIN): %d workers", self._pf_target)
            elif signum == signal.SIGTTOU:
                self._pf_target = max(1, self._pf_target - 1)
                logger.info("prefork: one worker less (SIGTTOU): %d workers", self._pf_target)
            elif signum == signal.SIGUSR2:
                self._pf_upgrade()

    # -- shutdown(), drain(), server_close() for the group -------------------

    def drain(self, timeout: float) -> int:
        """Stop the group, giving each worker ``timeout`` seconds to drain; SIGKILL the rest.

        In the master (from another thread, while ``serve_forever()``
        runs): returns how many workers had to be killed.  In a worker: the
        model's own ``drain()``.
        """
        if self._pf_role == "master":
            self._pf_drain_timeout = timeout
            self.shutdown()
            return self._pf_cut
        return super().drain(timeout)

    # -- SIGUSR2: re-exec with the listener passed on -------------------------

    def _pf_take_upgrade_variable(self) -> None:
        """Remember the old master to stop, if this process is an upgrade's new master."""
        value = os.environ.pop(_UPGRADE_VARIABLE, "")
        old, _, new = value.partition(":")
        if old.isdigit() and new == str(os.getpid()):
            self._pf_upgrade_from = int(old)

    def _pf_upgrade(self) -> None:
        """SIGUSR2: start the new master, a grandchild, with the listener at descriptor 3."""
        if self._pf_upgrade_to is not None and self._pf_upgrade_running():
            logger.warning("prefork: upgrade (SIGUSR2) ignored: new master %d is starting",
                           self._pf_upgrade_to[0])
            return
        old_master = os.getpid()
        # The middle process tells the new master's pid on this pipe.
        told, tell = os.pipe()
        everything = signal.valid_signals()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, everything)
        try:
            middle = os.fork()
            if middle == 0:
                os.close(told)
                self._pf_exec_new_master(old_master, previous, tell)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
            os.close(tell)
        # The middle process forks the new master and exits at once, so
        # this wait is short; the new master is then nobody's child here.
        _, status = os.waitpid(middle, 0)
        with open(told, "rb") as pipe:
            said = pipe.read(_PID.size)
        if os.waitstatus_to_exitcode(status) != 0 or len(said) != _PID.size:
            logger.warning("prefork: upgrade (SIGUSR2) failed to fork the new master")
            return
        (new_master,) = _PID.unpack(said)
        logger.info("prefork: upgrade (SIGUSR2): new master %d started, argv %s",
                    new_master, _argv())
        self._pf_upgrade_to = (new_master, -1)
        with contextlib.suppress(OSError):  # ENOSYS, ESRCH: _pf_upgrade_running() looks
            if _HAVE_PIDFD and self._reactor is not None:
                watch = _Fd(os.pidfd_open(new_master))
                self._pf_upgrade_to = (new_master, watch.fd)
                self._reactor.watch(watch, selectors.EVENT_READ, self._pf_on_new_master_exit)

    def _pf_on_new_master_exit(self, mask: int) -> None:
        """Reactor callback: the new master of a SIGUSR2 exited (its pidfd is readable)."""
        self._pf_upgrade_running()

    def _pf_upgrade_running(self) -> bool:
        """Whether the new master of the last SIGUSR2 still runs; if not, say so and forget it.

        Called on a second SIGUSR2, and by the loop when the new master's
        pidfd turns readable (it exited: it never stopped us, so the
        upgrade failed and this master serves on).  Not our child: no wait.
        """
        assert self._pf_upgrade_to is not None
        pid, fd = self._pf_upgrade_to
        if fd != -1:
            running = not select.select([fd], [], [], 0)[0]
        else:
            try:
                os.kill(pid, 0)
                running = True
            except ProcessLookupError:
                running = False
        if running:
            return True
        if fd != -1:
            if self._reactor is not None:
                self._reactor.unwatch(_Fd(fd))
            os.close(fd)
        self._pf_upgrade_to = None
        if self._pf_stopping is None:
            logger.warning("prefork: upgrade (SIGUSR2) failed: new master %d exited before "
                           "it served; this master serves on", pid)
        return False

    def _pf_exec_new_master(
        self, old_master: int, mask: set[int | signal.Signals], tell: int
    ) -> NoReturn:
        """In the middle process: fork the new master, which execs the program."""
        try:
            new_master = os.fork()
            if new_master != 0:
                os.write(tell, _PID.pack(new_master))
                os._exit(0)
            os.close(tell)
            signal.set_wakeup_fd(-1)
            for signum in _MASTER_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            os.dup2(self.socket.fileno(), SD_LISTEN_FDS_START)
            os.set_inheritable(SD_LISTEN_FDS_START, True)
            environment = dict(os.environ)
            environment.update({
                "LISTEN_FDS": "1",
                "LISTEN_PID": str(os.getpid()),
                "LISTEN_FDNAMES": LISTEN_NAME,
                _UPGRADE_VARIABLE: f"{old_master}:{os.getpid()}",
            })
            # Unblocked at the last moment: a signal now is for this
            # process (nobody knows its pid yet), and kills it by default.
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.execve(sys.executable, _argv(), environment)
        except BaseException:
            traceback.print_exc()
        os._exit(1)

    # -- the worker ----------------------------------------------------------

    def _pf_worker_main(self, heartbeat: mmap.mmap, mask: set[int | signal.Signals]) -> NoReturn:
        """The worker's whole life, right after fork(); never returns into the master's loop."""
        status = 1
        try:
            self._pf_become_worker(heartbeat, mask)
            self.worker_init()
            super().serve_forever()
            # Stopped (SIGTERM, max_requests, the master gone): the loop no
            # longer accepts; the requests in flight get their time.  Logged
            # here, not in the signal handler: a handler that logs could
            # land inside a log call of the same thread.
            logger.info("prefork: worker %d: stopping (%s), draining for up to %.1f s",
                        os.getpid(), self._pf_stop_reason, self._pf_worker_drain)
            self.drain(self._pf_worker_drain)
            self.server_close()
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)

    def _pf_become_worker(self, heartbeat: mmap.mmap, mask: set[int | signal.Signals]) -> None:
        """Shed the master's state in a new worker, set its signals, then unblock them."""
        master_reactor = self._reactor
        self._reactor = None
        self._pf_role = "worker"
        self._pf_worker_pid = os.getpid()
        self._pf_heartbeat = heartbeat
        # The master's wake-up descriptor is inherited as the signal wake-up
        # fd: a signal here would wake the master's loop.
        signal.set_wakeup_fd(-1)
        for signum in _MASTER_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, self._pf_worker_signal)
        signal.signal(signal.SIGINT, self._pf_worker_signal)
        signal.signal(signal.SIGQUIT, self._pf_worker_signal)
        if master_reactor is not None:
            master_reactor.close()  # its epoll instance and wake-up pair are the master's
        for other in self._pf_workers.values():
            if other.exit_watch is not None:
                os.close(other.exit_watch.fd)
            other.heartbeat.close()
        self._pf_workers = {}
        if self._pf_upgrade_to is not None and self._pf_upgrade_to[1] != -1:
            os.close(self._pf_upgrade_to[1])
        self._pf_upgrade_to = None
        os.close(self._pf_alive_w)  # only the master may hold it: EOF = master gone
        os.close(self._pf_status_r)
        self._pf_alive_w = self._pf_status_r = -1
        self._shutdown_requested = False
        self._serving_thread = None
        self._pf_worker_drain = self.graceful_timeout
        limit = self.max_requests
        if limit:
            limit += random.randint(0, self.max_requests_jitter)
        self._pf_requests_left = limit
        if self.reuse_port:
            self._pf_bind_own_listener()
        elif _EXCLUSIVE and self.selector_class in (
            selectors.PollSelector, selectors.EpollSelector, selectors.DefaultSelector
        ):
            self.selector_class = _exclusive_selector(self.socket.fileno())
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _pf_bind_own_listener(self) -> None:
        """``reuse_port``: a listener of this worker's own on the master's address."""
        own = socket.socket(self.address_family, self.socket_type)
        try:
            own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if self.address_family == socket.AF_INET6:
                v6only = self.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
                own.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
            own.bind(self.server_address)
            own.listen(self.request_queue_size)
            own.setblocking(False)
        except BaseException:
            own.close()
            raise
        self.socket.close()  # the master's copy, bound only
        self.socket = own

    def _pf_worker_signal(self, signum: int, frame: Any) -> None:
        """A worker's SIGTERM (graceful), SIGINT or SIGQUIT (fast): stop the loop.

        SIGTERM leaves through ``_pf_leave``, on the loop's thread, at the
        end of the loop's current iteration; a fast stop ends the loop as is.
        """
        if os.getpid() != self._pf_worker_pid:
            # A process the worker forked (ForkingMixIn's child for a
            # request) inherits this handler, but not the worker's loop: it
            # takes the signal as the default says (it leaves).
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        reason = signal.Signals(signum).name
        reactor = self._reactor
        if signum == signal.SIGTERM and reactor is not None:
            reactor.call_soon_threadsafe(lambda: self._pf_leave(reason))
            return
        if signum != signal.SIGTERM:
            self._pf_worker_drain = 0.0
        self._pf_worker_stop(reason)

    def _pf_leave(self, reason: str) -> None:
        """Stop accepting without stranding a connection, then end the loop (loop thread).

        With EPOLLEXCLUSIVE the kernel wakes one worker per connection.  A
        worker that was woken, then left without accepting, would leave that
        connection in the shared queue with nobody woken for it: under a
        sequential client it waits until the next connection arrives (a
        client timeout in ``python -m pytest tests/test_prefork.py -k
        sigusr2`` before this was done).  So the listener is
        unwatched first (out of the kernel's wait queue: later connections
        wake the other workers), and what is already queued is accepted
        here, to be drained with the rest.
        """
        if self._shutdown_requested or "leaving" in self._accept_pauses:
            return
        self._pause_accepting("leaving")
        # Bounded: under a flood the other workers take their share too.
        for _ in range(self.request_queue_size):
            if self.fileno() == -1 or not self._handle_request_noblock():
                break
        self._pf_leave_when_idle(reason, time.monotonic() + self._pf_worker_drain)

    def _pf_leave_when_idle(self, reason: str, deadline: float) -> None:
        """End the loop once no connection waits in a stage the loop drives (loop thread).

        The admission stage (TLS's ClientHello, a PROXY header) and the
        multiplexing model's TLS handshakes hold new connections in the
        loop itself, and close them when the loop ends: ``drain()`` only
        waits for requests a model took over.  So the loop, no longer
        accepting, runs on until they have moved on (or ``deadline``),
        looking every ``_IDLE_CHECK`` seconds: their tables are the other
        mixins' own, with no event to wait on.
        """
        held = len(getattr(self, "_waiting", None) or ()) + len(
            getattr(self, "_handshaking", None) or ())
        reactor = self._reactor
        if held and reactor is not None and time.monotonic() < deadline:
            reactor.call_later(_IDLE_CHECK, lambda: self._pf_leave_when_idle(reason, deadline))
        else:
            self._pf_worker_stop(reason)

    # Why the worker's loop ended, for its last log line.
    _pf_stop_reason = "shutdown()"

    def _pf_worker_stop(self, reason: str) -> None:
        """End the worker's loop after this iteration (its own thread: no shutdown() wait)."""
        self._pf_stop_reason = reason
        self._shutdown_requested = True
        if self._reactor is not None:
            self._reactor.wake()

    def _attach(self, reactor: Reactor) -> None:
        """In a worker: watch the listener, the master's life; beat; tell the master it serves."""
        super()._attach(reactor)
        if self._pf_role != "worker":
            return
        reactor.watch(_Fd(self._pf_alive_r), selectors.EVENT_READ, self._pf_on_master_gone)
        if self.worker_timeout is not None:
            interval = min(max(self.worker_timeout / 4, 0.01), 5.0)

            def beat() -> None:
                _BEAT.pack_into(self._pf_heartbeat, 0, time.monotonic())
                reactor.call_later(interval, beat)

            beat()
        self._pf_tell_master(_READY)

    def _pf_tell_master(self, code: bytes) -> None:
        # BlockingIOError: the pipe is full, the master is not reading; it
        # sees this worker by its heartbeat and exit anyway.
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(self._pf_status_w, _MESSAGE.pack(code, os.getpid()))

    def _pf_on_master_gone(self, mask: int) -> None:
        """Reactor callback in a worker: EOF on the alive pipe, the master died; leave."""
        if self._reactor is not None:
            self._reactor.unwatch(_Fd(self._pf_alive_r))
        self._pf_leave("the master is gone")

    def process_request(self, request: Any, client_address: Any) -> None:
        """Called by a worker's loop for each request: the model's, then count for max_requests.

        MultiplexingTLSServer calls it twice per connection: with the
        accepted socket (its handshake starts), then with the
        ``TLSTransport`` once the handshake is done; only the socket counts.
        """
        super().process_request(request, client_address)
        if self._pf_requests_left and isinstance(request, socket.socket):
            self._pf_requests_left -= 1
            if not self._pf_requests_left:
                logger.info("prefork: worker %d: max_requests reached, leaving", os.getpid())
                self._pf_tell_master(_LEAVING)
                if self._reactor is not None:
                    # Not from inside process_request: _pf_leave accepts.
                    self._reactor.call_soon_threadsafe(lambda: self._pf_leave("max_requests"))
                else:
                    self._pf_worker_stop("max_requests")


def _argv() -> list[str]:
    """The program's command line to re-execute, with this interpreter."""
    original = getattr(sys, "orig_argv", None)  # 3.10+: the interpreter's own options too
    if original:
        return [sys.executable, *original[1:]]
    return [sys.executable, *sys.argv]
