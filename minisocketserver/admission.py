"""The admission stage: a new connection waits in the loop until its first bytes arrive.

Design map, part 4 of 6 (a stage in front of the concurrency models; read
it after them).  Some protocols begin with the client talking: TLS with its
ClientHello, the PROXY protocol with its header.  A model that hands every
accepted connection to a worker at once lets a client that connects and
says nothing hold that worker, a pool slot or a child process for as long
as it likes: 64 silent clients fill a pool of 64 workers, and the real
client behind them waits.  This stage sits in the pipeline between
``verify_request`` and ``process_request`` (``BaseServer.admit_request``)
and keeps such a connection in the loop instead::

    loop thread:  accept -> verify_request -> admit_request: watch it, arm a timer
                  ... first bytes readable -> first_bytes_arrived -> process_request
                  ... or the deadline first -> admission_refused: close it, quietly

What a silent client costs here: one descriptor, one registration with the
reactor, one timer.  No thread, no pool slot, no child.  The stage reads
nothing it cannot give back: it only peeks, so the bytes are still there
for whoever reads the connection next (the TLS handshake in the worker).

Where it applies: only while a loop serves (``serve_forever()``, a
``ServerGroup``).  ``handle_request()`` serves one request and has no loop
to wait in, so the request goes on at once, as in the synchronous model.

Resource handling: the stage owns a connection from ``admit_request`` (it
claims the ``HandOff``, so the loop does not shut it down) until it hands
it to ``process_request`` through the pipeline, or closes it.  Connections
still waiting when the loop lets the server go (``shutdown()``) are closed:
no loop is left to watch them.  Threads: the table of waiting connections
belongs to the loop's thread, which alone touches it.

Stages that read more than a byte (the PROXY protocol's header, which may
arrive in pieces) answer ``KEEP_WAITING`` from ``first_bytes_arrived``
until they have all they need: the connection stays held, under the same
deadline, and costs no worker meanwhile.  A stage that finds what it read
unacceptable raises ``AdmissionRefused(reason)``.

Error handling: a connection that misses its deadline, that closes or
resets before sending a byte, or that a stage refuses, is closed and
reported to ``admission_refused`` (logged at debug), never to
``handle_error``: a client leaving is not a server error.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from typing import Any

from .reactor import Reactor, Timer
from .server import MixInBase, logger

# Peek without waiting: the loop must never block on one client, and the
# readiness that brought us here may be spurious.
_PEEK_NOW = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)


class _KeepWaiting:
    """The type of ``KEEP_WAITING``."""

    def __repr__(self) -> str:
        return "KEEP_WAITING"


#: What ``first_bytes_arrived`` returns when the connection must go on
#: waiting in the loop for more bytes (a header that arrived in part).
KEEP_WAITING: Any = _KeepWaiting()


class AdmissionRefused(Exception):
    """Raised by ``first_bytes_arrived`` to refuse a held connection quietly.

    ``reason`` reaches ``admission_refused``, which closes the connection;
    the stage logs the details itself, at debug.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Waiting:
    """One connection held by the admission stage (loop thread only)."""

    __slots__ = ("client_address", "deadline", "request", "since", "timer")

    def __init__(self, request: socket.socket, client_address: Any, since: float) -> None:
        self.request = request
        self.client_address = client_address
        self.since = since  # time.monotonic() of admit_request
        self.deadline = float("inf")
        self.timer: Timer | None = None


