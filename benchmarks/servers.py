"""The servers under test, one per subprocess.

Each server listens on 127.0.0.1 with an ephemeral port, prints that port on
a line of its own on stdout, and serves until it is killed (the harness sends
SIGTERM).  Running each in its own process keeps the servers from sharing a
GIL with each other or with the harness, and lets the harness read the
server's CPU time, memory and context switches from /proc/PID.

Usage::

    python benchmarks/servers.py list            # JSON: which servers can run here
    python benchmarks/servers.py serve NAME      # prints the port, then serves
    python benchmarks/servers.py shutdown NAME --trials 50   # JSON latencies

The echo servers all speak the same protocol: whatever bytes arrive are sent
back.  The load generator sends 64-byte lines ending in b"\\n" and waits for
the whole line to come back, so a line-oriented handler (readline, write) and
a byte-oriented one (data_received, send) are both correct echo servers.

minisocketserver is being written alongside this harness, so every use of it
goes through ``getattr`` checks: a class that does not exist yet is reported as
"not available" instead of breaking the run.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import random
import resource
import selectors
import socket
import socketserver as stdlib_socketserver
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

HOST = "127.0.0.1"  # loopback only: nothing here ever listens elsewhere

# Import minisocketserver from this working tree (the repository root), also
# when this file is run by hand rather than by run.py.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

#: Body returned by the http.server handlers.  Small, so the figure measures
#: request handling and the server's connection model, not copying.
HTTP_BODY = b"hello from the minisocketserver benchmark\n"

Announce = Callable[[int], None]


def announce(port: int) -> None:
    """Tell the harness which port we got (the first line of stdout)."""
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()


def raise_nofile_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit.

    The idle-connections scenario holds 10,000 sockets; the usual soft limit
    of 1024 would make accept() fail with EMFILE long before that.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------
# minisocketserver, looked up defensively


def import_mini() -> tuple[ModuleType | None, str]:
    """Import minisocketserver; return (module, "") or (None, reason)."""
    try:
        import minisocketserver
    except Exception as exc:  # any failure of a package under construction
        return None, f"minisocketserver not importable ({type(exc).__name__}: {exc})"
    return minisocketserver, ""


def mini_class(name: str) -> tuple[Any | None, str]:
    """Return (minisocketserver.<name>, "") or (None, why it is unavailable)."""
    module, reason = import_mini()
    if module is None:
        return None, reason
    cls = getattr(module, name, None)
    if cls is None:
        return None, f"minisocketserver.{name} not available"
    return cls, ""


# --------------------------------------------------------------------------
# Handlers.  The stdlib and minisocketserver threading servers run the *same*
# handler source, built on each module's StreamRequestHandler, exactly as a
# user would by writing ``import minisocketserver as socketserver``.


def make_line_echo_handler(socketserver: ModuleType) -> type:
    """A StreamRequestHandler that echoes each line until EOF."""

    class LineEchoHandler(socketserver.StreamRequestHandler):  # type: ignore[name-defined,misc]
        def handle(self) -> None:
            # Iterating the buffered reader is readline() until EOF.
            for line in self.rfile:
                self.wfile.write(line)

    return LineEchoHandler


def make_multiplexed_echo_handler(module: ModuleType) -> type:
    """A MultiplexedRequestHandler that sends back whatever bytes arrive."""

    class MultiplexedEchoHandler(module.MultiplexedRequestHandler):  # type: ignore[name-defined,misc]
        def data_received(self, data: bytes) -> None:
            self.send(data)

    return MultiplexedEchoHandler


class FixedBodyHandler(http.server.BaseHTTPRequestHandler):
    """GET returns HTTP_BODY; HTTP/1.1 so that wrk's connections stay open."""

    protocol_version = "HTTP/1.1"
    #: Buffer the response and send it in one write (handle_one_request()
    #: flushes after do_GET).  Unbuffered, the headers and the body go out in
    #: two writes, and on a keep-alive connection the second waits for the
    #: client's delayed ACK (Nagle): ~40 ms per request on either server,
    #: which would measure TCP timers instead of the servers.
    wbufsize = -1

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(HTTP_BODY)))
        self.end_headers()
        self.wfile.write(HTTP_BODY)

    def log_message(self, format: str, *args: Any) -> None:
        # One stderr line per request would be most of what we measure.
        pass


