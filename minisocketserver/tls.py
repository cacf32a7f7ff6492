"""TLSMixIn: TLS for the stream servers, with a handshake that never stalls the loop.

Design map, part 4 of 6 (after admission.py).  Stdlib ``socketserver`` has
no TLS; the usual recipe, and Python 3.14's ``http.server.HTTPSServer``,
wraps the *listening* socket with ``SSLContext.wrap_socket``.  Then every
``accept()`` runs the handshake on the loop's thread, with no timeout: one
client that connects and sends nothing freezes the whole server, threading
or not (werkzeug, web2py and CherryPy users met it; keylime's
CVE-2023-38200).  Here the listener stays a plain socket, and each stage
of a connection runs where it cannot hold anyone else up::

    loop thread:  accept -> verify_request -> admit_request (admission.py):
                  watch the connection, no thread yet, deadline armed
                  ... its ClientHello is readable -> process_request:
                  wrap it (no I/O: do_handshake_on_connect=False) -> the model
    worker/child: finish_request: do_handshake() under what is left of the
                  deadline -> the handler (plaintext) -> shutdown_request:
                  close_notify if the peer is still there, then FIN, close

So a silent client costs a descriptor and a timer in the loop, never a
worker thread, a pool slot or a child; a client that starts a handshake
and stalls holds its worker at most ``handshake_timeout`` seconds, from
its connect.  In the synchronous ``TLSServer`` the handshake runs on the
loop's thread, since that is where its requests run: silent clients still
wait in the loop, but one that stalls mid-handshake holds the server until
its deadline.

The multiplexing model has no worker to block, so its handshake runs in
the loop, never waiting: ``MultiplexingTLSServer`` wraps the connection in
a ``TLSTransport`` (an ``ssl.SSLObject`` on two ``MemoryBIO`` objects, as trio's
``SSLStream`` and asyncio's SSL protocol do), advances the handshake one
step per readiness of the socket, times it with a reactor timer, and
builds the handler only once it is complete.

Handlers run unchanged: ``self.request`` is the ``ssl.SSLSocket``
(``version()``, ``selected_alpn_protocol()``, ``getpeercert()``), and a
``StreamRequestHandler``'s ``rfile``/``wfile`` carry plaintext.  SNI, ALPN
and client certificates are the context's business (``sni_callback``,
``set_alpn_protocols``, ``verify_mode``).  A ``MultiplexedRequestHandler``
gets plaintext in ``data_received`` and its ``send()`` encrypts; its
``self.request`` is the ``TLSTransport``, with the same methods (and
``cipher()``), and the session itself as ``self.request.ssl_object``.

Failures are not errors.  A handshake that fails (plain HTTP on the TLS
port, a certificate the client rejects, a scanner) or misses its deadline
is logged at debug, counted in ``server.tls_stats``, and its connection
closed: it never reaches the handler, nor ``handle_error`` as a traceback.

The 3.14 pattern on these classes: a subclass that wraps ``self.socket``
in ``server_activate()`` (as ``HTTPSServer`` does) is noticed before the
first accept: the listener is unwrapped into a plain socket, and its
context becomes the server's, so its connections take the path above.

Resource handling: from ``process_request`` on, the request *is* the
``SSLSocket`` (``wrap_socket`` takes over the descriptor of the accepted
socket); whoever owns the request shuts the ``SSLSocket`` down.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any, cast

from .admission import _PEEK_NOW, KEEP_WAITING, AdmissionMixIn
from .multiplexing_mixin import MultiplexingMixIn
from .reactor import Reactor, Timer
from .server import HandlerFactory, logger
from .sockets import TCPServer
from .threading_mixin import ThreadingMixIn
from .threadpool_mixin import ThreadPoolMixIn

# For the type checker the mixin is a TCPServer (it has a listening socket
# and accepts); at run time it derives from object, like the other mixins,
# so that the MRO of e.g. TLSMixIn + ThreadingMixIn + TCPServer has the
# stdlib shape.
if TYPE_CHECKING:
    _StreamServerBase = TCPServer
else:
    _StreamServerBase = object


class TLSStats:
    """How a server's TLS connections ended their handshakes; read from any thread.

    Read-only properties (counts since the server was built):
        completed   handshakes that succeeded: the handler ran.
        failed      handshakes that failed (a protocol error, a rejected
                    certificate, the client closing or resetting first).
        timed_out   clients that had not finished by ``handshake_timeout``
                    (silent ones, closed by the loop, included).

    A lock guards the counts: workers add to them while the loop does too.
    Forked children cannot add to their parent's memory: with
    ``share_with_children()`` each of their outcomes is one byte written
    to a pipe, which the parent counts whenever it reads the figures.
    """

    _OUTCOMES = ("completed", "failed", "timed_out")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self._OUTCOMES, 0)
        self._pid = os.getpid()
        # The pipe from forked children (read end, write end), if shared.
        self._pipe: tuple[int, int] | None = None

    def share_with_children(self) -> None:
        """Let forked children report their outcomes (``ForkingTLSServer`` calls it)."""
        reader, writer = os.pipe()
        # Neither end may block: a child must not wait on a parent that has
        # not read for a while (past 64 KiB of unread outcomes, a child's
        # count is dropped), and the parent reads only what is there.
        os.set_blocking(reader, False)
        os.set_blocking(writer, False)
        self._pipe = (reader, writer)

    def record(self, outcome: str) -> None:
        """Count one handshake: ``outcome`` is ``"completed"``, ``"failed"`` or ``"timed_out"``."""
        pipe = self._pipe
        if pipe is not None and os.getpid() != self._pid:
            with contextlib.suppress(OSError):  # the pipe is full, or closed
                os.write(pipe[1], bytes([self._OUTCOMES.index(outcome)]))
            return
        with self._lock:
            self._counts[outcome] += 1

    def _count(self, outcome: str) -> int:
        with self._lock:
            if self._pipe is not None:
                self._collect(self._pipe[0])
            return self._counts[outcome]

    def _collect(self, reader: int) -> None:
        """Count what the children wrote so far (caller holds the lock)."""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(reader, 4096):
                for code in chunk:
                    self._counts[self._OUTCOMES[code]] += 1

    @property
    def completed(self) -> int:
        return self._count("completed")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def timed_out(self) -> int:
        return self._count("timed_out")

    def close(self) -> None:
        """Count what the children reported, then close the pipe (idempotent)."""
        with self._lock:
            pipe, self._pipe = self._pipe, None
            if pipe is not None:
                self._collect(pipe[0])
                os.close(pipe[0])
                os.close(pipe[1])

    def __repr__(self) -> str:
        return (f"TLSStats(completed={self.completed}, failed={self.failed}, "
                f"timed_out={self.timed_out})")


class TLSMixIn(AdmissionMixIn, _StreamServerBase):
    """Serve TLS: admit, wrap, handshake in the model's worker, then the handler.

    Put it first in the bases, before the concurrency mixin:
    ``class ThreadingTLSServer(TLSMixIn, ThreadingMixIn, TCPServer)``.
    Constructed as ``Cls(server_address, RequestHandlerClass,
    bind_and_activate=True, *, context)`` with a server-side
    ``ssl.SSLContext``.

    Class variables:
        handshake_timeout   seconds from connect to a finished handshake.

    Instance variables:
        context     the ``ssl.SSLContext`` connections are wrapped with.
        tls_stats   a ``TLSStats``: handshakes completed, failed, timed out.

    Methods to override: those of ``AdmissionMixIn``, and
    ``handshake_failed(request, client_address, exc)``.
    """

    #: Seconds a client has, from its connect, to finish its handshake: the
    #: wait for its first byte (in the loop) and the handshake itself (in
    #: its worker) share it.  Past it the connection is closed quietly
    #: (logged at debug, counted in ``tls_stats.timed_out``).  asyncio
    #: allows 60 s; 10 s is plenty for a real client and frees the
    #: descriptor of a silent one six times sooner.
    handshake_timeout: float = 10.0

    def __init__(
        self,
        server_address: Any,
        RequestHandlerClass: HandlerFactory,
        bind_and_activate: bool = True,
        *,
        context: ssl.SSLContext | None = None,
    ) -> None:
        """Build the server; ``context`` is required unless a subclass wraps the listener.

        Raises ``ValueError`` for a client-side context, and ``TypeError``
        when there is no context at all once the listener is activated.
        """
        if context is not None and context.protocol == ssl.PROTOCOL_TLS_CLIENT:
            raise ValueError(
                f"{type(self).__name__} needs a server-side context "
                "(ssl.PROTOCOL_TLS_SERVER or ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))"
            )
        self.context = context
        self.tls_stats = TLSStats()
        # SSLSocket -> the monotonic deadline of its handshake, from
        # process_request (loop thread) to finish_request (a worker): the
        # lock, because workers take entries while the loop adds them.
        self._handshake_deadlines: dict[ssl.SSLSocket, float] = {}
        self._deadlines_lock = threading.Lock()
        super().__init__(server_address, RequestHandlerClass, bind_and_activate)
        if bind_and_activate and context is None and not self._listener_wrapped():
            self.server_close()  # the caller never gets the object to close
            raise TypeError(f"{type(self).__name__}() needs context=ssl.SSLContext(...)")

    # -- the listener -----------------------------------------------------

    def _listener_wrapped(self) -> bool:
        return isinstance(self.socket, ssl.SSLSocket)

    def _unwrap_listener(self) -> None:
        """Turn a listener a subclass wrapped (the 3.14 pattern) back into a plain socket.

        Called before the loop watches the listener and before each
        ``accept()``.  Accepting on an ``SSLSocket`` listener would run the
        handshake inside ``accept()``, on the loop's thread, with no
        deadline.  Its context, the subclass's last word, becomes ours.
        The descriptor keeps its number, so a selector watching it is
        undisturbed.
        """
        wrapped = self.socket
        if not isinstance(wrapped, ssl.SSLSocket):
            return
        self.context = wrapped.context
        timeout = wrapped.gettimeout()
        plain = socket.socket(wrapped.family, wrapped.type, wrapped.proto, wrapped.detach())
        plain.settimeout(timeout)
        self.socket = plain

    def _attach(self, reactor: Reactor) -> None:
        """Unwrap a wrapped listener before the loop starts watching it."""
        self._unwrap_listener()
        super()._attach(reactor)

    def get_request(self) -> tuple[Any, Any]:
        """Called by the loop: ``accept()`` on the plain listener (unwrapped if need be).

        The connection gets TCP_NODELAY, as asyncio gives every connection.
        TLS 1.3 servers send their session tickets right after the
        handshake; with Nagle's algorithm on, the first reply then waits for
        the client's delayed ACK of them, about 40 ms on Linux: measured
        about 22 new connections/s one at a time with it and 353-476/s
        without (``python benchmarks/tls.py``, commit b2ea4f2, the
        ``+nodelay`` rows of docs/tls-performance.md).
        """
        self._unwrap_listener()
        request, client_address = super().get_request()
        if request.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # the client already reset it
                request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return request, client_address

    # -- the pipeline -----------------------------------------------------

    def admission_time_limit(self) -> float | None:
        """The wait for the ClientHello is part of the handshake's time."""
        return self.handshake_timeout

    def first_bytes_arrived(self, request: Any, client_address: Any) -> Any:
        """Called by the admission stage: go on once the ClientHello has begun to arrive.

        Alone, the stage calls this only when the connection has bytes, and
        this adds one peek.  Behind a PROXY header (``ProxyProtocolMixIn``
        first in the bases) the bytes that woke the stage may have been the
        header's alone, which that stage took: then the connection stays
        held, costing no worker, until its ClientHello (or its end) comes.
        """
        try:
            if request.recv(1, _PEEK_NOW):
                return super().first_bytes_arrived(request, client_address)
        except OSError:
            pass  # nothing yet, or a reset: the stage sees the end on its next turn
        return KEEP_WAITING

    def admission_refused(self, request: Any, client_address: Any, reason: str) -> None:
        """Count a client that never sent its ClientHello, then close it (see there)."""
        self.tls_stats.record("timed_out" if reason == "timeout" else "failed")
        super().admission_refused(request, client_address, reason)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Called by the loop once the ClientHello is readable: wrap, then hand on.

        ``wrap_socket(do_handshake_on_connect=False)`` does no I/O, so the
        loop never waits here; the handshake is left to ``finish_request``
        on the model's worker.  The wrapped socket is the request from now
        on, for the model and for the loop's error path (see ``HandOff``).
        """
        deadline = self.admission_deadline(request)
        if deadline is None:  # handle_request(): the clock starts now
            deadline = time.monotonic() + self.handshake_timeout
        context = self.context
        if context is None:
            raise TypeError(f"{type(self).__name__} has no context: pass context=...")
        try:
            tls = context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            # A client that sent its ClientHello and then reset: since the
            # fix of CVE-2023-40217, wrap_socket() refuses a socket closed
            # with unread data ("Closed before TLS handshake with data in
            # recv buffer").  A failed handshake like any other: counted,
            # never a traceback through handle_error.
            self.tls_stats.record("failed")
            self.handshake_failed(request, client_address, exc)
            self.shutdown_request(request)
            return
        with self._deadlines_lock:
            self._handshake_deadlines[tls] = deadline
        handoff = self._handoff_for(request)
        if handoff is not None:
            handoff.request = tls
        super().process_request(tls, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Called on the worker (the child; the loop for ``TLSServer``): handshake, then handler.

        A handshake that fails or runs out of time ends here: the handler
        never sees that connection.
        """
        if isinstance(request, ssl.SSLSocket) and not self._handshake(request, client_address):
            return
        super().finish_request(request, client_address)

    def _handshake(self, request: ssl.SSLSocket, client_address: Any) -> bool:
        """Run the handshake in blocking mode, bounded by the connection's deadline."""
        with self._deadlines_lock:
            deadline = self._handshake_deadlines.pop(request, None)
        if deadline is None:
            deadline = time.monotonic() + self.handshake_timeout
        timeout = request.gettimeout()
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the handshake deadline passed before a worker was free")
            request.settimeout(remaining)
            request.do_handshake()
        except TimeoutError as exc:  # socket.timeout, on 3.10 too
            self.tls_stats.record("timed_out")
            self.handshake_failed(request, client_address, exc)
            return False
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self.tls_stats.record("failed")
            self.handshake_failed(request, client_address, exc)
            return False
        finally:
            with contextlib.suppress(OSError):
                request.settimeout(timeout)
        self.tls_stats.record("completed")
        return True

    def handshake_failed(self, request: Any, client_address: Any, exc: Exception) -> None:
        """Called on the worker when a handshake failed or timed out; logs at debug.

        Also called on the loop's thread by ``process_request`` when the
        socket cannot even be wrapped (the client reset after its
        ClientHello).

        ``shutdown_request`` follows, as for any request.  Override it to
        log louder or to count by cause; do not raise from it.
        """
        logger.debug("%s: TLS handshake with %s failed: %s",
                     type(self).__name__, client_address, exc)

    def shutdown_request(self, request: Any) -> None:
        """End a connection: close_notify if a session is up, then FIN and close.

        The close_notify is sent without waiting: in non-blocking mode,
        ``unwrap()`` writes it if the kernel takes it now, and gives up
        on the peer's answer (``SSLWantReadError``).  A peer already gone
        (EPIPE, ECONNRESET) is not an error: it needs no close_notify.
        """
        if isinstance(request, ssl.SSLSocket) and request.version() is not None:
            with contextlib.suppress(OSError, ValueError):
                request.setblocking(False)
                request.unwrap()
        super().shutdown_request(request)

    def close_request(self, request: Any) -> None:
        """Forget the request's handshake deadline, then close it.

        Here rather than in ``shutdown_request``: a forking parent only
        closes its copy, and a request whose handshake never ran (a pool's
        queue cut by ``drain()``) still has an entry.
        """
        if isinstance(request, ssl.SSLSocket):
            with self._deadlines_lock:
                self._handshake_deadlines.pop(request, None)
        super().close_request(request)


