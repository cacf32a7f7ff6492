"""BaseServer: the serve loop and the hooks every request passes through.

Design map, part 2 of 6.  One request, in call order (each name is a hook a
subclass may override alone; the indentation is the call stack)::

    serve_forever(poll_interval)             the caller's thread, until shutdown()
     serve_loop([server])                     the one loop (ServerGroup: [servers])
      Reactor.select(timeout)                 reactor.py: listener or wake-up ready
      _handle_request_noblock()               one readiness -> at most one request
        get_request()                         sockets.py: accept() or recvfrom()
        verify_request(request, addr)         policy: False refuses the request
        admit_request(request, addr)          admission.py may hold it until its
                                              first bytes arrive (TLS), then
                                              resumes here, at process_request
        process_request(request, addr)        the concurrency models override this
          finish_request(request, addr)       builds RequestHandlerClass(...)
          shutdown_request(request)           sockets.py: SHUT_WR, then close_request
        handle_error(request, addr)           only when a stage above raised
      service_actions()                       once per iteration (e.g. reap children)

``handle_request()`` is the same pipeline for exactly one request, with
``timeout`` and ``handle_timeout()``.

Where we differ from stdlib ``socketserver``, and why:

* ``shutdown()`` wakes the loop through the reactor's wake-up channel and
  returns within milliseconds whatever ``poll_interval`` is; stdlib polls a
  flag and waits up to ``poll_interval`` (python/cpython gh-88932).
* The loop waits with no timeout at all unless ``service_actions`` is
  overridden: nothing would run on a timeout, so an idle server sleeps
  instead of waking twice a second.
* ``shutdown()`` called on the thread that runs ``serve_forever()`` raises
  ``RuntimeError``; stdlib deadlocks there forever.
* ``TCPServer.request_queue_size`` (the listen backlog) defaults to
  ``socket.SOMAXCONN`` instead of 5, which overflows under a burst and makes
  clients wait for SYN retransmits (seconds; see sockets.py).
* An exception from ``verify_request`` is reported through ``handle_error``
  and the request is closed; stdlib lets it escape ``serve_forever``, and
  the accepted socket stays open until the exception is freed, when the
  socket's finalizer closes it with a ``ResourceWarning``.
* ``serve_forever()`` on a server that another thread is serving raises
  ``RuntimeError``; stdlib starts a second loop on the same listener.
* ``server_close()`` called from another thread while the loop serves
  calls ``shutdown()`` first; stdlib closes the listener under its loop,
  which then spins on the closed descriptor or dies with ``ValueError``.
  A listener closed on the loop's own thread is unwatched for good.
"""

from __future__ import annotations

import errno
import inspect
import logging
import selectors
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from .reactor import Reactor

_Server = TypeVar("_Server", bound="BaseServer")

#: Warnings the server reports about itself (e.g. running out of descriptors).
logger = logging.getLogger("minisocketserver")

#: ``accept()`` errnos that mean "no descriptor (or kernel memory) for a new
#: connection", per process (EMFILE) or system-wide (ENFILE).  The pending
#: connection stays in the backlog, so the listening socket stays readable:
#: a loop that simply retries spins at 100% CPU until a descriptor frees
#: (stdlib does; trio sleeps 100 ms, asyncio 1 s, gevent backs off).
OUT_OF_DESCRIPTORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: What a server is constructed with and hands to each handler:
#: ``RequestHandlerClass(request, client_address, server)``.
HandlerFactory = Callable[[Any, Any, Any], object]

# Stdlib picks poll() where the platform has it: unlike select() it has no
# FD_SETSIZE (1024) ceiling on descriptor numbers, and for the one or two
# descriptors a server loop watches the two cost the same.
if hasattr(selectors, "PollSelector"):
    _DEFAULT_SELECTOR: type[selectors.BaseSelector] = selectors.PollSelector
else:  # pragma: no cover - Windows
    _DEFAULT_SELECTOR = selectors.SelectSelector


