"""The stream-server models the fault suite runs every scenario against.

One service, written once per handler API, so that every model answers a
client identically:

* a request is a line; a last line without ``\\n`` is completed by the
  client's half-close (EOF).  Several requests may share a connection.
* ``big N``          -> N bytes of ``x`` (a large reply)
* ``raise error``    -> the handler raises RuntimeError
* ``raise exit``     -> the handler raises SystemExit
* ``raise interrupt``-> the handler raises KeyboardInterrupt
* anything else      -> ``<request>\\n`` (the line without its ``\\n``)

``MODELS`` lists the concurrency models present in this tree: the
synchronous ``TCPServer``, ``ThreadingTCPServer``, ``ForkingTCPServer``, and
``MultiplexingTCPServer`` and ``ThreadPoolTCPServer`` when the package has
them (found by name, so the suite covers a model from the commit that
adds it).

Errors are observed through a pipe, not a list: a forked child runs the
handler and ``handle_error`` in another process, and the pipe reaches the
test from every thread and process alike, as an event the test can wait on.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import minisocketserver as socketserver

#: Longest request line a handler reads (a slow client cannot grow it).
MAX_LINE = 65536

#: The exceptions ``raise NAME`` raises.
RAISES: dict[bytes, type[BaseException]] = {
    b"error": RuntimeError,
    b"exit": SystemExit,
    b"interrupt": KeyboardInterrupt,
}


def answer(line: bytes) -> bytes:
    """The service: the reply to one request line (or the exception it raises)."""
    body = line.rstrip(b"\n")
    if body.startswith(b"big "):
        return b"x" * int(body[4:])
    if body.startswith(b"raise "):
        raise RAISES[body[6:]]("raised on request")
    return b"<" + body + b">\n"


def reply_for(request: bytes) -> bytes:
    """What a client must receive for ``request`` (echo requests only)."""
    return answer(request)


def stream_handler(module: Any) -> type:
    """The service as a ``module.StreamRequestHandler`` (ours, or stdlib's as oracle)."""

    class FaultHandler(module.StreamRequestHandler):  # type: ignore[misc,name-defined]
        def handle(self) -> None:
            while True:
                line = self.rfile.readline(MAX_LINE)
                if not line:
                    return
                self.wfile.write(answer(line))
                if not line.endswith(b"\n"):
                    return  # completed by EOF: nothing can follow

    return FaultHandler


FaultHandler = stream_handler(socketserver)

if hasattr(socketserver, "LineRequestHandler"):

    class MuxFaultHandler(socketserver.LineRequestHandler):  # type: ignore[misc,name-defined]
        """The service for the multiplexing model; records its peak queued output."""

        def line_received(self, line: bytes) -> None:
            self.send(answer(line))
            self.server.peak_pending = max(self.server.peak_pending, self.pending)

        def finish(self) -> None:
            events = self.server.events
            if events is not None:
                events.report_name("finish")


class ErrorPipe:
    """Where ``handle_error`` reports, from any thread or forked child.

    Each report is one short line (the exception's class name) written with
    one ``os.write`` on a non-blocking pipe: atomic, and it never blocks the
    server even if nobody reads.
    """

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)
        self._buffer = b""
        self.seen: list[str] = []

    def report(self, exc: BaseException | None) -> None:
        self.report_name(type(exc).__name__)

    def report_name(self, name: str) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self.write_fd, name.encode() + b"\n")

    def wait_for(self, count: int, timeout: float = 10.0, name: str | None = None) -> list[str]:
        """Wait until ``count`` reports (named ``name``, if given) arrived, or ``timeout``.

        Returns every report so far.
        """
        deadline = time.monotonic() + timeout
        while len([n for n in self.seen if name in (None, n)]) < count:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                break
            self._take(os.read(self.read_fd, 65536))
        return self.seen

    def collected(self) -> list[str]:
        """Every report so far, without waiting."""
        while select.select([self.read_fd], [], [], 0)[0]:
            self._take(os.read(self.read_fd, 65536))
        return self.seen

    def _take(self, data: bytes) -> None:
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        self.seen += [name.decode() for name in lines]

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


@dataclass(frozen=True)
class Model:
    """One concurrency model of stream server."""

    name: str
    server_class: type
    #: Serves other clients while one handler waits on its client.
    concurrent: bool
    #: Handlers are MultiplexedRequestHandlers, run by the loop.
    multiplexed: bool = False
    forks: bool = False

    def build(
        self,
        *,
        timeout: float | None = None,
        errors: ErrorPipe | None = None,
        address: Any = ("127.0.0.1", 0),
        **attrs: Any,
    ) -> Any:
        """A server of this model running the service.

        ``timeout`` is the per-connection timeout: ``StreamRequestHandler.
        timeout`` (per socket operation) or the multiplexed handler's idle
        timeout.  ``errors`` receives every ``handle_error`` call.
        """
        base = MuxFaultHandler if self.multiplexed else FaultHandler
        handler = type("Handler", (base,), {"timeout": timeout})

        def handle_error(server: Any, request: Any, client_address: Any) -> None:
            if errors is not None:
                errors.report(sys.exc_info()[1])

        cls = type(
            f"Fault{self.server_class.__name__}",
            (self.server_class,),
            {"handle_error": handle_error, "peak_pending": 0, "events": errors, **attrs},
        )
        return cls(address, handler)

    def __str__(self) -> str:
        return self.name


def _models() -> list[Model]:
    found = [
        Model("sync", socketserver.TCPServer, concurrent=False),
        Model("threading", socketserver.ThreadingTCPServer, concurrent=True),
    ]
    if hasattr(socketserver, "ForkingTCPServer"):
        found.append(Model("forking", socketserver.ForkingTCPServer, concurrent=True, forks=True))
    if hasattr(socketserver, "MultiplexingTCPServer"):
        found.append(
            Model("multiplexing", socketserver.MultiplexingTCPServer, concurrent=True,
                  multiplexed=True)
        )
    if hasattr(socketserver, "ThreadPoolTCPServer"):
        found.append(Model("threadpool", socketserver.ThreadPoolTCPServer, concurrent=True))
    return found


#: Every stream model in this tree, in the order the figures table lists them.
MODELS = _models()
CONCURRENT = [m for m in MODELS if m.concurrent]
BY_NAME = {m.name: m for m in MODELS}


@contextlib.contextmanager
def error_pipe() -> Iterator[ErrorPipe]:
    pipe = ErrorPipe()
    try:
        yield pipe
    finally:
        pipe.close()
