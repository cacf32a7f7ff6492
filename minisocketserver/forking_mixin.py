"""ForkingMixIn: one child process per request (POSIX only).

Design map, part 4 of 6 (the concurrency models).  Like ``ThreadingMixIn`` it overrides
``process_request``, but the request runs in a forked child, which shares
nothing with the loop afterwards: a crash, a leak or a blocking call in a
handler cannot touch the server::

    parent (loop):  accept -> process_request: fork() -> close its copy of the
                    connection -> watch the child's pidfd -> back to select
                    ... the pidfd turns readable -> collect_children(): waitpid()
    child:          finish_request -> handler -> shutdown_request -> os._exit(0 or 1)

Resource handling: after ``fork()`` both processes hold the connection; the
parent closes its copy at once so that the client sees EOF when the child
closes the last one.  The child never returns into the parent's loop: every
path out of it, ``SystemExit`` and ``KeyboardInterrupt`` included, ends in
``os._exit``, which also skips the parent's ``atexit`` handlers and buffered
output that the child inherited.

Reaping: a child that exits stays a zombie until ``waitpid()``.  While a loop
serves, each child has a pidfd (Linux 5.3+) watched by the reactor: it turns
readable when the child exits, and the loop reaps the child at once.
``service_actions()`` reaps too, every ``poll_interval`` (forking makes the
loop periodic), which is all the reaping there is where pidfds are missing.
At ``max_children`` the loop stops accepting, so new clients wait in the
kernel's backlog, and it accepts again when a reap brings the count below
the limit; while paused there, a timer reaps too (``_REAP_RETRY``) and
re-checks the count after each reap, so the accepts resume whoever reaped (a
stdlib-style subclass's own ``collect_children()``).  ``handle_timeout()``
reaps for a server driven by ``handle_request()``; ``server_close()`` reaps
the rest, waiting for them if ``block_on_close``; ``drain()`` sends SIGTERM
to the children that outlive its deadline, and SIGKILL to those still there
``drain_grace`` seconds later.  The pidfds live as long as the loop: a
child's is closed when it is reaped, and all of them when the loop lets the
server go.

Where we differ from stdlib: its loop waits in ``waitpid()`` while
``max_children`` children run, so ``shutdown()`` waits for a child to end,
and so do the other servers of the loop.  Here the loop never blocks on a
child.  Without a loop (``handle_request()``), ``collect_children()`` still
waits at the limit, as stdlib's does: there is no loop to go back to.
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import signal
import socket
import time
from collections.abc import Iterable
from typing import Any, NoReturn

from .reactor import Reactor, Timer
from .server import MixInBase, refuse_stdlib_base
from .sockets import TCPServer, UDPServer
from .threading_mixin import DRAIN_GRACE

# Where pidfds are missing (macOS, the BSDs, Linux before 5.3: pidfd_open
# then fails with ENOSYS), the loop learns of an exit only in its periodic
# service_actions(), up to poll_interval late.  That wake-up exists anyway,
# so it is the simplest correct fallback.  SIGCHLD was the alternative: but
# a handler is process-wide (it would replace the program's own, and reap
# children of subprocess or of another server), and only the main thread
# may route signals to the wake-up channel.
_HAVE_PIDFD = hasattr(os, "pidfd_open")

#: Seconds between the loop's reaps while it is paused at ``max_children``.
#: Short, because clients wait in the backlog meanwhile; a reap is one
#: waitpid(WNOHANG) per child, so 20 a second cost nothing.  Only while paused.
_REAP_RETRY = 0.05


def _wait_for_any_exit(pids: set[int], timeout: float) -> None:
    """Block until one of ``pids`` exits or ``timeout`` passes (it may return early).

    Called by ``drain()``, once the loop has stopped.  waitpid() cannot
    wait with a timeout; a pidfd turns a child's exit into a readable
    descriptor that poll() can wait on.  Elsewhere, fall back to a short
    nap between waitpid(WNOHANG) rounds.
    """
    if not _HAVE_PIDFD:
        time.sleep(min(timeout, 0.01))
        return
    fds: list[int] = []
    try:
        poller = select.poll()  # not select(): a pidfd may be numbered past 1023
        for pid in pids:
            # ESRCH: reaped already; ENOSYS: a kernel older than 5.3.
            with contextlib.suppress(OSError):
                # extend(map()) stores the descriptor inside the C call that
                # opens it: no signal handler (KeyboardInterrupt) can run
                # in between and leak it (as in Reactor.signals_wake).
                fds.extend(map(os.pidfd_open, (pid,)))
                poller.register(fds[-1], select.POLLIN)
        if fds:
            poller.poll(timeout * 1000)
        else:
            time.sleep(min(timeout, 0.01))
    finally:
        for fd in fds:
            os.close(fd)


def _signal(pids: Iterable[int], signum: int) -> None:
    """Send ``signum`` to each of ``pids`` that has not exited yet."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