def overrides(obj: object, name: str, base: type) -> bool:
    """Whether ``type(obj)`` replaces ``base.<name>`` with its own method.

    Wrappers that set ``__wrapped__`` (``functools.wraps``, the tracer) are
    looked through, so tracing a hook does not count as overriding it.
    """
    mine = inspect.unwrap(getattr(type(obj), name))
    return mine is not inspect.unwrap(getattr(base, name))


class HandOff:
    """A request on its way from the loop to the concurrency model that takes it over.

    ``_handle_request_noblock()`` opens one per request before calling
    ``process_request()``.  If that raises, the loop must shut the request
    down, unless a worker took it over already: a ``KeyboardInterrupt``
    (a signal lands at any bytecode of the loop's thread) can strike after
    ``Thread.start()``, or even inside it, once the worker runs.  So each
    side claims the request, and exactly one claim wins: the model's
    (``take()``: the worker, or ``process_request`` right after the worker
    was started, on its behalf) or the loop's error path (``take_back()``).
    A worker that loses leaves the request alone; the loop only shuts it
    down if it won.  A stage that replaces the request on its way (TLS
    wraps the socket in an ``ssl.SSLSocket``) points ``request`` at the
    replacement, so that the claims and the loop's error path follow it.

    Why ``dict.setdefault``: it is one call into C, so no signal handler
    runs in the middle of it, and no other thread either (the GIL, or the
    dict's own lock on a free-threaded build): the first claim is stored
    and every later one reads it.  A model that never claims (a
    ``process_request`` written for stdlib, the synchronous and forking
    models) leaves the request to the loop's error path, as before.
    """

    __slots__ = ("_owner", "request")

    def __init__(self, request: Any) -> None:
        self.request = request
        self._owner: dict[str, str] = {}

    def take(self) -> bool:
        """Claim the request for the concurrency model; True if it is the model's."""
        return self._owner.setdefault("owner", "model") == "model"

    def take_back(self) -> bool:
        """Claim the request for the loop's error path; True if it is the loop's."""
        return self._owner.setdefault("owner", "loop") == "loop"