class TLSServer(TLSMixIn, TCPServer):
    """TLS, one connection at a time, on the loop's thread.

    A client that connects and says nothing waits in the loop, as in the
    other models, and costs nothing else.  But this model runs each
    request, handshake included, on the loop's thread: one client that
    starts a handshake and stalls holds the server until its
    ``handshake_timeout`` deadline.  That bound is all this model can
    give; for a public port use ``ThreadingTLSServer``,
    ``ThreadPoolTLSServer`` or ``ForkingTLSServer``.
    """


class ThreadingTLSServer(TLSMixIn, ThreadingMixIn, TCPServer):
    """TLS with a thread per connection; the handshake runs on that thread."""


class ThreadPoolTLSServer(TLSMixIn, ThreadPoolMixIn, TCPServer):
    """TLS on a pool of worker threads; silent clients never take a worker."""


if hasattr(os, "fork"):
    from .forking_mixin import ForkingMixIn

    class ForkingTLSServer(TLSMixIn, ForkingMixIn, TCPServer):
        """TLS with a child process per connection; the handshake runs in the child.

        The children report their handshakes to ``tls_stats`` through a pipe.
        """

        def __init__(
            self,
            server_address: Any,
            RequestHandlerClass: HandlerFactory,
            bind_and_activate: bool = True,
            *,
            context: ssl.SSLContext | None = None,
        ) -> None:
            super().__init__(server_address, RequestHandlerClass, bind_and_activate,
                             context=context)
            self.tls_stats.share_with_children()

        def server_close(self) -> None:
            """Reap the children (see ``ForkingMixIn``), then count their last reports."""
            super().server_close()
            self.tls_stats.close()