class AdmissionMixIn(MixInBase):
    """Hold each new connection in the loop, under a deadline, until it has sent something.

    Put it before the concurrency mixin in the bases:
    ``class MyServer(AdmissionMixIn, ThreadPoolMixIn, TCPServer)``.
    ``TLSMixIn`` is one (tls.py).

    Class variables:
        admission_timeout   seconds a new connection may stay silent.

    Methods to override:
        admission_time_limit(): the seconds to allow; by default
        ``admission_timeout`` (``TLSMixIn``: its ``handshake_timeout``).
        first_bytes_arrived(request, client_address): the connection is
        readable; return the client address to go on with, or
        ``KEEP_WAITING``; raise ``AdmissionRefused`` to refuse it.
        admission_refused(request, client_address, reason): it never
        spoke (``"timeout"``), left first (``"closed"``), or a stage
        refused it (the reason it gave).

    Methods for derived classes:
        admission_deadline(request): the deadline of the request that
        ``process_request`` is being given, if it was held here.
        extend_admission(request, limit): give a held connection
        ``limit`` seconds from its accept instead.
    """

    #: Seconds a new connection may stay silent before it is closed
    #: (``None``: no deadline, the connection waits as long as the client
    #: likes and costs only its descriptor meanwhile).
    admission_timeout: float | None = 10.0

    # Connections waiting for their first bytes, by socket.  Owned by the
    # loop's thread; created on first use, so that a class without a loop
    # never pays for it.
    _waiting: dict[socket.socket, _Waiting] | None = None
    # The held connection being handed to process_request right now (loop
    # thread), so that process_request can read its deadline.
    _admitting: _Waiting | None = None

    def admit_request(self, request: Any, client_address: Any) -> bool:
        """Called by the loop after ``verify_request``: hold ``request`` until it speaks.

        Returns ``False`` after taking the request over; the pipeline
        resumes at ``process_request`` when its first bytes arrive.
        Returns ``True`` (go on now) when there is no loop to wait in
        (``handle_request()``), for a request that is not a socket, and
        when the reactor cannot watch the socket (beyond select()'s
        descriptor limit): the concurrency model's own deadline, if any,
        bounds it then.
        """
        reactor = self._reactor
        handoff = self._handoff_for(request)
        if reactor is None or handoff is None or not isinstance(request, socket.socket):
            return True
        waiting = _Waiting(request, client_address, time.monotonic())
        try:
            reactor.watch(
                request, selectors.EVENT_READ, lambda mask: self._first_bytes_ready(waiting)
            )
        except ValueError:
            return True
        self._arm(waiting, self.admission_time_limit())
        if self._waiting is None:
            self._waiting = {}
        self._waiting[request] = waiting
        handoff.take()
        return False

    def admission_time_limit(self) -> float | None:
        """Called by ``admit_request`` for each new connection: seconds it may stay silent."""
        return self.admission_timeout

    def admission_deadline(self, request: Any) -> float | None:
        """The ``time.monotonic()`` deadline ``request`` was admitted under, or ``None``.

        Called by ``process_request`` (loop thread) of a derived class: TLS
        gives the handshake what is left of the same deadline, so that a
        client has ``admission_timeout`` seconds in all, not twice that.
        ``None`` when the request did not wait here.
        """
        admitting = self._admitting
        if admitting is None or admitting.request is not request:
            return None
        return admitting.deadline

    def extend_admission(self, request: Any, limit: float | None) -> None:
        """Give the held ``request`` ``limit`` seconds from its accept, not its first limit.

        Called on the loop's thread by a stage that is done with its part
        while the connection stays held for the next stage's (the PROXY
        header is in; TLS waits for the ClientHello under its own
        ``handshake_timeout``).  ``None``: no deadline.  A limit already
        past closes the connection on the loop's next turn.
        """
        waiting = (self._waiting or {}).get(request)
        if waiting is None:
            return
        if waiting.timer is not None:
            waiting.timer.cancel()
            waiting.timer = None
        self._arm(waiting, limit)

    def first_bytes_arrived(self, request: Any, client_address: Any) -> Any:
        """Called on the loop's thread when a held connection has bytes to read.

        Returns the client address the pipeline goes on with, or
        ``KEEP_WAITING`` to stay held (under the same deadline) until the
        connection is readable again.  The default reads nothing and
        returns ``client_address``: TLS lets the worker read the
        ClientHello itself.  ``AdmissionRefused`` closes the connection
        quietly (``admission_refused``); any other exception goes to
        ``handle_error`` and the connection is shut down.
        """
        return client_address

    def admission_refused(self, request: Any, client_address: Any, reason: str) -> None:
        """Called on the loop's thread when a held connection is given up: close it.

        ``reason`` is ``"timeout"`` (silent past ``admission_timeout``),
        ``"closed"`` (the client closed or reset before sending a byte), or
        what a stage's ``AdmissionRefused`` said.
        Logged at debug only: at a public port, scanners do this all day.
        """
        logger.debug("%s: %s dropped before its first byte (%s)",
                     type(self).__name__, client_address, reason)
        self.shutdown_request(request)

    # -- driven by the loop -------------------------------------------------

    def _arm(self, waiting: _Waiting, limit: float | None) -> None:
        """Set a held connection's deadline, ``limit`` seconds after its accept."""
        if limit is None:
            waiting.deadline = float("inf")
            return
        waiting.deadline = waiting.since + limit
        if self._reactor is not None:
            waiting.timer = self._reactor.call_later(
                max(0.0, waiting.deadline - time.monotonic()),
                lambda: self._admission_expired(waiting),
            )

    def _stop_holding(self, waiting: _Waiting) -> None:
        """Stop watching a held connection and cancel its timer (loop thread)."""
        if self._waiting is not None:
            self._waiting.pop(waiting.request, None)
        if waiting.timer is not None:
            waiting.timer.cancel()
        if self._reactor is not None:
            self._reactor.unwatch(waiting.request)

    def _first_bytes_ready(self, waiting: _Waiting) -> None:
        """Reactor callback: a held connection is readable (bytes, EOF or an error)."""
        if self._shutdown_requested:
            return  # no new request starts after shutdown(); _serving_ended closes it
        try:
            peeked = waiting.request.recv(1, _PEEK_NOW)
        except BlockingIOError:
            return  # spurious readiness: keep waiting
        except OSError:
            peeked = b""  # ECONNRESET: gone before it spoke
        if not peeked:
            self._stop_holding(waiting)
            self.admission_refused(waiting.request, waiting.client_address, "closed")
            return
        try:
            client_address = self.first_bytes_arrived(waiting.request, waiting.client_address)
        except AdmissionRefused as refusal:
            self._stop_holding(waiting)
            self.admission_refused(waiting.request, waiting.client_address, refusal.reason)
            return
        except Exception:
            self._stop_holding(waiting)
            self.handle_error(waiting.request, waiting.client_address)
            self.shutdown_request(waiting.request)
            return
        if client_address is KEEP_WAITING:
            return  # still watched, its timer still armed
        self._stop_holding(waiting)
        self._admitting = waiting
        try:
            self._take_request(waiting.request, client_address, admitted=True)
        finally:
            self._admitting = None

    def _admission_expired(self, waiting: _Waiting) -> None:
        """The reactor's timer: a held connection stayed silent past its deadline."""
        waiting.timer = None  # it has run: nothing to cancel
        self._stop_holding(waiting)
        self.admission_refused(waiting.request, waiting.client_address, "timeout")

    def _detach(self, reactor: Reactor) -> None:
        """Stop watching the held connections too (a ``ServerGroup`` lets this server go)."""
        super()._detach(reactor)
        for waiting in (self._waiting or {}).values():
            reactor.unwatch(waiting.request)

    def _serving_ended(self) -> None:
        """The loop lets the server go: close the connections still held.

        No loop is left to watch them or to time them out; a client that
        has not spoken yet loses nothing it sent.  Their timers are
        cancelled too: in a ``ServerGroup`` the loop goes on.
        """
        held = self._waiting or {}
        try:
            while held:
                _, waiting = held.popitem()
                if waiting.timer is not None:
                    waiting.timer.cancel()
                with contextlib.suppress(OSError):
                    self.shutdown_request(waiting.request)
        finally:
            super()._serving_ended()

