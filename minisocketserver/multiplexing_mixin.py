"""MultiplexingMixIn: every connection in one thread, on the loop's own selector.

Design map, part 4 of 6 (the concurrency models: read it after
threading_mixin and forking_mixin).  Stdlib ``socketserver`` describes this model in its module
docstring and never implements it; the seed document's select() echo server
is its hand-written form.  Here no request runs to completion anywhere: a
connection is a handler object that the loop calls back whenever its socket
is ready, and the handler answers by queueing bytes::

    accept:  listener readable -> up to accept_batch x (get_request ->
             verify_request -> process_request -> finish_request ->
             RequestHandlerClass(...) -> setup()) -> watch the connection
    read:    readable -> recv() once -> data_received(data)   or, on b"",
             eof_received() (default: close() once the queue drains)
    write:   send(data) writes what the kernel takes now, queues the rest;
             writable -> send() more of the queue
    end:     close() drained, EOF, reset, exception, idle timeout or
             server_close() -> unwatch -> finish() -> shutdown_request()

One iteration of the loop (``serve_loop`` in server.py), for this model:

1. ``select()`` returns the sockets that are ready: the listener, and
   connections readable (data, EOF or an error) or writable (room in the
   kernel's send buffer);
2. for the listener, accept until the backlog is empty (EAGAIN) or
   ``accept_batch`` connections were taken, so that a flood of new clients
   cannot starve the open ones;
3. for each ready connection, one ``send()`` of its queue if writable and one
   ``recv()`` if readable; the handler's callbacks run here, and whatever
   they ``send()`` is written at once as far as the kernel takes it;
4. its interest (read unless paused, write only while output is queued or
   the connection is ending) changes only where its state did: a partial
   send, a flush, EOF, backpressure, close; on the common path (one recv,
   one send of everything) no selector call is made, and a connection
   closed on the client's EOF is unwatched once, with no call before it;
5. due timers run (idle timeouts), and ``service_actions()``.

Why write interest only while output is pending: a connected socket is
writable almost all the time, so a loop that always asked about it would
have select() return at once on every pass and spin at 100% CPU.  The seed
appends a socket to its ``outputs`` list on every message received and
removes it once per reply: while a client does not read, duplicates pile up
until select() meets its 1024-descriptor ceiling and the server dies; and it
replies with a blocking ``sendall()``, which stalls every client whenever
one reply is larger than the free space of one socket's buffer.  Here each
connection is watched once, with a mask computed from its state, and every
socket is non-blocking: nothing in the loop ever waits on one client.

Backpressure: when a connection's queued output passes
``write_high_water``, the loop stops reading from it until the queue drains
to ``write_low_water``.  A client that sends but never reads then meets TCP
flow control (its own sends block) instead of growing the server's memory.

Resource handling: the server owns every accepted socket until its handler
ends; ``finish()`` runs exactly once per connection whose ``setup()``
returned, whatever ends it, and ``shutdown_request()`` follows it.
``server_close()`` ends every open connection.  An ended handler is
released at once: its buffers are dropped, and its cancelled idle timer
holds it no more (the reactor compacts cancelled timers).

Threads: while a loop serves the server, its thread owns the connections
(the table, every handler, the selector): ``send()`` and ``close()`` from
another thread raise ``RuntimeError``, ``call_soon_threadsafe()`` is the
way in, and ``server_close()`` from another thread stops the loop first.
While no loop serves, whichever one thread calls owns them.
"""

from __future__ import annotations

import collections
import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .reactor import Reactor, Timer
from .server import refuse_stdlib_base
from .sockets import TCPServer

_READ = selectors.EVENT_READ
_WRITE = selectors.EVENT_WRITE
# A module global: send() checks its caller's thread on every call, and a
# global is the cheapest name to look up.
_get_ident = threading.get_ident