# -- the multiplexing model: TLS on memory BIOs, driven by readiness ------------

#: Plaintext encrypted per step of ``TLSTransport.send()``: one TLS record's
#: worth, so that what the kernel refuses is at most one record.
_RECORD = 16 * 1024


class TLSTransport:
    """A non-blocking socket with TLS in between, for the multiplexing model.

    The ``ssl.SSLObject`` (``context.wrap_bio``) never touches the socket:
    ciphertext goes through two ``MemoryBIO`` objects, and this object moves it
    between them and the kernel, never waiting (trio's ``SSLStream`` and
    asyncio's SSL protocol work the same way).  A ``MultiplexedRequestHandler``
    gets it as ``self.request`` and uses it as its socket: ``recv()``
    returns plaintext, ``send()`` takes plaintext.  The session is
    ``self.request.ssl_object`` (``version()``, ``selected_alpn_protocol()``,
    ``getpeercert()``, ``cipher()``; the first four are also methods here,
    as on an ``ssl.SSLSocket``).

    Invariant: ``send()`` reports plaintext as sent only once all of its
    ciphertext is in the kernel.  Ciphertext the kernel refused is kept,
    and the plaintext it carries is reported on a later ``send()`` (the
    caller offers its unsent bytes again, as every caller of
    ``socket.send`` does); so a handler keeps watching for writability
    exactly as long as bytes of its are on their way.

    Threads: the loop's thread only, like the handler that owns it.
    """

    def __init__(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        self.socket = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.ssl_object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._cipher = bytearray()  # ciphertext the kernel has not taken yet
        self._ahead = 0  # plaintext encrypted into _cipher, not yet reported sent

    # -- what a socket offers --------------------------------------------------

    def fileno(self) -> int:
        return self.socket.fileno()

    def setblocking(self, flag: bool) -> None:
        self.socket.setblocking(flag)

    def recv(self, bufsize: int) -> bytes:
        """All the plaintext available now (``bufsize`` is a hint); ``b""`` at the end.

        Raises ``BlockingIOError`` when no whole record has arrived yet.
        The end is the peer's close_notify, or its FIN without one: a peer
        that vanishes is not an error.  Everything decrypted is returned,
        not just ``bufsize`` bytes: what stayed in the memory BIO would not
        make the socket readable again.
        """
        chunks = []
        while True:
            try:
                chunk = self.ssl_object.read(_RECORD)
            except ssl.SSLWantReadError:
                chunk = None
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                chunk = b""
            if chunk:
                chunks.append(chunk)
                continue
            if chunk == b"":
                # The end.  After the peer's close_notify, read() returns
                # b"" rather than raising SSLZeroReturnError: taken as data,
                # it would loop here forever and freeze the whole loop.
                if chunks:
                    break  # the plaintext first; the end on the next call
                return b""
            if chunks:
                break
            data = self.socket.recv(65536)  # BlockingIOError: nothing more yet
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()
        # Reading can make TLS write (a key update): send it along, if it fits.
        self._flush()
        return b"".join(chunks)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt ``data`` a record at a time; return the plaintext bytes now in the kernel."""
        accepted = 0
        if self._ahead:
            if not self._flush():
                return 0
            accepted, self._ahead = self._ahead, 0
        # The views are released on every path, exceptions included: ``data``
        # is often the handler's output buffer, which the handler clears when
        # the peer has gone (EPIPE from _flush), and a bytearray with a live
        # view refuses to resize (BufferError, which would end the loop).
        with memoryview(data) as raw, raw.cast("B") as view:
            while accepted < len(view):
                with view[accepted : accepted + _RECORD] as chunk:
                    size = len(chunk)
                    self.ssl_object.write(chunk)
                if not self._flush():
                    self._ahead = size
                    break
                accepted += size
        return accepted

    def shutdown(self, how: int) -> None:
        """Send close_notify if a session is up and the kernel takes it now, then ``shutdown()``."""
        if self.ssl_object.version() is not None:
            with contextlib.suppress(ssl.SSLError):
                self.ssl_object.unwrap()  # writes close_notify; the peer's is not awaited
            with contextlib.suppress(OSError):
                self._flush()
        self.socket.shutdown(how)

    def close(self) -> None:
        self.socket.close()

    def version(self) -> str | None:
        return self.ssl_object.version()

    def selected_alpn_protocol(self) -> str | None:
        return self.ssl_object.selected_alpn_protocol()

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self.ssl_object.getpeercert(binary_form)

    def cipher(self) -> tuple[str, str, int] | None:
        return self.ssl_object.cipher()

    # -- the handshake, driven by the loop -------------------------------------

    def handshake_step(self) -> bool:
        """Feed what the kernel has to the handshake; True once it is complete.

        Called by the loop when the socket is readable or writable.  Raises
        ``ssl.SSLError`` (or ``OSError``) when the handshake fails.
        """
        try:
            data = self.socket.recv(65536)
        except BlockingIOError:
            pass
        else:
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()
        try:
            self.ssl_object.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return False
        except ssl.SSLError:
            with contextlib.suppress(OSError):
                self._flush()  # the alert, so the client learns why
            raise
        self._flush()
        return True

    @property
    def wants_write(self) -> bool:
        """Whether ciphertext waits for room in the kernel's send buffer."""
        return bool(self._cipher)

    @property
    def has_buffered(self) -> bool:
        """Whether ciphertext was read from the kernel but not decrypted yet."""
        return self._incoming.pending > 0 or self.ssl_object.pending() > 0

    def _flush(self) -> bool:
        """Move ciphertext to the kernel as far as it takes it; True if none is left."""
        self._cipher += self._outgoing.read()
        while self._cipher:
            try:
                sent = self.socket.send(self._cipher)
            except BlockingIOError:
                return False
            del self._cipher[:sent]
        return True


class _Handshaking:
    """A connection whose handshake the multiplexing loop drives (loop thread only)."""

    __slots__ = ("client_address", "timer", "transport")

    def __init__(self, transport: TLSTransport, client_address: Any) -> None:
        self.transport = transport
        self.client_address = client_address
        self.timer: Timer | None = None


class MultiplexingTLSServer(TLSMixIn, MultiplexingMixIn, TCPServer):
    """TLS with every connection in the loop's thread: the handshake never blocks.

    After admission the handshake runs in the loop, one step per readiness
    of the socket (``TLSTransport.handshake_step``), its deadline a timer
    of the reactor; only once it is complete is the handler built, so a
    failed handshake never reaches ``setup()``.  The handler's
    ``self.request`` is a ``TLSTransport``: ``data_received`` gets
    plaintext, ``send()`` encrypts, ``self.request.ssl_object`` is the
    session.  Connections still in their handshake when the loop lets the
    server go are closed, as the admission stage closes its own.
    """

    # Connections in their handshake, owned by the loop's thread.
    _handshaking: dict[TLSTransport, _Handshaking] | None = None

    def process_request(self, request: Any, client_address: Any) -> None:
        """Called by the loop after admission: start the handshake; once done, the handler."""
        if isinstance(request, TLSTransport):  # the handshake is complete
            MultiplexingMixIn.process_request(self, request, client_address)
            self._deliver_buffered(request)
            return
        deadline = self.admission_deadline(request)
        if deadline is None:
            deadline = time.monotonic() + self.handshake_timeout
        context = self.context
        if context is None:
            raise TypeError(f"{type(self).__name__} has no context: pass context=...")
        transport = TLSTransport(request, context)
        handoff = self._handoff_for(request)
        if handoff is not None:
            handoff.request = transport
        reactor = self._reactor
        if reactor is None:  # handle_request(): no loop to drive it, so wait for it here
            if self._handshake_blocking(transport, client_address, deadline):
                MultiplexingMixIn.process_request(self, transport, client_address)
            else:
                self.shutdown_request(transport)
            return
        request.setblocking(False)
        reactor.check_watchable(request)
        state = _Handshaking(transport, client_address)
        if self._handshaking is None:
            self._handshaking = {}
        self._handshaking[transport] = state
        if handoff is not None:
            handoff.take()  # the handshake stage owns it from here
        state.timer = reactor.call_later(
            max(0.0, deadline - time.monotonic()), lambda: self._handshake_expired(state)
        )
        self._handshake_advance(state)

    def _handshake_blocking(
        self, transport: TLSTransport, client_address: Any, deadline: float
    ) -> bool:
        """The handshake of a request served by ``handle_request()``: bounded, on this thread."""
        sock = transport.socket
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("the handshake deadline passed")
                sock.settimeout(remaining)
                try:
                    transport.ssl_object.do_handshake()
                except ssl.SSLWantReadError:
                    transport._flush()
                    data = sock.recv(65536)
                    if data:
                        transport._incoming.write(data)
                    else:
                        transport._incoming.write_eof()
                    continue
                transport._flush()
                sock.setblocking(False)
                self.tls_stats.record("completed")
                return True
        except TimeoutError as exc:
            self.tls_stats.record("timed_out")
            self.handshake_failed(transport, client_address, exc)
        except (OSError, ValueError) as exc:
            self.tls_stats.record("failed")
            self.handshake_failed(transport, client_address, exc)
        return False

    def _handshake_advance(self, state: _Handshaking) -> None:
        """One step of a handshake (loop thread): readiness came, or it just started."""
        transport = state.transport
        reactor = self._reactor
        try:
            done = transport.handshake_step()
        except (OSError, ValueError) as exc:
            self._handshake_over(state)
            self.tls_stats.record("failed")
            self.handshake_failed(transport, state.client_address, exc)
            self.shutdown_request(transport)
            return
        if not done:
            if reactor is not None:
                events = selectors.EVENT_READ
                if transport.wants_write:
                    events |= selectors.EVENT_WRITE
                reactor.watch(transport, events, lambda mask: self._handshake_advance(state))
            return
        self._handshake_over(state)
        self.tls_stats.record("completed")
        self._take_request(transport, state.client_address, admitted=True)

    def _handshake_expired(self, state: _Handshaking) -> None:
        """The reactor's timer: the handshake missed its deadline."""
        state.timer = None
        self._handshake_over(state)
        self.tls_stats.record("timed_out")
        self.handshake_failed(state.transport, state.client_address,
                              TimeoutError("the handshake deadline passed"))
        self.shutdown_request(state.transport)

    def _handshake_over(self, state: _Handshaking) -> None:
        """Stop driving a handshake: unwatch, cancel its timer, forget it."""
        if self._handshaking is not None:
            self._handshaking.pop(state.transport, None)
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        if self._reactor is not None:
            self._reactor.unwatch(state.transport)

    def _deliver_buffered(self, transport: TLSTransport) -> None:
        """Have the new handler read what arrived with the end of the handshake.

        A client may send its first request right behind its Finished
        message, in the same segment: the handshake step read both, and
        the socket will not turn readable for bytes already taken from it.
        """
        reactor = self._reactor
        if reactor is None or not transport.has_buffered or not self._connections:
            return
        handler = next(reversed(self._connections))
        if handler.request is cast(Any, transport):
            reactor.call_later(0.0, lambda: handler._on_readable(selectors.EVENT_READ))

    def _detach(self, reactor: Reactor) -> None:
        """Stop watching the connections in their handshake too."""
        super()._detach(reactor)
        for state in (self._handshaking or {}).values():
            reactor.unwatch(state.transport)

    def _serving_ended(self) -> None:
        """Close the connections still in their handshake: no loop is left to drive them."""
        handshaking = self._handshaking or {}
        try:
            while handshaking:
                _, state = handshaking.popitem()
                if state.timer is not None:
                    state.timer.cancel()
                with contextlib.suppress(OSError):
                    self.shutdown_request(state.transport)
        finally:
            super()._serving_ended()
