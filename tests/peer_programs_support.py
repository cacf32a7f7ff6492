"""The child side of tests/test_peer_programs.py: small programs built the way peers build theirs.

Run as a script, never imported by pytest's process for its programs::

    python tests/peer_programs_support.py --impl ours|stdlib PROGRAM [ARG ...]

``--impl ours`` puts ``minisocketserver`` in ``sys.modules["socketserver"]``
*before* anything imports ``http.server``, ``wsgiref.simple_server`` or
``xmlrpc.server``: those modules then build their classes (``HTTPServer``,
``WSGIServer``, ``SimpleXMLRPCServer``, ``StreamRequestHandler``...) on ours,
exactly as they would if a project's code said ``import socketserver``.
``--impl stdlib`` runs the same program on stdlib's classes: the oracle.

Each program reproduces the *pattern* one real project uses (the facts of
how it calls socketserver, not its code); test_peer_programs.py says which.

The protocol on the pipes, one JSON object per line:

- stdout, first line, once every server listens: ``{"servers": [...]}``, each
  server's address, family, socket type and class MRO (the test checks that
  the MRO really is ours, or stdlib's, so that no comparison is vacuous);
- stdin: a line ``stop`` (or EOF) asks the program to stop the way its
  project stops; it prints one more line with what it measured and exits 0.

The test side is the client: it reads the port, talks to the server from
its own process with stdlib clients, and compares the two runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

#: Bound on any single wait in a program (the tests' WAIT).
WAIT = 10.0

#: Modules that capture ``socketserver`` at import: none may be imported
#: before the alias is in place, or it would keep stdlib's classes.
BUILT_ON_SOCKETSERVER = ("socketserver", "http.server", "wsgiref.simple_server", "xmlrpc.server")


def install(impl: str) -> None:
    """Make ``import socketserver`` give ``impl``'s module (runs before any program)."""
    early = [name for name in BUILT_ON_SOCKETSERVER if name in sys.modules]
    assert not early, f"imported before the alias: {early}"
    if impl == "ours":
        import minisocketserver

        sys.modules["socketserver"] = minisocketserver  # type: ignore[assignment]


def emit(**fields: Any) -> None:
    """One JSON line to the test."""
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def ready(*servers: Any, **extra: Any) -> None:
    """Tell the test every server listens, and what it is made of."""
    emit(
        servers=[
            {
                "address": list(server.server_address),
                "family": int(server.socket.family),
                "type": int(server.socket.type),
                "mro": [f"{c.__module__}.{c.__qualname__}" for c in type(server).__mro__],
            }
            for server in servers
        ],
        **extra,
    )


def wait_for_stop() -> None:
    """Block until the test writes ``stop`` or closes our stdin."""
    sys.stdin.readline()


def serve_in_thread(server: Any) -> threading.Thread:
    """``serve_forever`` on a daemon thread, as every project here runs it."""
    # A short poll, as sphinx's test server uses: stdlib's shutdown() waits for
    # the next poll, and 0.5 s of it per run would make the module slow.
    loop = threading.Thread(
        target=server.serve_forever, args=(0.01,), name="serve_forever", daemon=True
    )
    loop.start()
    return loop


def timed(call: Callable[[], object]) -> float:
    """Seconds ``call`` took."""
    start = time.monotonic()
    call()
    return round(time.monotonic() - start, 3)


def stop_and_close(server: Any, loop: threading.Thread) -> None:
    """``shutdown()``, ``server_close()``, join: sphinx's and pytest-httpserver's stop."""
    shutdown_s = timed(server.shutdown)
    close_s = timed(server.server_close)
    loop.join(WAIT)
    emit(shutdown_s=shutdown_s, close_s=close_s, loop_ended=not loop.is_alive())


# --- 1. sphinx linkcheck's test server: keep-alive clients left idle ---------