class MultiplexedRequestHandler:
    """One object per connection, called back by the server's loop.

    Life, in call order::

        __init__ -> setup() -> data_received(data) ... -> eof_received() -> finish()

    ``setup()`` runs when the connection is accepted; ``data_received`` for
    each chunk read (chunks are TCP's, not messages: one ``send()`` of the
    client may arrive in several, several in one); ``eof_received()`` when
    the client has half-closed (default: ``close()``); ``finish()`` exactly
    once when the connection ends, for any reason, if ``setup()`` returned.

    Methods for the handler's code: ``send(data)``, ``close()``, ``pending``.
    Methods to override: setup, data_received, eof_received, output_drained,
    finish.
    Class variables: recv_size, timeout, write_high_water, write_low_water.
    Instance variables: request (the socket), client_address, server.

    Error handling: an exception from a hook (``setup``, ``data_received``,
    ``eof_received``, ``output_drained``) goes to ``server.handle_error()``,
    and this connection alone is closed at once (queued output is dropped).  An ``OSError`` on
    the socket (ECONNRESET, EPIPE: the peer went away) closes it at once too,
    quietly: a client leaving is not a server error.

    Threading: every method runs on the loop's thread.  Call ``send()`` and
    ``close()`` from there only: from this handler's callbacks, or from
    another handler of the same server (a chat room broadcasting).  From
    any other thread they raise ``RuntimeError`` while a loop serves the
    connection; hand the work to the loop instead, with the server's
    ``call_soon_threadsafe``::

        def data_received(self, data):
            def work():                      # on a worker thread
                reply = compute(data)
                self.server.call_soon_threadsafe(lambda: self.send(reply))
            threading.Thread(target=work).start()

    While no loop serves the connection (after ``shutdown()``), any one
    thread at a time may call them.
    """

    #: Bytes asked for per ``recv()``.  One read per readiness per
    #: connection: one busy client cannot starve the others.
    recv_size: int = 65536
    #: Seconds a connection may go without a byte received or sent before it
    #: is closed (``None``: never): it frees the slots of clients that
    #: connect and go silent.  It is no slowloris defence: any byte resets
    #: it, so a client that trickles one byte at a time is never cut
    #: (docs/reliability.md measures exactly that).
    #: Per handler class, like ``StreamRequestHandler.timeout``; ``setup()``
    #: may also set it on the instance.
    timeout: float | None = None
    #: Queued output above this many bytes stops reading from the connection.
    #: asyncio's default; the queue can exceed it by what one
    #: ``data_received`` call sends.
    write_high_water: int = 64 * 1024
    #: Reading resumes once the queue has drained to this many bytes.
    write_low_water: int = 16 * 1024

    def __init__(self, request: socket.socket, client_address: Any, server: Any) -> None:
        """Called by the server's ``finish_request()`` on accept: runs ``setup()``."""
        self.request = request
        self.client_address = client_address
        self.server = server
        self._output = bytearray()  # accepted by send(), not yet by the kernel
        self._reactor: Reactor | None = None  # the loop watching us, if any
        self._events = 0  # what _reactor watches for now
        # The thread running _reactor's loop; send() and close() refuse any
        # other, since the selector is not thread-safe.
        self._loop_thread: int | None = None
        self._timer: Timer | None = None
        # Last byte received or sent, for the idle timeout; read only when
        # ``timeout`` is set, and so updated only then: a clock read per
        # chunk is a cost the common, timeout-less server need not pay.
        self._last_active = time.monotonic()
        self._eof = False  # the peer half-closed: read no more
        self._paused = False  # backpressure: read no more until drained
        self._closing = False  # close() called: end once _output drains
        self._broken = False  # error: end at once, output dropped
        self._ended = False
        self._in_eof_hook = False  # eof_received() is running, called by _on_readable()
        self.setup()

    # -- the hooks --------------------------------------------------------

    def setup(self) -> None:
        """Called when the connection is accepted, before any data; may ``send()``."""

    def data_received(self, data: bytes) -> None:
        """Called with each chunk read from the client (never empty).  Override this."""

    def eof_received(self) -> None:
        """Called when the client has closed its sending side; default: ``close()``.

        Override it to keep answering on a half-closed connection; then the
        handler must ``close()`` it itself.
        """
        self.close()

    def output_drained(self) -> None:
        """Called when backpressure ends: the queue fell back to ``write_low_water``.

        Reading resumes (unless the client has half-closed).  A handler that
        holds back work while paused, as ``LineRequestHandler`` holds back
        lines it has buffered, continues it here: no more data may come to
        prompt it.
        """

    def finish(self) -> None:
        """Called exactly once when the connection ends, just before the socket closes."""

    # -- for the handler's code -------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for the client; the kernel gets what it takes at once.

        Never blocks.  Data sent after the connection broke or ended is
        dropped, as the peer can no longer receive it.
        """
        # Loop thread first: on the hot path the first test is false, and
        # the check costs one call (about 50 ns, ``python -m timeit -s 'from
        # threading import get_ident; t = get_ident()' 't != get_ident() and t
        # is not None'`` at commit b594d63), some 1.5% of one event in
        # ``python benchmarks/costs.py events``.
        if self._loop_thread != _get_ident() and self._loop_thread is not None:
            self._wrong_thread("send")
        if self._broken or self._ended or not data:
            return
        if not self._output:
            try:
                sent = self.request.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._break()
                return
            if sent and self.timeout is not None:
                self._last_active = time.monotonic()
            size = data.nbytes if isinstance(data, memoryview) else len(data)
            if sent == size:
                # The common case: the kernel took it all.  Nothing queued
                # before or now, so the interest is unchanged: return before
                # recomputing it.
                return
            data = memoryview(data).cast("B")[sent:]
        self._output += data
        if len(self._output) > self.write_high_water:
            self._paused = True
        self._update_interest()

    def close(self) -> None:
        """End the connection once the queued output has been sent."""
        if self._loop_thread != _get_ident() and self._loop_thread is not None:
            self._wrong_thread("close")
        self._closing = True
        # From eof_received() (the default one closes), _on_readable() takes over
        # once the hook returns; asking the selector for writability here
        # would cost a system call per connection for nothing.
        if not self._in_eof_hook:
            self._update_interest()

    @property
    def pending(self) -> int:
        """Bytes queued by ``send()`` that the kernel has not taken yet."""
        return len(self._output)

    def _wrong_thread(self, method: str) -> None:
        """Called by ``send()``/``close()`` from a thread that is not the loop's."""
        raise RuntimeError(
            f"{type(self).__name__}.{method}() was called from a thread that is not the "
            "loop's, which would touch its selector concurrently; hand the call to the "
            "loop with server.call_soon_threadsafe(callback)"
        )

    # -- driven by the loop -----------------------------------------------

    def _attach(self, reactor: Reactor) -> None:
        """Called by the server, on the loop's thread, when a loop starts serving us."""
        self._reactor = reactor
        self._loop_thread = _get_ident()
        self._update_interest()
        self._arm_timer()

    def _detach(self) -> None:
        """Called by the server when its loop stops serving this connection."""
        if self._reactor is not None and self._events:
            self._reactor.unwatch(self.request)
        self._reactor = None
        self._loop_thread = None
        self._events = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wanted_events(self) -> int:
        events = 0
        if not (self._eof or self._paused or self._closing or self._broken):
            events |= _READ
        # A connection that is ending asks for writability too: the socket
        # is writable (or in error) at once, so the loop comes back to end
        # it even when close() was called from outside its own callbacks.
        if self._output or self._closing or self._broken:
            events |= _WRITE
        return events

    def _update_interest(self) -> None:
        reactor = self._reactor
        if reactor is None or self._ended:
            return
        wanted = self._wanted_events()
        if wanted == self._events:
            return  # the common case: no system call at all
        if self.request.fileno() < 0:
            self._closed_behind_our_back(reactor)
            return
        callback = self._on_readable if wanted == _READ else self._on_ready
        if self._events and wanted:
            reactor.modify(self.request, wanted, callback)
        elif wanted:
            reactor.watch(self.request, wanted, callback)
        else:
            reactor.unwatch(self.request)
        self._events = wanted

    def _closed_behind_our_back(self, reactor: Reactor) -> None:
        """The socket was closed by a hook (or another handler), not by ``_end()``.

        Unwatch it now: the kernel may give its number to the next accepted
        connection, and select() fails on a closed descriptor.  End it at
        the loop's next turn rather than here, in the middle of the hook
        that noticed (a ``send()`` or ``close()``).
        """
        reactor.unwatch(self.request)
        self._events = 0
        self._broken = True
        self._output.clear()
        reactor.call_later(0.0, self._end)

    def _on_ready(self, mask: int) -> None:
        """Reactor callback while writability is watched: flush, then read.

        While only readability is watched (the common case: nothing
        queued, nothing ending), the reactor calls ``_on_readable`` instead.
        Every change of state updates the interest where it happens (send,
        close, break, EOF, a flush), so nothing is recomputed here.
        """
        if mask & _WRITE and self._output:
            self._flush()
            self._update_interest()
        # An error is reported as readable and writable whatever was asked:
        # read only if this connection asked to.
        if mask & _READ and self._events & _READ:
            self._on_readable(mask)
        elif self._broken or (self._closing and not self._output):
            self._end()

    def _on_readable(self, mask: int) -> None:
        """Reactor callback while only readability is watched; also called by ``_on_ready``.

        One ``recv()`` and its hook; then, if the connection is done
        (closed with nothing queued, or broken), end it.  The common path
        is one call from the loop, one ``recv()``, one ``send()``, and no
        selector call.
        """
        if not self._events & _READ:
            # Stale: the loop collected this callback in the same select()
            # as another connection whose hook has since closed, paused or
            # ended this one.  Read no more; its new interest brings the
            # loop back (to flush, or to end it) if there is work left.
            return
        try:
            data = self.request.recv(self.recv_size)
        except BlockingIOError:
            return  # spurious readiness: select() will ask again
        except OSError:
            self._break()  # ECONNRESET, ETIMEDOUT...: the connection is gone
            self._end()
            return
        if self.timeout is not None:
            self._last_active = time.monotonic()
        if data:
            # Not through _call(): every byte received passes this line, and
            # a try block costs nothing until it catches, a call always does.
            try:
                self.data_received(data)
            except BaseException as exc:
                self._hook_failed(exc)
        else:
            # b"" is end-of-stream, and it repeats on every recv() from now
            # on: stop reading (the seed answered it forever).
            self._eof = True
            self._in_eof_hook = True
            try:
                self._call(self.eof_received)
            finally:
                self._in_eof_hook = False
        if self._broken or (self._closing and not self._output):
            self._end()  # the one selector call: unwatch
        elif self.request.fileno() < 0:
            # The hook closed the socket itself (self.request.close()): end
            # the connection now, while no other socket has its number.
            self._end()
        elif not data:
            # EOF on a connection the hook kept open (half-closed, or output
            # still queued): stop reading.  Only now, after the hook: updating
            # before its close() would unwatch and re-watch for nothing.
            self._update_interest()

    def _call(self, hook: Callable[[], None]) -> None:
        """Run one of the handler's argument-less hooks; see ``_hook_failed``."""
        try:
            hook()
        except BaseException as exc:
            self._hook_failed(exc)

    def _hook_failed(self, exc: BaseException) -> None:
        """Called from the ``except`` around a hook: end this connection alone.

        An ``Exception`` goes to ``handle_error`` (which reads it from
        ``sys.exc_info()``, still set here).  SystemExit, KeyboardInterrupt:
        they leave the loop, as from a synchronous handler; like stdlib
        there, end this connection first, or a restarted loop would meet it
        again half-handled.
        """
        if isinstance(exc, Exception):
            self.server.handle_error(self.request, self.client_address)
            self._break()
            return
        self._end()
        raise exc

    def _flush(self) -> None:
        try:
            # send(), not sendall(): it takes what fits now and returns.
            sent = self.request.send(self._output)
        except BlockingIOError:
            return
        except OSError:
            self._break()  # EPIPE, ECONNRESET: the peer is gone
            return
        del self._output[:sent]  # bytearray drops a prefix in O(1)
        if self.timeout is not None:
            self._last_active = time.monotonic()
        if self._paused and len(self._output) <= self.write_low_water:
            self._paused = False
            self._call(self.output_drained)

    def _break(self) -> None:
        """The connection cannot go on: drop the output, end at the loop's next look."""
        self._broken = True
        self._output.clear()
        self._update_interest()

    def _arm_timer(self) -> None:
        """Have the reactor call ``_check_idle`` when the idle timeout may be up.

        Activity does not move the timer (that would cost a heap operation
        per chunk); ``_check_idle`` re-arms it for the time actually left.
        """
        reactor = self._reactor
        if self.timeout is None or reactor is None or self._ended:
            return
        left = self._last_active + self.timeout - time.monotonic()
        self._timer = reactor.call_later(max(0.0, left), self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        if self.timeout is not None and time.monotonic() - self._last_active >= self.timeout:
            self._end()
        else:
            self._arm_timer()

    def _end(self) -> None:
        """Close the connection: unwatch, ``finish()``, ``shutdown_request()``; once."""
        if self._ended:
            return
        self._ended = True
        self._output.clear()
        # Unwatch while the descriptor is still open: once closed, epoll
        # forgets it but the selector's table would not, and a new socket
        # given the same number could not be registered.
        self.server._forget(self)
        try:
            self.finish()
        except Exception:
            self.server.handle_error(self.request, self.client_address)
        finally:
            self.server.shutdown_request(self.request)


class LineRequestHandler(MultiplexedRequestHandler):
    """A multiplexed handler that is given whole lines: ``line_received(line)``.

    Each line keeps its ``b"\\n"``; at EOF, a last line without one is
    delivered as it is, then the connection closes (``eof_received``).
    Bytes are split on ``b"\\n"`` before any decoding, which is safe for
    UTF-8: the byte 0x0A never occurs inside a multi-byte character.

    Backpressure reaches the lines too: once the queued output passes
    ``write_high_water``, the lines left in the buffer wait until it has
    drained (``output_drained``).  Otherwise one ``recv()`` full of short
    requests for large replies would queue every reply at once.

    Class variables: max_line (plus those of ``MultiplexedRequestHandler``).
    """

    #: Longest line buffered while waiting for its ``b"\\n"``: a client that
    #: sends more without one is closed, so it cannot grow our memory.
    max_line: int = 64 * 1024

    def __init__(self, request: socket.socket, client_address: Any, server: Any) -> None:
        self._partial = bytearray()
        self._eof_deferred = False  # EOF came while lines were held back
        super().__init__(request, client_address, server)

    def line_received(self, line: bytes) -> None:
        """Called with each complete line, ``b"\\n"`` included.  Override this."""

    def data_received(self, data: bytes) -> None:
        """Buffer what arrived and deliver the complete lines."""
        self._partial += data
        if self._deliver_lines() and len(self._partial) > self.max_line:
            self._partial.clear()
            self.close()

    def eof_received(self) -> None:
        """Deliver the lines left, the last one even without its newline, then close."""
        if not self._deliver_lines():
            self._eof_deferred = True  # finish once the replies have drained
            return
        if self._partial and not self._closing:
            self.line_received(bytes(self._partial))
        self._partial.clear()
        super().eof_received()

    def output_drained(self) -> None:
        """Backpressure is over: deliver the lines held back, and a deferred EOF."""
        if self._deliver_lines() and self._eof_deferred:
            self._eof_deferred = False
            self.eof_received()

    def _end(self) -> None:
        """Also release the buffered partial line, up to ``max_line`` bytes."""
        super()._end()
        self._partial.clear()

    def _deliver_lines(self) -> bool:
        """``line_received`` each complete buffered line; False if backpressure stopped it."""
        buffer = self._partial
        start = 0
        while not (self._closing or self._paused) and (end := buffer.find(b"\n", start)) >= 0:
            self.line_received(bytes(buffer[start : end + 1]))
            start = end + 1
        del buffer[:start]
        return not self._paused


# For the type checker the mixin is a TCPServer (it serves stream sockets and
# uses ``socket``); at run time it derives from object, like the other mixins,
# so that the MRO of MultiplexingMixIn + TCPServer has the stdlib shape.
if TYPE_CHECKING:
    _StreamServerBase = TCPServer
else:
    _StreamServerBase = object


class MultiplexingMixIn(_StreamServerBase):
    """Serve every connection from the loop's thread, with non-blocking sockets.

    Put it first in the bases, with a stream server:
    ``class MyServer(MultiplexingMixIn, TCPServer)``.  ``RequestHandlerClass``
    must be a ``MultiplexedRequestHandler``.

    The server's hooks keep their meaning: ``verify_request`` refuses a
    connection, ``handle_error`` reports a handler's exception (then that
    connection alone is closed), ``service_actions`` runs every iteration,
    ``shutdown()`` wakes the loop at once (open connections stay open,
    unserved, until the next ``serve_forever`` or ``server_close()``), and
    ``server_close()`` ends every open connection (from another thread
    than a running loop's, it calls ``shutdown()`` first).
    ``handle_request()`` serves one connection to its end, on the caller's
    thread.  ``call_soon_threadsafe(callback)`` hands work from any thread
    to the loop's.

    With ``selector_class = selectors.SelectSelector``, a connection whose
    descriptor number is 1024 or more cannot be watched: it is refused,
    through ``handle_error`` with a ``ValueError`` that says so, and the
    connections already open go on being served.

    Class variables:
        accept_batch   connections accepted per readiness of the listener.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse, as the class statement runs, a mix with stdlib's server classes.

        See ``server.refuse_stdlib_base``: our mixin on stdlib's
        ``TCPServer`` (``http.server`` imported stdlib's) cannot work.
        """
        super().__init_subclass__(**kwargs)
        refuse_stdlib_base(cls, MultiplexingMixIn)

    #: At most this many accepts each time the listener is ready, then the
    #: ready connections get their turn.  A burst larger than this waits one
    #: iteration in the kernel's backlog.
    accept_batch: int = 64

    #: epoll where the platform has it, not stdlib's poll: this model watches
    #: every connection, and poll() scans them all on every wait.  Measured
    #: here (docs/select-poll-epoll.md): one wait costs poll 5.12 us at 100
    #: descriptors, 48.5 us at 1,000 and 913 us at 10,000; epoll 0.32 us at
    #: each.  Any ``selectors`` class still works.
    selector_class: type[selectors.BaseSelector] = selectors.DefaultSelector

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Create the table of open connections, then the server itself.

        Raises ``TypeError`` if ``RequestHandlerClass`` is a class that is
        not a ``MultiplexedRequestHandler`` (a ``StreamRequestHandler``
        would block the loop's thread, then fail); any other callable (a
        ``functools.partial``, a factory) is checked on each connection.
        """
        # Before super().__init__(): a failed bind calls server_close(),
        # which reads the table.  The loop thread owns it while a loop
        # serves; otherwise whichever one thread calls server_close() or
        # drain() (server_close() from another thread stops the loop first).
        self._connections: dict[MultiplexedRequestHandler, None] = {}
        # Callbacks call_soon_threadsafe() keeps for the loop, and whether a
        # loop will run them: both under _posting_lock, so that a callback is
        # either taken by a loop (which runs it, at the latest as it ends)
        # or run by its caller, never lost between the two.
        self._posted_callbacks: collections.deque[Callable[[], None]] = collections.deque()
        self._posting_lock = threading.Lock()
        self._posting_to: Reactor | None = None
        super().__init__(*args, **kwargs)
        factory = self.RequestHandlerClass
        if isinstance(factory, type) and not issubclass(factory, MultiplexedRequestHandler):
            self.server_close()  # the caller never gets the object to close
            raise TypeError(
                f"{type(self).__name__} calls its handler back from the loop and needs a "
                f"MultiplexedRequestHandler (or LineRequestHandler) subclass, not "
                f"{factory.__name__}; for a blocking handler use ThreadingTCPServer"
            )

    @property
    def connections(self) -> list[MultiplexedRequestHandler]:
        """The handlers of the connections open now, oldest first (a copy, from any thread)."""
        return list(self._connections)

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` on the loop's thread, soon; callable from any thread.

        The way for a worker thread to hand a result back to a connection:
        ``server.call_soon_threadsafe(lambda: handler.send(reply))``, since
        ``send()`` and ``close()`` may only be called on the loop's thread.
        While ``serve_forever()`` serves, the callback runs at the loop's
        next turn (or, if the loop is stopping, as it ends, still on its
        thread).  While no loop serves, it runs at once on the calling
        thread, like any call made while no loop runs.  An exception from
        it goes to ``handle_error()``.
        """
        with self._posting_lock:
            reactor = self._posting_to
            if reactor is not None:
                self._posted_callbacks.append(callback)
        if reactor is None:
            self._run_posted_callback(callback)
        else:
            reactor.call_soon_threadsafe(self._run_posted)

    def _run_posted(self) -> None:
        """Run the callbacks posted so far (the loop's thread, once per posting)."""
        posted = self._posted_callbacks
        while posted:
            self._run_posted_callback(posted.popleft())

    def _run_posted_callback(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            self.handle_error(None, None)

    def _take_posted(self, reactor: Reactor | None) -> None:
        """Direct ``call_soon_threadsafe()`` to ``reactor`` (``None``: to its callers).

        Called on the loop's thread as a loop starts and ends; when it ends,
        what was posted to it runs here, before anyone can post elsewhere.
        """
        with self._posting_lock:
            self._posting_to = reactor
        if reactor is None:
            self._run_posted()

    def _attach(self, reactor: Reactor) -> None:
        """Watch the listener and every connection still open from an earlier loop."""
        super()._attach(reactor)
        # Non-blocking, so that a batch of accepts ends with BlockingIOError
        # instead of waiting for a client that is not there; the caller's
        # timeout comes back when the loop ends, for handle_request().
        self._listener_timeout = self.socket.gettimeout()
        self.socket.setblocking(False)
        self._take_posted(reactor)
        for handler in list(self._connections):
            try:
                handler._attach(reactor)
            except ValueError:  # beyond this reactor's select() limit
                self.handle_error(handler.request, handler.client_address)
                handler._end()

    def _serving_ended(self) -> None:
        """The loop is done with this server: its connections are watched no more.

        Called on the loop's thread, which owns the connections until this
        returns: ``server_close()`` from another thread waits for it.
        Callbacks posted too late for the loop run here, on that thread.
        """
        for handler in list(self._connections):
            handler._detach()
        # OSError: the listener is already closed; no timeout to restore.
        with contextlib.suppress(OSError):
            self.socket.settimeout(self._listener_timeout)
        try:
            # After the detach: the reactor is closed by now, and a send()
            # these callbacks make must queue, not touch its selector.
            self._take_posted(None)
        finally:
            super()._serving_ended()

    # The listener's timeout before the loop made it non-blocking.
    _listener_timeout: float | None = None

    def _on_listener_ready(self, mask: int) -> None:
        """Reactor callback: accept until the backlog is empty, or ``accept_batch``."""
        if self._listener_closed():
            return
        for _ in range(self.accept_batch):
            if self._shutdown_requested or not self._handle_request_noblock():
                return

    def process_request(self, request: Any, client_address: Any) -> None:
        """Called by the loop for each verified connection: start its handler.

        Nothing runs to completion here: the handler's ``setup()`` runs, and
        the connection joins the loop.  Error handling: if the loop's
        selector cannot watch the socket, or ``setup()`` raises, the
        exception goes to ``handle_error`` and the connection is shut down
        by the pipeline (``finish()`` does not run: ``setup()`` never
        returned, or never ran).
        """
        if self._reactor is not None:
            self._reactor.check_watchable(request)
        request.setblocking(False)
        self.finish_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Called by ``process_request``: build the handler, then let the loop serve it.

        With no loop serving (``handle_request()``), a loop of its own
        serves this connection to its end before this returns, as the
        synchronous model would; the connections left open by an earlier
        ``serve_forever()`` wait meanwhile.
        """
        handler = self.RequestHandlerClass(request, client_address, self)
        if not isinstance(handler, MultiplexedRequestHandler):
            raise TypeError(
                f"{type(self).__name__} needs a MultiplexedRequestHandler, "
                f"got {type(handler).__name__}"
            )
        self._connections[handler] = None
        if self._reactor is not None:
            handler._attach(self._reactor)
            return
        with Reactor(self.selector_class) as reactor:
            self._take_posted(reactor)
            try:
                handler._attach(reactor)
                while not handler._ended:
                    for function, argument in reactor.select(None):
                        function(argument)
            finally:
                handler._detach()
                self._take_posted(None)

    def _forget(self, handler: MultiplexedRequestHandler) -> None:
        """Called by a handler as it ends: drop it from the table and the loop."""
        self._connections.pop(handler, None)
        handler._detach()

    def _wait_for_requests(self, deadline: float) -> bool:
        """Called by ``drain()`` after ``shutdown()``: serve the open connections alone.

        A loop of its own, without the listener, runs until every
        connection has ended or ``deadline`` passes.
        """
        if not self._connections:
            return True
        with Reactor(self.selector_class) as reactor:
            self._take_posted(reactor)
            try:
                for handler in list(self._connections):
                    handler._attach(reactor)
                while self._connections and (left := deadline - time.monotonic()) > 0:
                    for function, argument in reactor.select(left):
                        function(argument)
            finally:
                for handler in list(self._connections):
                    handler._detach()
                self._take_posted(None)
        return not self._connections

    def _cut_requests(self) -> int:
        """Called by ``drain()`` after the deadline, and by ``server_close()``: end them all.

        Every connection is ended even if a ``finish()`` raises
        ``KeyboardInterrupt`` or ``SystemExit`` (an ``Exception`` goes to
        ``handle_error``); the first such exception is re-raised at the end.
        """
        cut = 0
        error: BaseException | None = None
        for handler in list(self._connections):  # _end() removes it from the table
            cut += 1
            try:
                handler._end()
            except BaseException as exc:  # the others must still be closed
                error = error or exc
        if error is not None:
            raise error
        return cut

    def server_close(self) -> None:
        """Close the listening socket, then end every open connection (``finish()`` runs).

        Called from another thread while ``serve_forever()`` serves this
        server, it stops that loop first (``BaseServer.server_close()``,
        reached through ``super()`` before anything is closed, calls
        ``shutdown()``): the connections belong to the loop's thread until
        then, and its selector is not thread-safe.  Stdlib leaves the loop
        running on a closed socket.
        """
        super().server_close()
        self._cut_requests()


class MultiplexingTCPServer(MultiplexingMixIn, TCPServer):
    """A stream server that serves every connection in the loop's thread."""


if hasattr(socket, "AF_UNIX"):
    from .sockets import UnixStreamServer

    class MultiplexingUnixStreamServer(MultiplexingMixIn, UnixStreamServer):
        """A Unix-domain stream server with every connection in the loop's thread."""
