"""ForkingMixIn: one child process per request (POSIX only).

Design map, part 5 of 6.  Like ``ThreadingMixIn`` it overrides
``process_request``, but the request runs in a forked child, which shares
nothing with the loop afterwards: a crash, a leak or a blocking call in a
handler cannot touch the server::

    parent (loop):  accept -> process_request: fork() -> close its copy of the
                    connection -> back to select; service_actions() reaps children
    child:          finish_request -> handler -> shutdown_request -> os._exit(0 or 1)

Resource handling: after ``fork()`` both processes hold the connection; the
parent closes its copy at once so that the client sees EOF when the child
closes the last one.  The child never returns into the parent's loop: every
path out of it, ``SystemExit`` and ``KeyboardInterrupt`` included, ends in
``os._exit``, which also skips the parent's ``atexit`` handlers and buffered
output that the child inherited.

Reaping: a child that exits stays a zombie until ``waitpid()``.  The loop
reaps in ``service_actions()`` (every ``poll_interval`` while forking) and
``handle_timeout()``; ``server_close()`` reaps the rest, waiting for them if
``block_on_close``.  When ``max_children`` are running, ``service_actions()``
blocks until one exits, so the loop forks no more.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from typing import Any, NoReturn

from .server import MixInBase
from .sockets import TCPServer, UDPServer


def _wait_for_any_exit(pids: set[int], timeout: float) -> None:
    """Block until one of ``pids`` exits or ``timeout`` passes (it may return early).

    waitpid() cannot wait with a timeout; a pidfd (Linux 5.3+) turns a
    child's exit into a readable descriptor that poll() can wait on.
    Elsewhere, fall back to a short nap between waitpid(WNOHANG) rounds.
    """
    if not hasattr(os, "pidfd_open"):
        time.sleep(min(timeout, 0.01))
        return
    fds = []
    try:
        poller = select.poll()  # not select(): a pidfd may be numbered past 1023
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                fds.append(os.pidfd_open(pid))
                poller.register(fds[-1], select.POLLIN)
        if fds:
            poller.poll(timeout * 1000)
    finally:
        for fd in fds:
            os.close(fd)


class ForkingMixIn(MixInBase):
    """Handle each request in a new child process.

    Class variables:
        max_children     at most this many children at once; the loop waits
                         for one to exit before forking another (default 40).
        timeout          ``handle_request()`` wait, so that a server driven
                         by ``handle_request()`` still reaps (default 300 s).
        block_on_close   ``server_close()`` waits for running children.

    Instance variables:
        active_children  set of child PIDs not yet reaped (``None`` before
                         the first fork).
    """

    timeout: float | None = 300
    #: PIDs of the children not yet reaped; ``None`` until the first fork.
    active_children: set[int] | None = None
    #: Fork no more than this many children at once.
    max_children: int = 40
    #: Make ``server_close()`` wait until every child has exited.
    block_on_close: bool = True

    def collect_children(self, *, blocking: bool = False) -> None:
        """Reap children that have exited; wait for them too if ``blocking``.

        Called by ``service_actions()`` (after every request, so it is also
        where ``max_children`` is enforced), ``handle_timeout()`` and
        ``server_close()``.
        """
        children = self.active_children
        if children is None:
            return
        # At the limit: block until some child exits.  waitpid(-1) waits
        # for *any* child, as stdlib does; a PID that is not ours is simply
        # not in the set.
        while len(children) >= self.max_children:
            try:
                exited, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                children.clear()  # ECHILD: no child is left to wait for
            except OSError:
                break
            else:
                children.discard(exited)
        flags = 0 if blocking else os.WNOHANG
        for pid in list(children):
            try:
                exited, _ = os.waitpid(pid, flags)
            except ChildProcessError:
                # Reaped by someone else (e.g. a SIGCHLD handler).
                children.discard(pid)
            else:
                if exited:
                    children.discard(pid)

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

    def _wait_for_requests(self, deadline: float) -> bool:
        """Called by ``drain()``: reap children as they exit, until none or ``deadline``."""
        while True:
            self.collect_children()
            remaining = deadline - time.monotonic()
            if not self.active_children or remaining <= 0:
                return not self.active_children
            _wait_for_any_exit(self.active_children, remaining)

    def _cut_requests(self) -> int:
        """Called by ``drain()``: SIGTERM the remaining children, then reap them."""
        children = self.active_children or set()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        cut = len(children)
        self.collect_children(blocking=True)
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