def keepalive(args: list[str]) -> None:
    """``ThreadingHTTPServer`` on a thread; HTTP/1.1 so clients keep connections open."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self) -> None:
            self.reply(head=True)

        def do_GET(self) -> None:
            self.reply(head=False)

        def reply(self, head: bool) -> None:
            body = f"page {self.path} over {self.request_version}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    loop = serve_in_thread(server)
    ready(server, daemon_threads=server.daemon_threads)
    wait_for_stop()
    stop_and_close(server, loop)


# --- 2. werkzeug's dev server (and pytest-httpserver on top of it) -----------


def devserver(args: list[str]) -> None:
    """A WSGI server choosing its family per instance, binding by hand or adopting an fd.

    ``args``: the host, then ``fd`` to serve a listener made elsewhere (what
    werkzeug's reloader hands its child) instead of binding one.
    """
    import socketserver
    import wsgiref.simple_server as simple

    host, how = args

    class QuietHandler(simple.WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    class DevServer(socketserver.ThreadingMixIn, simple.WSGIServer):
        daemon_threads = True

        def __init__(self, host: str, port: int, app: Any, fd: int | None = None) -> None:
            # Per instance, before the base constructor: that constructor
            # makes the socket from self.address_family.
            if ":" in host:
                self.address_family = socket.AF_INET6
            super().__init__((host, port), QuietHandler, bind_and_activate=False)
            if fd is None:
                try:
                    self.server_bind()
                    self.server_activate()
                except BaseException:
                    self.server_close()
                    raise
            else:
                # The constructor's own socket is not used: replace it with
                # the inherited listener, already bound and listening.
                self.socket.close()
                self.socket = socket.fromfd(fd, self.address_family, socket.SOCK_STREAM)
                self.server_address = self.socket.getsockname()
                # WSGIServer.server_bind() would have set these; skipped here.
                self.server_name = "localhost"
                self.server_port = self.server_address[1]
                self.setup_environ()
            self.set_app(app)

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        seen = {
            key: environ[key]
            for key in (
                "REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SERVER_PROTOCOL",
                "REMOTE_ADDR", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once",
            )
        }
        seen["body"] = environ["wsgi.input"].read(size).decode()
        body = json.dumps(seen, sort_keys=True).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    inherited = None
    if how == "fd":
        inherited = socket.create_server((host, 0))
    server = DevServer(host, 0, app, fd=None if inherited is None else inherited.fileno())
    if inherited is not None:
        inherited.close()  # the server holds its own duplicate
    loop = serve_in_thread(server)
    ready(server)
    wait_for_stop()
    stop_and_close(server, loop)


# --- 3. dnslib's DNSServer: a UDP and a TCP server on one port ---------------


def dns(args: list[str]) -> None:
    """Threading UDP and TCP servers on the same port; one handler for both."""
    import socketserver

    def answer(query: bytes, proto: str, client: str) -> bytes:
        # DNS-shaped: the query's ID, "response, no error" flags, the rest
        # transformed, and what the handler saw.
        return query[:2] + b"\x81\x80" + query[2:].upper() + f"|{proto}|{client}".encode()

    class DNSHandler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            # One handler for both servers: it asks its server which it is.
            if self.server.socket_type == socket.SOCK_STREAM:
                data = self.request.recv(8192)
                (length,) = struct.unpack("!H", data[:2])
                while len(data) - 2 < length:
                    chunk = self.request.recv(8192)
                    if not chunk:
                        return
                    data += chunk
                reply = answer(data[2:], "tcp", self.client_address[0])
                self.request.sendall(struct.pack("!H", len(reply)) + reply)
            else:
                data, sock = self.request
                sock.sendto(answer(data, "udp", self.client_address[0]), self.client_address)

    class UDPServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
        allow_reuse_address = True
        daemon_threads = True

    class TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
        allow_reuse_address = True
        daemon_threads = True

    # The port is the TCP server's ephemeral one; UDP takes the same number.
    # Another program may hold that number for UDP: a fresh TCP port then,
    # a bounded number of times (a port search, not a retried test).
    for _attempt in range(5):
        tcp = TCPServer(("127.0.0.1", 0), DNSHandler)
        try:
            udp = UDPServer(("127.0.0.1", tcp.server_address[1]), DNSHandler)
            break
        except OSError:
            tcp.server_close()
    else:
        raise RuntimeError("no port free for both UDP and TCP")
    loops = [serve_in_thread(server) for server in (udp, tcp)]
    for server in (udp, tcp):
        # Attributes the handler may read, set after construction as dnslib does.
        server.resolver = "fixed"
    ready(udp, tcp)
    wait_for_stop()
    # dnslib's stop() is shutdown() alone; the sockets go with the process.
    times = [timed(server.shutdown) for server in (udp, tcp)]
    for loop in loops:
        loop.join(WAIT)
    emit(shutdown_s=max(times), loops_ended=not any(loop.is_alive() for loop in loops))


# --- 4. prometheus_client's exposition server --------------------------------


def exposition(args: list[str]) -> None:
    """``make_server`` with a threading WSGIServer, the family set on the class."""
    import socketserver
    import wsgiref.simple_server as simple

    class SilentHandler(simple.WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    class ThreadingWSGIServer(socketserver.ThreadingMixIn, simple.WSGIServer):
        daemon_threads = True

    host = "127.0.0.1"
    # The best family for the host, chosen before construction and stored on
    # the *class* (prometheus_client's start_wsgi_server does this).
    info = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    ThreadingWSGIServer.address_family = info[0][0]

    # Scrapes counted by worker threads: the lock is the counter's owner.
    scrapes = 0
    lock = threading.Lock()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        nonlocal scrapes
        if environ["PATH_INFO"] != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        with lock:
            scrapes += 1
            count = scrapes
        body = (
            "# HELP scrapes_total Scrapes of this endpoint.\n"
            "# TYPE scrapes_total counter\n"
            f"scrapes_total {count}.0\n"
        ).encode()
        headers = [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")]
        if "gzip" in environ.get("HTTP_ACCEPT_ENCODING", ""):
            body = gzip.compress(body, mtime=0)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    httpd = simple.make_server(host, 0, app, ThreadingWSGIServer, handler_class=SilentHandler)
    serve_in_thread(httpd)
    ready(httpd)
    wait_for_stop()
    # No shutdown, no close: the serving thread is a daemon and dies with
    # the process, which is how start_http_server()'s callers end.
    emit(scrapes=scrapes)


# --- 5. a TLS listener: sphinx's HTTPS test server, 3.14's HTTPSServer -------


def tls(args: list[str]) -> None:
    """``ThreadingHTTPServer`` whose listener is wrapped by an ``SSLContext``.

    ``args``: ``activate`` wraps in ``server_activate()`` (3.14's
    ``http.server.HTTPSServer``); ``replace`` swaps ``server.socket`` for the
    wrapped one after construction (sphinx's HTTPS test server); then the
    certificate chain file.
    """
    import http.server

    where, certfile = args
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"{self.path} over {type(self.request).__name__}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class HTTPSServer(http.server.ThreadingHTTPServer):
        def server_activate(self) -> None:
            super().server_activate()
            self.socket = context.wrap_socket(self.socket, server_side=True)

    if where == "activate":
        server: Any = HTTPSServer(("127.0.0.1", 0), Handler)
    else:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    loop = serve_in_thread(server)
    ready(server, listener=type(server.socket).__name__)
    wait_for_stop()
    stop_and_close(server, loop)


# --- 6. xmlrpc.server, synchronous and threading -----------------------------


def xmlrpc(args: list[str]) -> None:
    """``SimpleXMLRPCServer`` (or a ``ThreadingMixIn`` of it) with a few functions."""
    import socketserver
    from xmlrpc.server import SimpleXMLRPCServer

    (variant,) = args

    class ThreadingXMLRPCServer(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
        daemon_threads = True

    cls = SimpleXMLRPCServer if variant == "simple" else ThreadingXMLRPCServer
    server = cls(("127.0.0.1", 0), logRequests=False, allow_none=True)
    server.register_introspection_functions()
    server.register_multicall_functions()

    def add(a: int, b: int) -> int:
        return a + b

    def echo(value: Any) -> Any:
        return value

    def fail(message: str) -> None:
        raise ValueError(message)

    for function in (add, echo, fail):
        server.register_function(function)
    loop = serve_in_thread(server)
    ready(server)
    wait_for_stop()
    stop_and_close(server, loop)


PROGRAMS: dict[str, Callable[[list[str]], None]] = {
    "keepalive": keepalive,
    "devserver": devserver,
    "dns": dns,
    "exposition": exposition,
    "tls": tls,
    "xmlrpc": xmlrpc,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=("ours", "stdlib"), required=True)
    parser.add_argument("program", choices=sorted(PROGRAMS))
    parser.add_argument("args", nargs="*")
    options = parser.parse_args()
    install(options.impl)
    PROGRAMS[options.program](options.args)


if __name__ == "__main__":
    main()
