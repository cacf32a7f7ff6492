"""The request handlers: where the user's code runs.

Design map, part 5 of 6.  The server builds one handler object per request
(``finish_request`` calls ``RequestHandlerClass(request, client_address,
server)``), and the constructor runs the handler's whole life::

    __init__ -> setup()  -> handle()  -> finish()      finish() runs even if
                prepare     the work     clean up       handle() raised

``StreamRequestHandler`` wraps a connection in two file objects, ``rfile``
and ``wfile``; ``DatagramRequestHandler`` gives the same two names over one
datagram and its reply, so a line-oriented handler can serve either.

Resource handling: the handler closes the file objects it opened, never the
connection itself; ``shutdown_request()`` on the server does that after the
handler returns.
"""

from __future__ import annotations

import contextlib
import io
import socket
from typing import Any, BinaryIO, cast


class BaseRequestHandler:
    """One object per request; construct it and the request is handled.

    Instance variables: request, client_address, server.
    Methods to override: setup, handle, finish.
    """

    def __init__(self, request: Any, client_address: Any, server: Any) -> None:
        """Called by ``server.finish_request()``: run setup, handle, finish."""
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self) -> None:
        """Called first, before ``handle()``; if it raises, nothing else runs."""

    def handle(self) -> None:
        """Called after ``setup()``: serve the request.  Override this."""

    def finish(self) -> None:
        """Called after ``handle()``, even when ``handle()`` raised."""


class _SocketWriter(io.BufferedIOBase):
    """An unbuffered ``wfile``: every ``write()`` sends all its bytes at once.

    ``socket.makefile("wb", 0)`` would return a raw ``SocketIO``, whose
    ``write()`` may send only part of the data and return a short count;
    handlers written as ``wfile.write(reply)`` would then lose bytes.
    """

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        """Send all of ``data`` (blocking as long as needed); return its length."""
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes

    def fileno(self) -> int:
        return self._sock.fileno()


class StreamRequestHandler(BaseRequestHandler):
    """A handler for connections, with ``rfile``/``wfile`` file objects.

    Class variables:
        rbufsize                 ``rfile`` buffer size (-1: default buffering).
        wbufsize                 ``wfile`` buffer size (0: unbuffered, every
                                 write is sent at once).
        timeout                  socket timeout in seconds for this
                                 connection (``None``: block forever).
        disable_nagle_algorithm  set TCP_NODELAY (send small writes now).
    """

    #: ``rfile`` buffering; -1 is Python's default buffer size.
    rbufsize: int = -1
    #: ``wfile`` buffering; 0 sends each write at once.
    wbufsize: int = 0
    #: Per-connection socket timeout; reads and writes past it raise
    #: ``TimeoutError``.  ``None`` (stdlib's default) lets one silent client
    #: hold its thread forever.
    timeout: float | None = None
    #: Set TCP_NODELAY: small writes go out at once instead of waiting to be
    #: coalesced (Nagle), trading packets for latency.
    disable_nagle_algorithm: bool = False

    def setup(self) -> None:
        """Apply the socket options and open ``rfile`` and ``wfile``."""
        self.connection: socket.socket = self.request
        if self.timeout is not None:
            self.connection.settimeout(self.timeout)
        if self.disable_nagle_algorithm:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile = cast(BinaryIO, self.connection.makefile("rb", self.rbufsize))
        if self.wbufsize:
            self.wfile = cast(BinaryIO, self.connection.makefile("wb", self.wbufsize))
        else:
            self.wfile = cast(BinaryIO, _SocketWriter(self.connection))

    def finish(self) -> None:
        """Flush what ``wfile`` still buffers, then close both file objects."""
        if not self.wfile.closed:
            # If the client is gone (EPIPE, ECONNRESET), what is unsent cannot
            # be delivered, and the files must still be closed.
            with contextlib.suppress(OSError):
                self.wfile.flush()
        self.wfile.close()
        self.rfile.close()


class DatagramRequestHandler(BaseRequestHandler):
    """A handler for one datagram: read it from ``rfile``, write the reply to ``wfile``.

    Instance variables: packet (the datagram), socket (the server's), rfile,
    wfile.  ``finish()`` sends whatever was written to ``wfile`` as one
    datagram back to the client, even if that is nothing.
    """

    def setup(self) -> None:
        """Split the request and open in-memory ``rfile``/``wfile``."""
        self.packet: bytes
        self.socket: socket.socket
        self.packet, self.socket = self.request
        self.rfile = io.BytesIO(self.packet)
        self.wfile = io.BytesIO()

    def finish(self) -> None:
        """Send ``wfile``'s contents to the client as one datagram."""
        self.socket.sendto(self.wfile.getvalue(), self.client_address)