def make_http_server_class(base: type) -> type:
    """http.server.ThreadingHTTPServer's recipe, on another TCP server class.

    The stdlib's ThreadingHTTPServer is ThreadingMixIn + HTTPServer, and
    HTTPServer only adds allow_reuse_address and a server_bind that records
    server_name/server_port.  We repeat that on minisocketserver's classes so
    both sides run the same stdlib request handler.  (server_name is the bound
    host rather than socket.getfqdn(host): a DNS lookup at start-up is not
    what we measure.)
    """

    class HTTPServerOn(base):  # type: ignore[valid-type,misc]
        allow_reuse_address = True
        daemon_threads = True

        def server_bind(self) -> None:
            super().server_bind()
            host, port = self.server_address[:2]
            self.server_name = host
            self.server_port = port

    HTTPServerOn.__name__ = f"HTTPServerOn{base.__name__}"
    return HTTPServerOn


# --------------------------------------------------------------------------
# Servers built on socketserver-style classes


def serve_socketserver(server_cls: type, handler: type, announce: Announce) -> None:
    server = server_cls((HOST, 0), handler)
    announce(server.server_address[1])
    server.serve_forever()


def stdlib_threading(announce: Announce) -> None:
    handler = make_line_echo_handler(stdlib_socketserver)
    serve_socketserver(stdlib_socketserver.ThreadingTCPServer, handler, announce)


def mini_stream_server(class_name: str) -> Callable[[Announce], None]:
    def serve(announce: Announce) -> None:
        module, _ = import_mini()
        assert module is not None
        handler = make_line_echo_handler(module)
        serve_socketserver(getattr(module, class_name), handler, announce)

    return serve


def mini_multiplexing(announce: Announce) -> None:
    module, _ = import_mini()
    assert module is not None
    handler = make_multiplexed_echo_handler(module)
    serve_socketserver(module.MultiplexingTCPServer, handler, announce)


def http_stdlib(announce: Announce) -> None:
    serve_socketserver(http.server.ThreadingHTTPServer, FixedBodyHandler, announce)


def http_mini(class_name: str) -> Callable[[Announce], None]:
    def serve(announce: Announce) -> None:
        module, _ = import_mini()
        assert module is not None
        cls = make_http_server_class(getattr(module, class_name))
        serve_socketserver(cls, FixedBodyHandler, announce)

    return serve


# --------------------------------------------------------------------------
# asyncio and uvloop


def run_asyncio(
    main: Callable[[], Any], loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    # Not asyncio.run(loop_factory=...): that argument needs Python 3.12.
    loop = loop_factory()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(main())


async def streams_main() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, HOST, 0)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


class EchoProtocol(asyncio.Protocol):
    """The fastest asyncio echo: no streams layer, write straight back."""

    transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass,
        # so no isinstance check).
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def protocol_main() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, HOST, 0)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


def asyncio_streams(announce: Announce) -> None:
    run_asyncio(streams_main, asyncio.new_event_loop)


def asyncio_protocol(announce: Announce) -> None:
    run_asyncio(protocol_main, asyncio.new_event_loop)


def uvloop_protocol(announce: Announce) -> None:
    import uvloop

    run_asyncio(protocol_main, uvloop.new_event_loop)


def uvloop_unavailable() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError as exc:
        return f"uvloop not importable ({exc}); `pip install uvloop` to include it"
    return ""


# --------------------------------------------------------------------------
# The bare selectors loop: the ceiling for a single-threaded Python server.