class BaseServer:
    """The address-family-neutral server: a loop and a pipeline of hooks.

    Methods for callers:
        serve_forever(poll_interval=0.5), shutdown(), handle_request(),
        server_close(), fileno(); usable as a context manager (closes on exit).

    Methods to override (each docstring says who calls it, and when):
        server_bind, server_activate, get_request, verify_request,
        admit_request, process_request, finish_request, shutdown_request, close_request,
        handle_error, handle_timeout, service_actions.

    Class variables:
        timeout          seconds ``handle_request()`` waits; ``None`` = forever.
        selector_class   the ``selectors`` class the loop waits with.

    Instance variables:
        server_address, RequestHandlerClass, and (socket servers) socket.
    """

    #: Seconds ``handle_request()`` waits for a request before it calls
    #: ``handle_timeout()``; ``None`` waits forever.  ``serve_forever()``
    #: ignores it.
    timeout: float | None = None

    #: The ``selectors.BaseSelector`` subclass every loop of this server
    #: waits with: ``SelectSelector``, ``PollSelector``, ``EpollSelector``,
    #: ``DefaultSelector``...  Defaults to poll where available, as stdlib.
    selector_class: type[selectors.BaseSelector] = _DEFAULT_SELECTOR

    #: Seconds the loop stops accepting after ``get_request()`` failed for
    #: lack of descriptors (see ``OUT_OF_DESCRIPTORS``).  Connections already
    #: open keep being served; new ones wait in the kernel's backlog.
    accept_backoff: float = 0.05
    #: The back-off doubles while accepting keeps failing, up to this.
    accept_backoff_max: float = 1.0

    def __init__(self, server_address: Any, RequestHandlerClass: HandlerFactory) -> None:
        """Store the address and handler class; subclasses open the socket."""
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        # The loop's own state.  Names are chosen so that they collide with
        # nothing that http.server, xmlrpc.server, wsgiref or logging.config
        # set on their servers.
        self._shutdown_requested = False
        self._serving_done = threading.Event()
        self._serving_thread: int | None = None
        self._reactor: Reactor | None = None
        # Why the loop is not accepting now (see _pause_accepting); accepting
        # resumes when the last reason is withdrawn.
        self._accept_pauses: set[str] = set()
        # The current back-off while out of descriptors; None when accepts work.
        self._backoff: float | None = None

    # -- the loop ---------------------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Handle requests until ``shutdown()`` is called (blocks the caller).

        ``poll_interval`` is how often ``service_actions()`` runs while no
        request arrives; it does not delay ``shutdown()``.
        """
        serve_loop([self], poll_interval, self.selector_class)

    def _has_periodic_work(self) -> bool:
        """Whether the loop must wake every ``poll_interval`` when idle."""
        return overrides(self, "service_actions", BaseServer)

    def _attach(self, reactor: Reactor) -> None:
        """Register this server's listening socket with ``reactor``.

        Called by ``serve_forever()`` (and ``ServerGroup``) before the first
        wait.  Concurrency models that watch more descriptors, or that start
        paused, extend it.  Pauses of an earlier loop died with its timers.
        """
        self._accept_pauses.clear()
        self._backoff = None
        if self.fileno() == -1:
            # What stdlib's loop raises too (from its selector), said plainly.
            raise ValueError(
                f"{type(self).__name__} at {self.server_address!r} cannot be served: its "
                "listening socket is closed (server_close() was called)"
            )
        reactor.watch(self, selectors.EVENT_READ, self._on_listener_ready)

    def _detach(self, reactor: Reactor) -> None:
        """Stop watching everything ``_attach()`` registered with ``reactor``.

        Called by ``serve_loop()`` when this server's ``shutdown()`` takes it
        out of a loop that goes on serving other servers (``ServerGroup``).
        """
        reactor.unwatch(self)

    def _serving_ended(self) -> None:
        """Called by ``serve_loop()`` when it is done with this server: wake ``shutdown()``.

        One step under ``_claim_lock``, the lock ``_claim()`` takes: were
        ``_serving_thread`` cleared before the event is set, a
        ``serve_forever()`` on another thread could claim the server in
        between, and this loop's ``set()`` would then land on the new
        loop's event: its ``shutdown()`` would return while it still serves.
        """
        with _claim_lock:
            self._reactor = None
            self._shutdown_requested = False
            self._serving_thread = None
            self._serving_done.set()

    def _on_listener_ready(self, mask: int) -> None:
        """Reactor callback: the listening socket is readable."""
        # In a ServerGroup the loop goes on after this server's shutdown(),
        # and the listener may already be in this iteration's ready work:
        # a server being shut down starts no new request.
        if not self._shutdown_requested and not self._listener_closed():
            self._handle_request_noblock()

    def _listener_closed(self) -> bool:
        """Whether the listener was closed under the loop; if so, stop watching it for good.

        Called by the listener's reactor callback.  ``server_close()`` from
        another thread takes the server out of the loop first, but a close
        on the loop's own thread (a handler of the synchronous model, a
        timer) or of ``self.socket`` directly leaves the listener watched:
        poll() then reports its old descriptor number at once on every
        wait (POLLNVAL) and accept() fails with EBADF, a loop spinning at
        100% CPU for as long as it serves anything else (stdlib's does).
        """
        if self.fileno() != -1:
            return False
        if self._reactor is not None:
            self._reactor.unwatch(self)
        return True

    def _pause_accepting(self, reason: str) -> None:
        """Stop watching the listening socket until ``reason`` is withdrawn.

        Runs on the loop's thread.  New connections then wait in the
        kernel's listen backlog (and past it, clients retry their SYN)
        instead of consuming a descriptor, a thread or memory here.
        """
        self._accept_pauses.add(reason)
        if self._reactor is not None:
            self._reactor.unwatch(self)

    def _resume_accepting(self, reason: str) -> None:
        """Withdraw ``reason``; accept again once no reason is left (loop thread)."""
        if reason not in self._accept_pauses:
            return  # not paused for it: the listener is watched as it should be
        self._accept_pauses.discard(reason)
        # A listener closed while paused (server_close() on the loop's
        # thread) stays unwatched: registering a closed socket raises
        # ValueError out of the loop, and would end every server it serves.
        if not self._accept_pauses and self._reactor is not None and self.fileno() != -1:
            self._reactor.watch(self, selectors.EVENT_READ, self._on_listener_ready)

    def shutdown(self) -> None:
        """Stop ``serve_forever()`` and wait until it has returned.

        Call it from another thread: the loop cannot wait for itself, so a
        call from the serving thread raises ``RuntimeError`` (stdlib hangs).
        Like stdlib, a call made before ``serve_forever()`` starts is
        remembered, and this call waits for that loop to start and stop.
        """
        if self._serving_thread == threading.get_ident():
            raise RuntimeError(
                "shutdown() was called from the thread running serve_forever(); "
                "it would wait for itself forever. Call it from another thread, "
                "or leave the loop by other means (e.g. a flag checked in "
                "service_actions())."
            )
        self._shutdown_requested = True
        reactor = self._reactor
        if reactor is not None:
            reactor.wake()
        self._serving_done.wait()

    def drain(self, timeout: float) -> int:
        """Stop accepting, give requests in flight ``timeout`` seconds, cut the rest.

        Returns how many requests had to be cut.  Call it from another
        thread than the loop's (it calls ``shutdown()`` if the loop runs),
        typically before ``server_close()``, which then never waits on a
        client that keeps its connection open (python/cpython gh-84485).
        How a request is cut depends on the concurrency model: a worker
        thread's connection is shut down under it, a child process gets
        SIGTERM, a multiplexed connection is closed.
        """
        if self._serving_thread is not None:
            self.shutdown()
        if self._wait_for_requests(time.monotonic() + timeout):
            return 0
        return self._cut_requests()

    def _wait_for_requests(self, deadline: float) -> bool:
        """Wait until no request is in flight or ``deadline`` passes; True if none is left.

        Called by ``drain()``.  The synchronous model finishes each request
        before its loop returns, so nothing is ever left in flight.
        """
        return True

    def _cut_requests(self) -> int:
        """Called by ``drain()`` after the deadline: end what is still running."""
        return 0

    def service_actions(self) -> None:
        """Called by ``serve_forever()`` once per loop iteration.

        Overriding it makes the idle loop wake every ``poll_interval``
        seconds to call it; ``ForkingMixIn`` reaps its children here.
        """

    # -- one request ------------------------------------------------------

    def handle_request(self) -> None:
        """Wait for and handle exactly one request (the caller's thread).

        Waits at most ``timeout`` seconds (the smaller of the server's
        ``timeout`` and its socket's timeout), then calls
        ``handle_timeout()`` instead.
        """
        budget = self._request_wait_budget()
        deadline = None if budget is None else time.monotonic() + budget
        with self.selector_class() as selector:
            selector.register(self, selectors.EVENT_READ)
            while not selector.select(budget):
                if deadline is None:
                    # Only a signal can end an unbounded wait early; go on.
                    continue
                budget = deadline - time.monotonic()
                if budget < 0:
                    self.handle_timeout()
                    return
        self._handle_request_noblock()

    def _request_wait_budget(self) -> float | None:
        """Seconds ``handle_request()`` may wait: ``timeout``, capped by the socket's."""
        sock = getattr(self, "socket", None)
        socket_timeout = None if sock is None else sock.gettimeout()
        limits = [t for t in (socket_timeout, self.timeout) if t is not None]
        return min(limits) if limits else None

    def handle_timeout(self) -> None:
        """Called by ``handle_request()`` when ``timeout`` passed with no request."""

    #: The request the loop is handing to ``process_request()`` now, and who
    #: ended up owning it (see ``HandOff``); ``None`` between requests.  Only
    #: the loop's thread sets it.
    _handoff: HandOff | None = None

    def _handoff_for(self, request: Any) -> HandOff | None:
        """The loop's hand-off of ``request``, if ``process_request`` is taking it from the loop.

        Called by a concurrency model's ``process_request`` (loop thread).
        ``None`` when ``process_request`` was called by other code: then the
        caller owns the request until ``process_request`` returns, as in
        stdlib, and the model needs no hand-off.
        """
        handoff = self._handoff
        return handoff if handoff is not None and handoff.request is request else None

    def _handle_request_noblock(self) -> bool:
        """Take one ready request through the pipeline; never blocks to wait.

        Called by the loop when the listening socket is readable.  Returns
        whether a request was taken (``False``: ``get_request()`` failed),
        so that a model that accepts in batches knows when to stop.  Error
        handling: a failed ``get_request()`` skips that request (the client
        vanished or a descriptor limit was hit); an ``Exception`` in any
        later stage goes to ``handle_error()``; anything else
        (``KeyboardInterrupt``, ``SystemExit``) propagates out of the loop.
        Either way the request is shut down, unless a concurrency model
        took it over first (see ``HandOff``).
        """
        try:
            request, client_address = self.get_request()
        except OSError as exc:
            self._get_request_failed(exc)
            return False
        if self._backoff is not None:
            self._backoff = None
            logger.warning("%s: accepting connections again", type(self).__name__)
        self._take_request(request, client_address)
        return True

    def _take_request(self, request: Any, client_address: Any, *, admitted: bool = False) -> None:
        """Take an accepted request on: ``verify_request``, ``admit_request``, ``process_request``.

        Called by ``_handle_request_noblock()``, and with ``admitted=True``
        by an admission stage (admission.py) when a request it held is
        ready: that one was verified and admitted already, and resumes at
        ``process_request``.  Error handling as described there.
        """
        handoff = self._handoff = HandOff(request)
        try:
            if admitted or (
                self.verify_request(request, client_address)
                and self.admit_request(request, client_address)
            ):
                self.process_request(request, client_address)
                return
        except Exception:
            self.handle_error(handoff.request, client_address)
        except BaseException:
            # A SIGINT can land anywhere, also just after a worker took the
            # request over: shutting it down then would cut the connection
            # under the worker (stdlib does).  take_back() fails in that case.
            if handoff.take_back():
                self.shutdown_request(handoff.request)
            raise
        finally:
            self._handoff = None
        # Refused, or failed before a concurrency model (or an admission
        # stage holding it) took ownership.
        if handoff.take_back():
            self.shutdown_request(handoff.request)

    def _get_request_failed(self, exc: OSError) -> None:
        """``get_request()`` raised: skip that request, and back off if out of descriptors.

        Most failures concern one client (ECONNABORTED: it reset before we
        accepted) and the next request is unaffected.  Running out of
        descriptors is reported once per episode, not once per attempt,
        and pauses accepting for ``accept_backoff`` seconds, doubling while
        it lasts; the connections already open are served meanwhile.
        """
        reactor = self._reactor
        if exc.errno not in OUT_OF_DESCRIPTORS or reactor is None:
            return
        if self._backoff is None:
            self._backoff = self.accept_backoff
            logger.warning(
                "%s: cannot accept: %s; pausing accepts (%.2f s, doubling up to %.1f s) "
                "until descriptors free up",
                type(self).__name__, exc, self._backoff, self.accept_backoff_max,
            )
        else:
            self._backoff = min(2 * self._backoff, self.accept_backoff_max)
        self._pause_accepting("out of descriptors")
        reactor.call_later(self._backoff, lambda: self._resume_accepting("out of descriptors"))

    def get_request(self) -> tuple[Any, Any]:
        """Called by the loop to take one request: ``(request, client_address)``."""
        raise NotImplementedError

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Called before processing; return ``False`` to refuse the request."""
        return True

    def admit_request(self, request: Any, client_address: Any) -> bool:
        """Called by the loop after ``verify_request``: may the request go on now?

        ``True`` (the default): ``process_request`` follows at once.  An
        admission stage (``admission.AdmissionMixIn``) returns ``False``
        after claiming the request (``HandOff.take``): it holds the
        connection in the loop, without a thread, until its first bytes
        arrive, then resumes the pipeline at ``process_request``.
        ``False`` without the claim refuses the request, as
        ``verify_request`` does.
        """
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        """Called for each verified request; the synchronous model runs it here.

        The concurrency mixins override this to hand the request to a thread
        or a child process.  Resource handling: whoever processes the
        request must see ``shutdown_request(request)`` called when done.
        """
        self.finish_request(request, client_address)
        self.shutdown_request(request)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Called by ``process_request`` (on its thread/process): run the handler."""
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request: Any) -> None:
        """Called when a request is done with: end it, then ``close_request``."""
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Called by ``shutdown_request`` to release the request's resources."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Called, inside the ``except`` block, when handling a request raised.

        Prints the traceback to ``sys.stderr`` between two rules, in the same
        format as stdlib so that logs and log scrapers keep working; the
        server carries on with the next request.
        """
        rule = "-" * 40
        print(rule, file=sys.stderr)
        print("Exception occurred during processing of request from", client_address,
              file=sys.stderr)
        traceback.print_exc()
        print(rule, file=sys.stderr)

    # -- descriptors and lifetime ------------------------------------------

    def server_activate(self) -> None:
        """Called by the constructor after ``server_bind()``: start accepting."""

    def server_close(self) -> None:
        """Release the server's resources; called on leaving the ``with`` block.

        Called from another thread while ``serve_forever()`` serves this
        server, it stops that loop first (``shutdown()``), so that nothing
        is closed under the loop: the loop owns the listener while it
        watches it (and, for the multiplexing model, every connection), and
        a member of a ``ServerGroup`` leaves the loop instead of leaving a
        closed descriptor in it.  Stdlib closes the socket under its loop.
        Subclasses that override it call ``super().server_close()`` first.
        """
        serving = self._serving_thread
        if serving is not None and serving != threading.get_ident():
            self.shutdown()

    def fileno(self) -> int:
        """The descriptor the loop waits on; socket servers return their socket's."""
        raise NotImplementedError

    def __enter__(self: _Server) -> _Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server_close()


#: Makes ``_claim()``'s check and claim one step: two threads entering
#: ``serve_forever()`` on one server at once must not both find it free.
_claim_lock = threading.Lock()


def _claim(servers: Sequence[BaseServer]) -> None:
    """Mark ``servers`` as served by this thread, or raise if a loop serves one already.

    Called by ``serve_loop()`` before anything else.  A second loop on the
    same listener would race the first for every connection, and
    ``shutdown()`` would stop only one of them (stdlib lets that happen).
    """
    with _claim_lock:
        busy = [server for server in servers if server._serving_thread is not None]
        if busy:
            raise RuntimeError(
                f"{type(busy[0]).__name__} at {busy[0].server_address!r} is already being "
                "served by another loop; call shutdown() before serving it again"
            )
        for server in servers:
            server._serving_done.clear()
            server._serving_thread = threading.get_ident()


def serve_loop(
    servers: Sequence[BaseServer],
    poll_interval: float,
    selector_class: type[selectors.BaseSelector],
) -> None:
    """The loop of ``serve_forever()``: one server's, or a ``ServerGroup``'s.

    Called on the caller's thread; returns when every server in ``servers``
    has been shut down.  One iteration, step by step:

    1. servers whose ``shutdown()`` was called leave: ``_detach()`` takes
       their descriptors out of the reactor and their ``shutdown()`` returns
       (unless all would leave: then the loop ends, as for a single server);
    2. wait on the reactor: a listener, a connection, a due timer, posted
       work, or ``shutdown()``'s wake-up.  With no timeout at all unless
       some server has periodic work (then ``poll_interval``); the reactor
       never sleeps past its next timer, which is how per-connection
       deadlines wake the loop without polling;
    3. if every server was shut down during the wait, stop: nothing new
       may start after ``shutdown()``;
    4. run the ready work, then each server's ``service_actions()``.

    While a server is in the loop its own state says so (``_reactor``,
    ``_serving_thread``), so its ``shutdown()`` wakes this loop and waits
    for it, from any thread but this one, exactly as for ``serve_forever``.
    """
    serving = list(servers)
    _claim(serving)
    try:
        with Reactor(selector_class) as reactor, reactor.signals_wake():
            for server in serving:
                # _reactor first: an _attach() that pauses accepting at once
                # (a thread limit already reached) unwatches through it.
                server._reactor = reactor
                server._attach(reactor)
            periodic = any(server._has_periodic_work() for server in serving)
            timeout = poll_interval if periodic else None
            while True:
                # Before the first wait too: a shutdown() that came before
                # the loop started is honoured here, as in stdlib.
                leaving = [server for server in serving if server._shutdown_requested]
                if len(leaving) == len(serving):
                    break
                for server in leaving:
                    serving.remove(server)
                    server._detach(reactor)
                    server._serving_ended()
                ready = reactor.select(timeout)
                if all(server._shutdown_requested for server in serving):
                    break
                for function, argument in ready:
                    function(argument)
                for server in serving:
                    server.service_actions()
    finally:
        # Every server is let go, even if one _serving_ended() raises (a
        # second Ctrl-C lands in it): a server skipped would stay marked as
        # served by a loop that is gone, its shutdown() waiting forever.
        # The first error is re-raised once all are done.
        error: BaseException | None = None
        for server in serving:
            try:
                server._serving_ended()
            except BaseException as exc:  # the others must still be let go
                error = error or exc
        if error is not None:
            raise error


#: The ``__module__`` of stdlib's server classes.  Compared by name only:
#: the package never imports stdlib's ``socketserver`` (clean room).
_STDLIB_MODULE = "socketserver"


def refuse_stdlib_base(cls: type, mixin: type) -> None:
    """Raise ``TypeError`` if ``cls`` puts our ``mixin`` on a server class of stdlib's.

    Called by each concurrency mixin's ``__init_subclass__``, as the class
    statement runs.  ``import minisocketserver as socketserver`` renames the
    package for one module only: ``http.server`` (and ``xmlrpc.server``,
    ``wsgiref``...) imported stdlib's ``socketserver`` themselves, so
    ``class S(socketserver.ThreadingMixIn, HTTPServer)`` puts our mixin on
    stdlib's ``TCPServer``, whose loop has none of the state our mixins
    keep in it (the reactor, the hand-off, the pauses): every request
    would fail, or worse, half work.  A clear refusal at class creation
    names the way out instead.
    """
    mro = cls.__mro__
    stdlib = next((base for base in mro if base.__module__ == _STDLIB_MODULE), None)
    if stdlib is None:
        return
    # The class that brought stdlib's in: http.server.HTTPServer, say, or
    # the new class itself when it names stdlib's class as a base.
    via = next(
        (base for base in reversed(mro[: mro.index(stdlib)])
         if issubclass(base, stdlib) and base.__module__ != _STDLIB_MODULE),
        cls,
    )
    if via is cls:
        raise TypeError(
            f"{cls.__qualname__} mixes minisocketserver's {mixin.__name__} with the standard "
            f"library's socketserver.{stdlib.__name__}: use minisocketserver.{stdlib.__name__}, "
            "or call minisocketserver.install() before `import socketserver`; see "
            "docs/running-stdlib-servers.md"
        )
    importer = via.__module__
    raise TypeError(
        f"{cls.__qualname__} mixes minisocketserver's {mixin.__name__} with the standard "
        f"library's socketserver.{stdlib.__name__} (through {importer}.{via.__qualname__}), "
        f"because {importer} imported stdlib's socketserver before the alias; call "
        f"minisocketserver.install() before importing {importer} (or run the program with "
        "`python -m minisocketserver run`), see docs/running-stdlib-servers.md"
    )


# The concurrency mixins call the server's hooks on ``self`` and ``super()``;
# for the type checker they derive from BaseServer, at run time from object,
# so that the MRO of e.g. ThreadingMixIn + TCPServer is the one stdlib has.
if TYPE_CHECKING:
    MixInBase = BaseServer
else:
    MixInBase = object