class _ChildExit:
    """A child's pidfd as the reactor watches it: readable once the child has exited."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


class ForkingMixIn(MixInBase):
    """Handle each request in a new child process.

    Class variables:
        max_children     at most this many children at once; at the limit
                         the loop stops accepting until one exits
                         (default 40).
        timeout          ``handle_request()`` wait, so that a server driven
                         by ``handle_request()`` still reaps (default 300 s).
        block_on_close   ``server_close()`` waits for running children.
        drain_grace      seconds ``drain()`` gives a child after SIGTERM,
                         before SIGKILL.

    Instance variables:
        active_children  set of child PIDs not yet reaped (``None`` before
                         the first fork).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse, as the class statement runs, a mix with stdlib's server classes.

        See ``server.refuse_stdlib_base``: our mixin on stdlib's
        ``TCPServer`` (``http.server`` imported stdlib's) cannot work.
        """
        super().__init_subclass__(**kwargs)
        refuse_stdlib_base(cls, ForkingMixIn)

    timeout: float | None = 300
    #: PIDs of the children not yet reaped; ``None`` until the first fork.
    active_children: set[int] | None = None
    #: Run no more than this many children at once: at the limit the loop
    #: stops accepting until one of them is reaped.
    max_children: int = 40
    #: Make ``server_close()`` wait until every child has exited.
    block_on_close: bool = True
    #: Seconds ``drain()`` waits for the children it sent SIGTERM to before
    #: it sends SIGKILL: a handler may ignore SIGTERM, and drain() must
    #: still return.
    drain_grace: float = DRAIN_GRACE
    # PID -> its pidfd, watched by the loop, for each child not yet reaped.
    # Filled only while a loop serves (_attach, process_request) and emptied
    # when it lets the server go (_serving_ended), so without a loop there
    # is none.  Like active_children it belongs to whichever thread drives
    # the server (the loop's; the caller of drain() or server_close() once
    # it has stopped): no lock.
    _exit_watches: dict[int, _ChildExit] | None = None
    # The loop's timer that reaps while paused at max_children (see
    # _pause_at_child_limit); loop thread only.
    _reap_timer: Timer | None = None

    def collect_children(self, *, blocking: bool = False) -> None:
        """Reap children that have exited; wait for them too if ``blocking``.

        Called by the loop when a child exits and in ``service_actions()``,
        by ``handle_timeout()`` and by ``server_close()``.  Under a loop it
        never waits unless ``blocking``: the loop has stopped accepting at
        ``max_children`` instead, and accepts again here once a child is
        reaped.  Without a loop (``handle_request()`` drives the server)
        it waits at the limit until some child exits, as stdlib does.
        """
        children = self.active_children
        if children is None:
            return
        if self._reactor is None:
            self._wait_below_limit(children)
        self._reap(children, blocking=blocking)
        self._resume_below_child_limit()

    def _pause_at_child_limit(self) -> None:
        """Stop accepting at ``max_children``, and reap on a timer until below it (loop thread).

        Called by ``process_request`` and ``_attach``.  The timer is what
        resumes accepting whoever reaps: without pidfds the only other
        reaper is ``service_actions()``, and a subclass written for stdlib
        may override it, or ``collect_children()``, without ``super()``
        (then nothing of ours would ever resume the accepts).
        """
        self._pause_accepting("max_children")
        reactor = self._reactor
        if reactor is not None and self._reap_timer is None:
            self._reap_timer = reactor.call_later(_REAP_RETRY, self._on_reap_timer)

    def _on_reap_timer(self) -> None:
        """The loop's timer while paused at ``max_children``: reap, then look again."""
        self._reap_timer = None
        self.collect_children()
        self._resume_below_child_limit()
        if "max_children" in self._accept_pauses and self._reactor is not None:
            self._reap_timer = self._reactor.call_later(_REAP_RETRY, self._on_reap_timer)

    def _resume_below_child_limit(self) -> None:
        """Accept again once fewer than ``max_children`` are left, however they were reaped.

        Called on the loop's thread after each ``collect_children()`` the
        loop makes (and by ours): it re-checks the count, so a
        ``collect_children()`` overridden without ``super()`` resumes too.
        """
        if self._reactor is None or len(self.active_children or ()) >= self.max_children:
            return
        self._cancel_reap_timer()
        self._resume_accepting("max_children")

    def _cancel_reap_timer(self) -> None:
        if self._reap_timer is not None:
            self._reap_timer.cancel()
            self._reap_timer = None

    def _wait_below_limit(self, children: set[int]) -> None:
        # waitpid(-1) waits for *any* child, as stdlib does; a PID that is
        # not ours is simply not in the set.
        while len(children) >= self.max_children:
            try:
                exited, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                children.clear()  # ECHILD: no child is left to wait for
            except OSError:
                break
            else:
                children.discard(exited)

    def _reap(self, children: set[int], *, blocking: bool) -> None:
        """Reap (``blocking``: wait for) each of ``children``, and close its pidfd."""
        flags = 0 if blocking else os.WNOHANG
        for pid in list(children):
            try:
                exited, _ = os.waitpid(pid, flags)
            except ChildProcessError:
                exited = pid  # reaped by someone else (e.g. a SIGCHLD handler)
            if exited:
                children.discard(pid)
                self._unwatch_exit(pid)

    def handle_timeout(self) -> None:
        """``handle_request()`` timed out: a good moment to reap."""
        self.collect_children()

    def service_actions(self) -> None:
        """Called by the loop every iteration: reap exited children."""
        self.collect_children()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Called by the loop for each verified request: fork a child for it."""
        pid = os.fork()
        if pid == 0:
            self._run_child(request, client_address)
        if self.active_children is None:
            self.active_children = set()
        self.active_children.add(pid)
        # The child has its own copy of the connection now.
        self.close_request(request)
        reactor = self._reactor
        if reactor is not None:
            self._watch_exit(reactor, pid)
            if len(self.active_children) >= self.max_children:
                self._pause_at_child_limit()

    def _run_child(self, request: Any, client_address: Any) -> NoReturn:
        """The child's whole life: handle the request, then leave for good.

        Exit status 0 when the handler returned, 1 when it raised.
        """
        failed = True
        try:
            self.finish_request(request, client_address)
            failed = False
        except Exception:
            self.handle_error(request, client_address)
        finally:
            try:
                self.shutdown_request(request)
            finally:
                os._exit(1 if failed else 0)

    # -- the loop watches each child's exit -----------------------------

    def _watch_exit(self, reactor: Reactor, pid: int) -> None:
        """Have ``reactor`` reap child ``pid`` as soon as it exits, if a pidfd allows."""
        if not _HAVE_PIDFD:
            return
        if self._exit_watches is None:
            self._exit_watches = {}
        watches = self._exit_watches
        # The pidfd is owned by ``opened`` until _exit_watches holds it (then
        # _unwatch_exit or _serving_ended closes it).  An interrupt can land
        # at any bytecode in between (Ctrl-C on the loop's thread), so the
        # finally asks who owns it rather than trusting a flag: a number
        # nobody owns is closed, one the table owns is never closed twice.
        opened: list[int] = []
        try:
            # extend(map()) stores the descriptor inside the C call that
            # opens it, so that no bytecode runs while only a local holds it.
            opened.extend(map(os.pidfd_open, (pid,)))
            watches[pid] = _ChildExit(opened[0])
        except OSError:
            # ENOSYS (a kernel older than 5.3), EMFILE, or ESRCH (reaped by
            # someone else): service_actions() will reap or forget it.
            return
        finally:
            owner = watches.get(pid)
            if opened and (owner is None or owner.fd != opened[0]):
                os.close(opened[0])

        def _on_child_exit(mask: int) -> None:
            """Reactor callback: the child has exited (its pidfd is readable)."""
            self.collect_children()
            # A pidfd stays readable after its child has exited.  Were the
            # child not reaped (a collect_children() overridden to leave
            # it), the loop would spin on it: stop watching anyway.
            self._unwatch_exit(pid)
            # collect_children() may be a subclass's, written for stdlib,
            # that reaps without resuming the accepts our own resumes.
            self._resume_below_child_limit()

        try:
            reactor.watch(watches[pid], selectors.EVENT_READ, _on_child_exit)
        except ValueError:  # numbered past select()'s FD_SETSIZE
            self._unwatch_exit(pid)

    def _unwatch_exit(self, pid: int) -> None:
        """Stop watching child ``pid``'s exit and close its pidfd (if it has one)."""
        watch = self._exit_watches.pop(pid, None) if self._exit_watches else None
        if watch is None:
            return
        if self._reactor is not None:
            self._reactor.unwatch(watch)
        os.close(watch.fd)

    def _attach(self, reactor: Reactor) -> None:
        """Watch the listener and each child still running (a loop may be restarted).

        Children of an earlier loop that fill ``max_children`` keep the
        new loop from accepting until one of them is reaped.
        """
        super()._attach(reactor)
        children = self.active_children or set()
        for pid in children:
            self._watch_exit(reactor, pid)
        if len(children) >= self.max_children:
            self._pause_at_child_limit()

    def _detach(self, reactor: Reactor) -> None:
        """Stop watching the listener and the children (the loop serves other servers on)."""
        super()._detach(reactor)
        for watch in (self._exit_watches or {}).values():
            reactor.unwatch(watch)

    def _serving_ended(self) -> None:
        """Called by ``serve_loop()`` when it lets the server go: close the pidfds.

        The reap timer is cancelled, not just forgotten: in a ``ServerGroup``
        the loop goes on without this server.
        """
        self._cancel_reap_timer()
        watches = self._exit_watches or {}
        while watches:
            _, watch = watches.popitem()
            os.close(watch.fd)
        super()._serving_ended()

    # -- drain() ----------------------------------------------------------

    def _wait_for_requests(self, deadline: float) -> bool:
        """Called by ``drain()``: reap children as they exit, until none or ``deadline``.

        Reaps with ``_reap`` rather than ``collect_children()``, which
        would wait at ``max_children`` with no regard for the deadline.
        """
        children = self.active_children
        if children is None:
            return True
        while True:
            self._reap(children, blocking=False)
            remaining = deadline - time.monotonic()
            if not children or remaining <= 0:
                return not children
            _wait_for_any_exit(children, remaining)

    def _cut_requests(self) -> int:
        """Called by ``drain()``: SIGTERM the remaining children, then SIGKILL the survivors.

        Each child gets ``drain_grace`` seconds to end after SIGTERM; one
        that ignores it (or is stopped) is killed, which it cannot ignore,
        so the wait for it to be reaped that follows is short.
        """
        children = self.active_children
        if not children:
            return 0
        cut = len(children)
        _signal(children, signal.SIGTERM)
        if not self._wait_for_requests(time.monotonic() + self.drain_grace):
            _signal(children, signal.SIGKILL)
            self._reap(children, blocking=True)
        return cut

    def server_close(self) -> None:
        """Close the listening socket, then reap (and with ``block_on_close`` await) children."""
        super().server_close()
        self.collect_children(blocking=self.block_on_close)


class ForkingUDPServer(ForkingMixIn, UDPServer):
    """A datagram server that handles each datagram in a child process."""


class ForkingTCPServer(ForkingMixIn, TCPServer):
    """A stream server that handles each connection in a child process."""


if hasattr(socket, "AF_UNIX"):
    from .sockets import UnixDatagramServer, UnixStreamServer

    class ForkingUnixStreamServer(ForkingMixIn, UnixStreamServer):
        """A Unix-domain stream server with a child process per connection."""

    class ForkingUnixDatagramServer(ForkingMixIn, UnixDatagramServer):
        """A Unix-domain datagram server with a child process per datagram."""