def selectors_loop(announce: Announce) -> None:
    """Echo with nothing but selectors and non-blocking sockets.

    What makes it fast, and what the multiplexing server is measured against:
    - accept in a loop until EAGAIN, so one wake-up drains every queued
      connection instead of one per pass through select();
    - send immediately on receipt; ask for write readiness only while output
      is pending (a socket registered for writing is ready almost always, and
      would wake the loop on every pass);
    - a deep listen backlog, so bursts of connects queue in the kernel instead
      of being dropped (a dropped SYN costs the client a 1 s retransmit).
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(socket.SOMAXCONN)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    pending: dict[socket.socket, bytearray] = {}
    announce(listener.getsockname()[1])

    def close(sock: socket.socket) -> None:
        sel.unregister(sock)
        pending.pop(sock, None)
        sock.close()

    while True:
        for key, mask in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                while True:
                    try:
                        conn, _ = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        # EMFILE/ENFILE/ECONNABORTED: try again on the next
                        # wake-up rather than spin here.
                        break
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ)
                continue
            if mask & selectors.EVENT_READ:
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    close(sock)
                    continue
                if data:
                    out = pending.get(sock)
                    if out is not None:
                        out += data  # keep order behind what is queued
                    else:
                        try:
                            sent = sock.send(data)
                        except (BlockingIOError, InterruptedError):
                            sent = 0
                        except OSError:
                            close(sock)
                            continue
                        if sent < len(data):
                            pending[sock] = bytearray(data[sent:])
                            sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            if mask & selectors.EVENT_WRITE and sock in pending:
                out = pending[sock]
                try:
                    sent = sock.send(out)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    close(sock)
                    continue
                del out[:sent]
                if not out:
                    del pending[sock]
                    sel.modify(sock, selectors.EVENT_READ)


# --------------------------------------------------------------------------
# The registry


@dataclass(frozen=True)
class ServerSpec:
    """One server under test."""

    name: str  #: short id used on the command line and in results
    label: str  #: what the tables call it
    kind: str  #: "echo" (line echo) or "http" (http.server under wrk)
    serve: Callable[[Announce], None]
    #: returns "" if the server can run here, else the reason it cannot
    unavailable: Callable[[], str]
    #: the socketserver class whose shutdown() latency we measure, if any
    shutdown_class: Callable[[], tuple[Any | None, str]] | None = None
    #: how many persistent connections it can serve at once (None: no set
    #: bound).  A thread pool gives each connection a worker for its whole
    #: life, so past max_workers the rest wait in its queue, unserved.
    max_persistent: Callable[[], int | None] = lambda: None


def always_available() -> str:
    return ""


def mini_unavailable(*class_names: str) -> Callable[[], str]:
    def check() -> str:
        for name in class_names:
            cls, reason = mini_class(name)
            if cls is None:
                return reason
        return ""

    return check


def stdlib_class(name: str) -> Callable[[], tuple[Any | None, str]]:
    return lambda: (getattr(stdlib_socketserver, name), "")


def mini_class_getter(name: str) -> Callable[[], tuple[Any | None, str]]:
    return lambda: mini_class(name)


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in [
        ServerSpec(
            "stdlib-threading",
            "stdlib ThreadingTCPServer",
            "echo",
            stdlib_threading,
            always_available,
            stdlib_class("ThreadingTCPServer"),
        ),
        ServerSpec(
            "mini-threading",
            "minisocketserver ThreadingTCPServer",
            "echo",
            mini_stream_server("ThreadingTCPServer"),
            mini_unavailable("ThreadingTCPServer"),
            mini_class_getter("ThreadingTCPServer"),
        ),
        ServerSpec(
            "mini-threadpool",
            "minisocketserver ThreadPoolTCPServer",
            "echo",
            mini_stream_server("ThreadPoolTCPServer"),
            mini_unavailable("ThreadPoolTCPServer"),
            mini_class_getter("ThreadPoolTCPServer"),
            lambda: getattr(mini_class("ThreadPoolTCPServer")[0], "max_workers", None),
        ),
        ServerSpec(
            "mini-multiplexing",
            "minisocketserver MultiplexingTCPServer",
            "echo",
            mini_multiplexing,
            mini_unavailable("MultiplexingTCPServer", "MultiplexedRequestHandler"),
            mini_class_getter("MultiplexingTCPServer"),
        ),
        ServerSpec("asyncio-streams", "asyncio streams", "echo", asyncio_streams, always_available),
        ServerSpec(
            "asyncio-protocol", "asyncio Protocol", "echo", asyncio_protocol, always_available
        ),
        ServerSpec(
            "uvloop-protocol", "uvloop Protocol", "echo", uvloop_protocol, uvloop_unavailable
        ),
        ServerSpec(
            "selectors-loop", "bare selectors loop", "echo", selectors_loop, always_available
        ),
        ServerSpec(
            "http-stdlib",
            "http.server on stdlib ThreadingTCPServer",
            "http",
            http_stdlib,
            always_available,
        ),
        ServerSpec(
            "http-mini-threading",
            "http.server on minisocketserver ThreadingTCPServer",
            "http",
            http_mini("ThreadingTCPServer"),
            mini_unavailable("ThreadingTCPServer"),
        ),
        ServerSpec(
            "http-mini-threadpool",
            "http.server on minisocketserver ThreadPoolTCPServer",
            "http",
            http_mini("ThreadPoolTCPServer"),
            mini_unavailable("ThreadPoolTCPServer"),
        ),
    ]
}


# --------------------------------------------------------------------------
# Shutdown latency, measured in-process


def shutdown_latencies(spec: ServerSpec, trials: int, seed: int = 6) -> list[float]:
    """Seconds from ``shutdown()`` being called to ``serve_forever()`` returning.

    Each trial starts a fresh server in a thread, lets it idle for a random
    20-520 ms (so that a server that polls for its shutdown flag, like the
    stdlib's 0.5 s poll, is caught at a random phase of its interval, as a
    real caller would), then calls shutdown() and notes when serve_forever()
    returned in its thread.  A trial that does not return within 5 s stops
    the measurement: it is recorded as 5 s.
    """
    assert spec.shutdown_class is not None
    cls, reason = spec.shutdown_class()
    if cls is None:
        raise RuntimeError(reason)
    if spec.name == "mini-multiplexing":
        module, _ = import_mini()
        handler = make_multiplexed_echo_handler(module)  # type: ignore[arg-type]
    elif spec.name.startswith("mini-"):
        module, _ = import_mini()
        handler = make_line_echo_handler(module)  # type: ignore[arg-type]
    else:
        handler = make_line_echo_handler(stdlib_socketserver)
    rng = random.Random(seed)
    latencies: list[float] = []
    for _ in range(trials):
        server = cls((HOST, 0), handler)
        returned: list[float] = []

        def run(server: Any = server, returned: list[float] = returned) -> None:
            server.serve_forever()
            returned.append(time.perf_counter())

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        time.sleep(rng.uniform(0.02, 0.52))
        called = time.perf_counter()
        # shutdown() blocks until serve_forever() returns; calling it from a
        # helper thread keeps this loop bounded even if it never does.
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        thread.join(timeout=5.0)
        if not returned:
            latencies.append(5.0)
            break
        latencies.append(returned[0] - called)
        stopper.join(timeout=5.0)
        server.server_close()
    return latencies


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="print JSON: every server and whether it can run")
    serve = sub.add_parser("serve", help="run one server; prints its port first")
    serve.add_argument("name", choices=sorted(SERVERS))
    shut = sub.add_parser("shutdown", help="measure shutdown() latency; prints JSON")
    shut.add_argument("name", choices=sorted(n for n, s in SERVERS.items() if s.shutdown_class))
    shut.add_argument("--trials", type=int, default=50)
    args = parser.parse_args(argv)

    if args.command == "list":
        listing = {
            name: {
                "label": spec.label,
                "kind": spec.kind,
                "unavailable": spec.unavailable(),
                "shutdown": spec.shutdown_class is not None,
                "max_persistent": spec.max_persistent() if not spec.unavailable() else None,
            }
            for name, spec in SERVERS.items()
        }
        json.dump(listing, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    spec = SERVERS[args.name]
    reason = spec.unavailable()
    if reason:
        print(reason, file=sys.stderr)
        return 3
    if args.command == "serve":
        raise_nofile_limit()
        spec.serve(announce)
        return 0
    latencies = shutdown_latencies(spec, max(1, min(args.trials, 1000)))
    json.dump({"latencies_s": latencies}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
