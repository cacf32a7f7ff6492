"""``python -m minisocketserver tour [MODEL]``: watch a request travel, live.

The tour runs a real echo service on 127.0.0.1 (a port the kernel picks;
a temporary path for ``unix``), connects two clients one after the other,
shuts the server down, and prints each call the tracer records *as it is
recorded*, with one line on why that step exists and the chapter of the
walkthrough that explains it.  Nothing printed is scripted: the lines come
from the recording, so a hook overridden in ``--server``/``--handler``
classes shows up as the user's own code, and so does every other method of
theirs that runs (a ``parse_line()`` their ``handle()`` calls).  A request
their ``verify_request()`` refuses is a flow like any other: the tour shows
it, says so, and goes on to the next client.

``--stdlib`` tours the standard library's ``socketserver`` instead, with
the same driver and the same tracer, wrapping its classes at run time as it
wraps ours (see ``Tracer(subject=...)``): nothing of it is copied.  This
package never loads stdlib's module itself (it is a clean-room
reimplementation, and ``check-clean-room`` holds it to that): the recorder
outside it, ``minisocketserver_stdlib.py``, imports it and runs the tour,
and ``loaded_stdlib()`` finds it in ``sys.modules``.

A ``--server``/``--handler`` that cannot be toured -- a spec that does not
name a class, a class of the wrong kind, a server and a handler that cannot
work together -- is refused before anything runs, with one line on stderr
and exit status 2.

``tour tls`` runs ``ThreadingTLSServer`` with a self-signed certificate
made for the occasion by ``openssl req -x509`` in a temporary directory
(``throwaway_tls``; without openssl, one line on stderr and exit status 2),
and its clients connect with TLS.

``tour prefork`` is shaped differently: the tour's process is the master of
a ``PreforkMixIn`` server (a master must have no other thread), and a driver
subprocess makes the clients, kills a worker and sends ``SIGHUP`` and
``SIGTERM``; the master's calls print live, each worker's once the group has
stopped, read back from the file it recorded into (``run_prefork_tour``).

The same driver records the flows in ``diagrams/`` (see diagrams.py): it
lets every thread go quiet before each step, which is what makes a
recording of real threads render identically on every run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any, TextIO

from . import handlers
from .server import BaseServer
from .threading_mixin import ThreadingMixIn
from .tracer import Event, Tracer, timeline_lines

#: The chapter on TLS, IPv6 and inherited sockets.
TLS_CHAPTER = "docs/11-tls-ipv6-activation.md"

#: What each hook is for, and the chapter that explains it, keyed by name,
#: or by ``Class.name`` where one class's override does something else
#: (TLS's ``finish_request`` runs the handshake).  The tour looks every
#: recorded hook up here; a method of the user's own (no hook) is printed
#: without an explanation.
EXPLAIN: dict[str, tuple[str, str]] = {
    "__init__": ("constructor: TCPServer's opens the socket, binds and listens; "
                 "BaseServer's stores the address and handler class",
                 "docs/04-socket-servers.md"),
    "server_bind": ("bind the socket; port 0 becomes the port the kernel chose",
                    "docs/04-socket-servers.md"),
    "server_activate": ("listen(): the kernel now queues connections for us",
                        "docs/04-socket-servers.md"),
    "serve_forever": ("the loop: wait, dispatch, service_actions, until shutdown()",
                      "docs/03-baseserver.md"),
    "_attach": ("register the listening socket with this loop's selector",
                "docs/03-baseserver.md"),
    "watch": ("ask the selector to report this descriptor ready",
              "docs/02-select-loop.md"),
    "modify": ("change what the selector reports for a watched descriptor",
               "docs/08-multiplexing.md"),
    "unwatch": ("stop watching a descriptor", "docs/02-select-loop.md"),
    "select": ("block until a listener, a connection, a timer or a wake-up is ready",
               "docs/02-select-loop.md"),
    "wake": ("write one byte to the loop's socketpair so select() returns now",
             "docs/09-shutdown.md"),
    "_on_listener_ready": ("the listener is readable: a client is waiting to be accepted",
                           "docs/03-baseserver.md"),
    "_handle_request_noblock": ("one ready request through the pipeline, never blocking",
                                "docs/03-baseserver.md"),
    "get_request": ("accept() a connection (recvfrom() a datagram)",
                    "docs/04-socket-servers.md"),
    "verify_request": ("policy check: returning False refuses the request",
                       "docs/03-baseserver.md"),
    "admit_request": ("go on now, or hold the new connection in the loop until it speaks "
                      "(AdmissionMixIn, TLS): a silent client then costs one descriptor, "
                      "not a worker", TLS_CHAPTER),
    "first_bytes_arrived": ("the held connection spoke (a ClientHello): on to "
                            "process_request, which starts the model", TLS_CHAPTER),
    "admission_refused": ("it stayed silent past the deadline, or left: closed quietly, "
                          "counted in tls_stats", TLS_CHAPTER),
    "process_request": ("hand the request to the concurrency model",
                        "docs/03-baseserver.md"),
    "TLSMixIn.process_request": ("wrap the socket for TLS without any I/O "
                                 "(do_handshake_on_connect=False), then hand it on",
                                 TLS_CHAPTER),
    "MultiplexingTLSServer.process_request": (
        "a new connection: start its handshake in the loop; a finished one: build "
        "the handler", TLS_CHAPTER),
    "TLSMixIn.finish_request": ("the TLS handshake, here on the worker, under what is "
                                "left of handshake_timeout; then the handler, in plaintext",
                                TLS_CHAPTER),
    "_handshake": ("do_handshake(): blocks this worker only, bounded by the deadline; "
                   "the outcome is counted in tls_stats", TLS_CHAPTER),
    "_handshake_advance": ("one handshake step on memory BIOs, never blocking; the "
                           "reactor calls it again when the socket is ready", TLS_CHAPTER),
    "handshake_failed": ("the handshake failed or timed out: logged at debug, never "
                         "handle_error; the handler never sees this client", TLS_CHAPTER),
    "TLSMixIn.shutdown_request": ("close_notify if a session is up (without waiting for "
                                  "the peer's), then FIN and close", TLS_CHAPTER),
    "process_request_thread": ("the worker thread's body: finish, then shut down the request",
                               "docs/06-threading.md"),
    "finish_request": ("build RequestHandlerClass(request, client_address, server)",
                       "docs/05-handlers.md"),
    "setup": ("handler prepares: socket options, rfile and wfile",
              "docs/05-handlers.md"),
    "handle": ("the handler's work: read the request, write the reply",
               "docs/05-handlers.md"),
    "finish": ("handler cleans up; runs even if handle() raised",
               "docs/05-handlers.md"),
    "data_received": ("a chunk arrived on a multiplexed connection",
                      "docs/08-multiplexing.md"),
    "line_received": ("a whole line arrived on a multiplexed connection",
                      "docs/08-multiplexing.md"),
    "eof_received": ("the client half-closed its side", "docs/08-multiplexing.md"),
    "output_drained": ("backpressure is over: the queue drained, reading resumes",
                       "docs/08-multiplexing.md"),
    "send": ("queue bytes; the kernel takes what fits now, never blocking",
             "docs/08-multiplexing.md"),
    "close": ("end the connection once its output has drained",
              "docs/08-multiplexing.md"),
    "_on_readable": ("a connection is readable: one recv(), then its hook",
                     "docs/08-multiplexing.md"),
    "_on_ready": ("a connection with output queued is ready: send() more, then read",
                  "docs/08-multiplexing.md"),
    "_end": ("the connection is over: unwatch, finish(), shutdown_request()",
             "docs/08-multiplexing.md"),
    "shutdown_request": ("end the request: SHUT_WR sends FIN (whoever holds a copy), then close",
                         "docs/04-socket-servers.md"),
    "close_request": ("close the connection's socket", "docs/04-socket-servers.md"),
    "handle_error": ("a stage raised: print the traceback, keep serving",
                     "docs/03-baseserver.md"),
    "service_actions": ("once per loop iteration; the forking model reaps here",
                        "docs/03-baseserver.md"),
    "collect_children": ("waitpid(): reap children that have exited",
                         "docs/07-forking.md"),
    "shutdown": ("ask the loop to stop, wake it, wait until it has",
                 "docs/09-shutdown.md"),
    "_detach": ("take a server's descriptors out of a loop that goes on",
                "docs/09-shutdown.md"),
    "_serving_ended": ("the loop lets the server go: shutdown() may return",
                       "docs/09-shutdown.md"),
    "handle_request": ("handle exactly one request, waiting at most timeout",
                       "docs/03-baseserver.md"),
    "handle_timeout": ("handle_request() waited timeout seconds for nothing",
                       "docs/03-baseserver.md"),
    "server_close": ("close the listening socket; wait for workers or children",
                     "docs/09-shutdown.md"),
}

#: How the explanations read for stdlib's hooks where its flow is not ours
#: (``--stdlib``): each says what the recording shows, nothing more.
EXPLAIN_STDLIB: dict[str, tuple[str, str]] = {
    "serve_forever": ("the loop: select() with poll_interval as its timeout, dispatch, "
                      "service_actions, until shutdown()", "docs/stdlib-side-by-side.md"),
    "select": ("wait for the listener, at most poll_interval: [] means it timed out",
               "docs/stdlib-side-by-side.md"),
    "shutdown": ("ask the loop to stop and wait: it stops after its select() times out",
                 "docs/stdlib-side-by-side.md"),
    "append": ("keep the new worker thread, so that server_close() can join it",
               "docs/stdlib-side-by-side.md"),
    "reap": ("forget the kept threads that have already ended",
             "docs/stdlib-side-by-side.md"),
    "join": ("wait for the kept worker threads", "docs/stdlib-side-by-side.md"),
    "pop_all": ("take every kept thread out of the list, to join them",
                "docs/stdlib-side-by-side.md"),
}

#: The server class each MODEL tours.
MODELS = ["threading", "sync", "forking", "threadpool", "udp", "unix", "multiplexing", "tls",
          "prefork"]

#: What the tour's echo appends, as the seed's server did.
SUFFIX = "好".encode()


class DatagramEchoHandler(handlers.DatagramRequestHandler):
    """Answer a datagram with itself plus "好"."""

    def handle(self) -> None:
        self.wfile.write(self.rfile.read() + SUFFIX)


#: The models stdlib has, by the name of its class (``--stdlib``).
STDLIB_MODELS = {"sync": "TCPServer", "threading": "ThreadingTCPServer",
                 "forking": "ForkingTCPServer", "udp": "UDPServer", "unix": "UnixStreamServer"}


def loaded_stdlib() -> ModuleType | None:
    """The standard library's ``socketserver`` if this process has loaded it, else ``None``.

    Called by the instruments (``tour --stdlib``, the ``stdlib-*`` diagrams),
    which record it by wrapping its classes at run time.  It never loads the
    module: the recorder (``minisocketserver_stdlib.py``) or a test has.  The
    name may also be this package, installed as the alias (``install()``):
    that is not stdlib.
    """
    module = sys.modules.get("socketserver")
    if module is None or module.__name__ != "socketserver":
        return None
    return module


def stdlib_classes(model: str, module: ModuleType) -> tuple[type, type] | None:
    """``(server class, echo handler class)`` of ``module`` for ``model``, if it has one.

    The handler subclasses the module's own handler classes, so the
    handler's hooks recorded are the module's, not this package's.
    """
    server_class = getattr(module, STDLIB_MODELS.get(model, ""), None)
    if not isinstance(server_class, type):
        return None
    if getattr(server_class, "socket_type", None) == socket.SOCK_DGRAM:
        def answer(self: Any) -> None:
            self.wfile.write(self.rfile.read() + SUFFIX)

        return server_class, type("DatagramEchoHandler", (module.DatagramRequestHandler,),
                                  {"handle": answer, "__module__": __name__})

    def echo(self: Any) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data + SUFFIX)

    return server_class, type("SeedEchoHandler", (module.BaseRequestHandler,),
                              {"handle": echo, "__module__": __name__})


def available_models() -> list[str]:
    """The models this platform and this tree have."""
    return [m for m in MODELS if _model_classes(m) is not None]


def _multiplexing() -> tuple[type, type] | None:
    """``(MultiplexingMixIn, MultiplexedRequestHandler)``, if this tree has them."""
    package = sys.modules[__package__ or "minisocketserver"]
    mixin = getattr(package, "MultiplexingMixIn", None)
    handler = getattr(package, "MultiplexedRequestHandler", None)
    if isinstance(mixin, type) and isinstance(handler, type):
        return mixin, handler
    return None


def _model_classes(model: str) -> tuple[type, type] | None:
    package = sys.modules[__package__ or "minisocketserver"]
    from .seed import SeedEchoHandler

    names: dict[str, tuple[str, type | None]] = {
        "threading": ("ThreadingTCPServer", SeedEchoHandler),
        "sync": ("TCPServer", SeedEchoHandler),
        "forking": ("ForkingTCPServer", SeedEchoHandler),
        "threadpool": ("ThreadPoolTCPServer", SeedEchoHandler),
        "udp": ("UDPServer", DatagramEchoHandler),
        "unix": ("UnixStreamServer", SeedEchoHandler),
        "multiplexing": ("MultiplexingTCPServer", None),
        "tls": ("ThreadingTLSServer", SeedEchoHandler),
        "prefork": ("PreforkMixIn", SeedEchoHandler),  # run_prefork_tour builds its class
    }
    name, handler = names[model]
    server_class = getattr(package, name, None)
    if not isinstance(server_class, type):
        return None
    if handler is None:
        handler = _multiplexed_echo_handler()
    return server_class, handler


def _multiplexed_echo_handler() -> type:
    from .multiplexing_mixin import MultiplexedRequestHandler

    class MultiplexedEchoHandler(MultiplexedRequestHandler):
        """Answer every chunk with the chunk plus "好", from the loop's thread."""

        def data_received(self, data: bytes) -> None:
            self.send(data + SUFFIX)

    return MultiplexedEchoHandler


class TourSetupError(ValueError):
    """The classes asked for cannot be toured; the message is one line for stderr."""


def load_class(spec: str) -> type:
    """``module:Class`` -> the class (the module is imported).

    Raises :class:`TourSetupError` when ``spec`` names no class: a bad
    spec, a module that fails to import, a missing attribute, a non-class.
    """
    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name.strip() or not class_name.strip():
        raise TourSetupError(f"expected module:Class (e.g. myserver:EchoServer), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # whatever the module's own code raised as it ran
        message = " ".join(str(exc).split())
        raise TourSetupError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {message}") from exc
    try:
        value = getattr(module, class_name)
    except AttributeError:
        raise TourSetupError(f"module {module_name!r} has no attribute {class_name!r}") from None
    if not isinstance(value, type):
        raise TourSetupError(f"{spec} is not a class but a {type(value).__name__}")
    return value


def _check_pair(server_class: type, handler_class: type) -> None:
    """Raise :class:`TourSetupError` unless the two classes can serve together.

    Only what is certain from the classes alone is refused: a tour that
    would otherwise crash in the handler, or hang waiting for a reply.
    """
    server, handler = server_class.__name__, handler_class.__name__
    if not issubclass(server_class, BaseServer):
        raise TourSetupError(f"{server} is not a minisocketserver server class "
                             "(a subclass of BaseServer)")
    multiplexing = _multiplexing()
    multiplexed_handler = multiplexing is not None and issubclass(handler_class, multiplexing[1])
    if not (issubclass(handler_class, handlers.BaseRequestHandler) or multiplexed_handler):
        raise TourSetupError(f"{handler} is not a minisocketserver request handler class "
                             "(a subclass of BaseRequestHandler or MultiplexedRequestHandler)")
    datagram = getattr(server_class, "socket_type", None) == socket.SOCK_DGRAM
    if datagram and issubclass(handler_class, handlers.StreamRequestHandler):
        raise TourSetupError(f"{server} serves datagrams, but {handler} is a "
                             "StreamRequestHandler: use a DatagramRequestHandler")
    if not datagram and issubclass(handler_class, handlers.DatagramRequestHandler):
        raise TourSetupError(f"{server} serves connections, but {handler} is a "
                             "DatagramRequestHandler: use a StreamRequestHandler")
    multiplexed_server = multiplexing is not None and issubclass(server_class, multiplexing[0])
    if multiplexed_server and not multiplexed_handler:
        raise TourSetupError(f"{server} calls its handlers back on the loop thread, but "
                             f"{handler} blocks: use a MultiplexedRequestHandler")
    if multiplexed_handler and not multiplexed_server:
        raise TourSetupError(f"{handler} is a MultiplexedRequestHandler: it needs a "
                             f"multiplexing server, not {server} (try: tour multiplexing)")


def _default_handler(server_class: type) -> type:
    """The echo handler that fits a ``--server`` given without ``--handler``."""
    if getattr(server_class, "socket_type", None) == socket.SOCK_DGRAM:
        return DatagramEchoHandler
    multiplexing = _multiplexing()
    if multiplexing is not None and issubclass(server_class, multiplexing[0]):
        return _multiplexed_echo_handler()
    from .seed import SeedEchoHandler

    return SeedEchoHandler


# -- TLS: a throwaway certificate ----------------------------------------------


@dataclasses.dataclass
class TLSContexts:
    """The two ends of a toured TLS connection: the server's context and the client's."""

    server: Any  # ssl.SSLContext: ssl is imported only where TLS is toured
    client: Any


@contextlib.contextmanager
def throwaway_tls() -> Iterator[TLSContexts]:
    """Contexts for a self-signed certificate made now, in a directory removed after.

    The tour and the diagrams make their own certificate with ``openssl req
    -x509`` rather than ship one: a committed key would be a key anyone
    can read.  Nothing of it reaches a recording (the tracer shows
    arguments by name only).  Raises :class:`TourSetupError` without openssl.
    """
    import ssl

    openssl = shutil.which("openssl")
    if openssl is None:
        raise TourSetupError("the tls model makes a throwaway certificate with openssl, "
                             "and there is no openssl on PATH")
    with tempfile.TemporaryDirectory(prefix="minisocketserver-tls-") as directory:
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        # An EC key: made in milliseconds, where RSA-2048 takes a good part
        # of a second.
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
             "-days", "1", "-keyout", key, "-out", cert],
            check=True, capture_output=True, timeout=EchoSession.WAIT,
        )
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(cert, key)
        client = ssl.create_default_context(cafile=cert)
        yield TLSContexts(server, client)


def _is_tls(server_class: type) -> bool:
    return _is_model(server_class, "TLSMixIn")


# -- the driver ---------------------------------------------------------------


class EchoSession:
    """A server on a loop thread and its clients, stepped so that threads go quiet.

    Each step writes a note to the tracer (a segment boundary in the
    diagrams), acts as a client would, then waits until every traced thread
    is idle again and every child process reaped.
    """

    #: Bound on any single wait, in seconds.
    WAIT = 10.0

    def __init__(self, tracer: Tracer, server_class: type, handler_class: type,
                 poll_interval: float = 0.5, tls: TLSContexts | None = None) -> None:
        self.tracer = tracer
        #: The contexts of a TLS server and its clients (``None``: plaintext).
        self.tls = tls
        self.server_class = server_class
        self.handler_class = handler_class
        self.poll_interval = poll_interval
        self.server: Any = None
        #: Whether the server's ``verify_request()`` refused the last request.
        self.refused = False
        self._since = 0
        self._loop: threading.Thread | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.unix = getattr(server_class, "address_family", None) == getattr(
            socket, "AF_UNIX", object())
        self.datagram = getattr(server_class, "socket_type", None) == socket.SOCK_DGRAM
        # In these models the loop hands the request over and waits again
        # while it is being handled: the driver lets it get there first.
        self.hands_off = issubclass(server_class, ThreadingMixIn) or _is_forking(server_class) \
            or _is_model(server_class, "ThreadPoolMixIn") or _mixes_stdlib(server_class)

    def address(self) -> Any:
        if self.unix:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="minisocketserver-tour-")
            return os.path.join(self._tmpdir.name, "echo.sock")
        return ("127.0.0.1", 0)

    def construct(self, note: str | None = None) -> Any:
        if note:
            self.tracer.note(note)
        if self.tls is not None:
            self.server = self.server_class(self.address(), self.handler_class,
                                            context=self.tls.server)
        else:
            self.server = self.server_class(self.address(), self.handler_class)
        return self.server

    def start(self) -> None:
        """Run ``serve_forever`` on the loop thread; return once it waits."""
        self._loop = threading.Thread(
            target=self.server.serve_forever, args=(self.poll_interval,),
            name="tour-loop", daemon=True,
        )
        self._loop.start()
        self.tracer.wait_for(
            lambda events: any(e.method == "serve_forever" for e in events), self.WAIT)
        self.tracer.wait_quiet(self.WAIT)

    def request(self, payload: bytes, note: str) -> bytes:
        """One client: send ``payload``, read the whole answer; then let all go quiet.

        Sets ``refused``: a refused client's answer is an empty one.
        """
        self.tracer.note(note)
        self._since = self.tracer.mark()
        if self.tls is not None:
            reply = self._tls_stream(payload)
        else:
            reply = self._datagram(payload) if self.datagram else self._stream(payload)
        self.tracer.wait_quiet(self.WAIT)
        self.refused = self._was_refused()
        return reply

    def _wait_handled(self) -> None:
        """Wait until the loop is done with this client's request.

        Done: handed over to a worker or child, served (synchronous models),
        refused by ``verify_request()``, or failed into ``handle_error()``
        -- each ends ``_handle_request_noblock``.  A refused request never
        reaches ``process_request``: waiting for that would never end.
        """
        since = self._since
        self.tracer.wait_for(lambda events: any(
            e.method == "_handle_request_noblock" and e.kind != "call" and not e.helper
            for e in events[since:]), self.WAIT)

    def _was_refused(self) -> bool:
        """Whether ``verify_request()`` refused this client's request."""
        verdicts = [e for e in self.tracer.events(self._since)
                    if e.method == "verify_request" and e.kind == "return" and not e.helper]
        # A user's override that calls super() returns around the library's
        # answer: what counts is the outermost return, the least deep.
        return bool(verdicts) and min(verdicts, key=lambda e: e.depth).text == "False"

    def _stream(self, payload: bytes) -> bytes:
        family = socket.AF_UNIX if self.unix else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.settimeout(self.WAIT)
            client.connect(self.server.server_address)
            client.sendall(payload)
            if self.hands_off:
                # Let the loop hand the request over and wait again before
                # the handler may finish: whether the loop's next reap finds
                # the child still running must not depend on the scheduler.
                self._wait_handled()
                self.tracer.wait_quiet(self.WAIT, loops_only=True)
            chunks = []
            # ConnectionError, ENOTCONN: a server that refused the client
            # closed with our request unread, so the kernel sent a reset.
            with contextlib.suppress(ConnectionError, OSError):
                # SHUT_WR, not close(): a forked child holds a copy of this
                # socket, so only an explicit half-close reaches the handler.
                client.shutdown(socket.SHUT_WR)
                while chunk := client.recv(65536):
                    chunks.append(chunk)
            return b"".join(chunks)

    def _tls_stream(self, payload: bytes) -> bytes:
        """A TLS client: handshake, ``payload``, its answer, then a half-close.

        Each step waits for the server to be done with the last, so that
        the records reach it one at a time: a handshake's last flight and
        the first data in one segment would be one step of the
        multiplexing model's handshake instead of two, and the recording
        would depend on the scheduler.  The client ends with a plain
        SHUT_WR (the server reads it as the end of the stream) and reads
        the server's close_notify and FIN.
        """
        assert self.tls is not None
        since = self._since
        with socket.create_connection(self.server.server_address, self.WAIT) as raw, \
                self.tls.client.wrap_socket(raw, server_hostname="localhost") as client:
            # Our side of the handshake is over; wait for the server's, up
            # to the handler it builds (or the failure it reports).
            self.tracer.wait_for(lambda events: any(
                e.kind == "call" and not e.helper
                and e.method in ("setup", "handshake_failed", "handle_error")
                for e in events[since:]), self.WAIT)
            self.tracer.wait_quiet(self.WAIT, loops_only=True)
            chunks = []
            with contextlib.suppress(ConnectionError, OSError):
                client.sendall(payload)
                chunks.append(client.recv(65536))
                self.tracer.wait_quiet(self.WAIT, loops_only=True)
                # socket.socket's shutdown: SSLSocket's would drop the
                # session, and the close_notify still to come with it.
                socket.socket.shutdown(client, socket.SHUT_WR)
                while chunk := client.recv(65536):
                    chunks.append(chunk)
            return b"".join(chunks)

    def _datagram(self, payload: bytes) -> bytes:
        family = socket.AF_UNIX if self.unix else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as client:
            client.settimeout(self.WAIT)
            if self.unix:  # a Unix datagram reply needs an address to go to
                assert self._tmpdir is not None
                client.bind(os.path.join(self._tmpdir.name, "client.sock"))
            client.sendto(payload, self.server.server_address)
            # A refused datagram gets no answer: do not wait for one.
            self._wait_handled()
            if self._was_refused():
                return b""
            try:
                return client.recv(65536)
            except TimeoutError:
                return b""  # a handler of the user's that does not answer

    def stop(self, note: str | None = None) -> None:
        """``shutdown()`` from this thread, then join the loop."""
        if note:
            self.tracer.note(note)
        self.server.shutdown()
        assert self._loop is not None
        self._loop.join(self.WAIT)

    def close(self, note: str | None = None) -> None:
        if note:
            self.tracer.note(note)
        self.server.server_close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()


def _is_forking(server_class: type) -> bool:
    return _is_model(server_class, "ForkingMixIn")


def _mixes_stdlib(server_class: type) -> bool:
    """Whether ``server_class`` uses another module's threading or forking mixin.

    Found by name on the class's MRO: this package does not import stdlib's
    classes to compare them.
    """
    return any(c.__name__ in ("ThreadingMixIn", "ForkingMixIn")
               and not c.__module__.startswith(__name__.partition(".")[0])
               for c in server_class.__mro__)


def _is_model(server_class: type, mixin: str) -> bool:
    """Whether ``server_class`` uses the package's ``mixin`` (if this tree has it)."""
    found = getattr(sys.modules[__package__ or "minisocketserver"], mixin, None)
    return isinstance(found, type) and issubclass(server_class, found)


# -- printing -------------------------------------------------------------------


class LivePrinter:
    """Prints each recorded event with its explanation (the tracer's ``on_event``)."""

    WIDTH = 16

    def __init__(self, out: TextIO, *, stdlib: bool = False) -> None:
        self.out = out
        #: Explain stdlib's hooks where its flow is not ours (``EXPLAIN_STDLIB``).
        self.stdlib = stdlib
        self.calls = 0
        #: The reader went away (``tour | head``): stop printing, keep serving.
        self.closed = False

    def __call__(self, event: Event) -> None:
        if self.closed:
            return
        try:
            self._print(event)
        except BrokenPipeError:
            self.closed = True

    def say(self, text: str) -> None:
        """Print a line of the tour's own, between the recorded ones."""
        if self.closed:
            return
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except BrokenPipeError:
            self.closed = True

    def _print(self, event: Event) -> None:
        if event.kind == "note":
            self.out.write(f"\n== {event.text}\n")
            self.out.flush()
            return
        # Only the waits recorded as they happened (fork, a child's exit);
        # the rest are worked out when a whole recording is rendered.
        for _, label in event.after:
            if label:
                self.out.write(f"{event.lifeline:<{self.WIDTH}}  {'  ' * event.depth}"
                               f"<~ {label}\n")
        for line in timeline_lines(event, [], self.WIDTH):
            self.out.write(line + "\n")
        if event.kind == "call":
            self.calls += 1
            self.out.write(self._explanation(event))
        self.out.flush()

    def _explanation(self, event: Event) -> str:
        pad = " " * (self.WIDTH + 2) + "  " * event.depth + "   "
        # A method of the user's may share a hook's name (a handler's own
        # close()): only a hook gets the hook's explanation.
        known = None if event.helper else EXPLAIN.get(event.qualname,
                                                      EXPLAIN.get(event.method))
        if self.stdlib and not event.helper:
            known = EXPLAIN_STDLIB.get(event.method, known)
        if known is None:
            return f"{pad}| {event.owner}.{event.method} (your code)\n"
        text, chapter = known
        if event.user:
            text = f"{event.owner} overrides this hook: {text}"
        return f"{pad}| {text}  [{chapter}]\n"


def run_tour(model: str, server_spec: str | None, handler_spec: str | None,
             out: TextIO = sys.stdout, err: TextIO = sys.stderr, *,
             stdlib: bool = False) -> int:
    """Run the tour; return the exit status (2, with one line on ``err``: bad classes).

    ``stdlib``: tour the standard library's ``socketserver`` (its model's
    server class, with an echo handler built on its handler classes).
    """
    if model == "prefork" and not (server_spec or handler_spec or stdlib):
        return run_prefork_tour(out, err)
    if model == "prefork":
        err.write("minisocketserver tour: error: tour prefork tours its own class: "
                  "--server, --handler and --stdlib are for the other models\n")
        return 2
    subject = loaded_stdlib() if stdlib else None
    if stdlib and subject is None:
        err.write("minisocketserver tour: error: --stdlib needs the standard library's "
                  "socketserver loaded: run it as python -m minisocketserver tour --stdlib\n")
        return 2
    try:
        if subject is not None:
            server_class, handler_class = _stdlib_tour_classes(
                model, server_spec, handler_spec, subject)
        else:
            server_class, handler_class = _tour_classes(model, server_spec, handler_spec)
    except TourSetupError as exc:
        err.write(f"minisocketserver tour: error: {exc}\n")
        return 2
    with contextlib.ExitStack() as stack:
        tls = None
        if subject is None and _is_tls(server_class):
            try:
                tls = stack.enter_context(throwaway_tls())
            except TourSetupError as exc:
                err.write(f"minisocketserver tour: error: {exc}\n")
                return 2
        return _run(model, server_class, handler_class, subject, tls, out)


def _run(model: str, server_class: type, handler_class: type, subject: ModuleType | None,
         tls: TLSContexts | None, out: TextIO) -> int:
    """The tour itself, once its classes (and a TLS server's certificate) are ready."""
    where = "a temporary path" if getattr(server_class, "address_family", None) == getattr(
        socket, "AF_UNIX", None) else "127.0.0.1, on a port the kernel picks"
    server_name = server_class.__name__
    if subject is not None:
        server_name = f"{subject.__name__}.{server_name}"
    out.write(
        f"minisocketserver tour, {model} model: {server_name} serving "
        f"{handler_class.__name__} on {where}.\n"
        "Every line below is a call recorded by minisocketserver.tracer as it happened:\n"
        "the thread (or child process) it ran on, the object, the class whose code ran,\n"
        "then why that step exists and the chapter that explains it.  '->' is a return\n"
        "value, '<~' something another thread or process did that this step waited for.\n"
    )
    printer = LivePrinter(out, stdlib=subject is not None)
    tracer = Tracer(on_event=printer, subject=subject)
    forks = _is_forking(server_class) or any(
        c.__name__ == "ForkingMixIn" for c in server_class.__mro__)
    poll = 0.1 if forks else 0.5
    session = EchoSession(tracer, server_class, handler_class, poll_interval=poll, tls=tls)
    replies = []
    refused = []
    with tracer:
        tracer.name_thread("main thread")
        session.construct(f"the main thread constructs {server_class.__name__}"
                          f"(address, {handler_class.__name__})")
        tracer.note("the main thread starts serve_forever() on a new thread, the loop thread")
        session.start()
        for number, word in enumerate([b"hello", b"world"], start=1):
            if session.datagram:
                step = f"client {number} sends the datagram {word!r}"
            elif tls is not None:
                step = (f"client {number} connects with TLS, sends {word!r}, "
                        "then half-closes (SHUT_WR)")
            else:
                step = f"client {number} connects, sends {word!r}, then half-closes (SHUT_WR)"
            replies.append(session.request(word, step))
            if session.refused:
                refused.append(f"client {number}")
                printer.say(f"\n-- the server refused client {number}: verify_request() "
                            "returned False, so the request was shut down unanswered")
        session.stop("the main thread calls shutdown()")
        session.close("the main thread calls server_close()")
    recording = tracer.recording()
    if printer.closed:
        # Python would report the broken pipe again when it flushes stdout
        # at exit: send what is left to /dev/null instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        return 0
    on = sorted({e.lifeline for e in recording.events
                 if e.kind == "call" and e.method == "finish_request"})
    out.write(
        f"\n== done: {printer.calls} calls on {len(recording.lifelines)} lifelines; "
        f"replies {replies}\n"
        f"finish_request ran on: {', '.join(on) or 'nothing'}.\n"
    )
    if refused:
        out.write(f"Refused by verify_request(): {', '.join(refused)}.\n")
    if subject is not None:
        out.write(
            "The same flows as diagrams: diagrams/stdlib-*.svg, beside ours in "
            "docs/stdlib-side-by-side.md.\n")
        return 0
    out.write(
        "The same flows as diagrams: diagrams/*.svg (regenerate with "
        "python -m minisocketserver.diagrams); the walkthrough starts at "
        "docs/01-blocking-server.md.\n"
    )
    return 0


def _stdlib_tour_classes(model: str, server_spec: str | None, handler_spec: str | None,
                         subject: ModuleType) -> tuple[type, type]:
    """Stdlib's classes for ``model``; :class:`TourSetupError` if it has none."""
    if server_spec or handler_spec:
        raise TourSetupError("--stdlib tours the standard library's own classes: "
                             "--server and --handler are for this package's")
    classes = stdlib_classes(model, subject)
    if classes is None:
        raise TourSetupError(f"stdlib's {subject.__name__} has no {model!r} model; try one of "
                             f"{', '.join(m for m in MODELS if m in STDLIB_MODELS)}")
    return classes


def _tour_classes(model: str, server_spec: str | None,
                  handler_spec: str | None) -> tuple[type, type]:
    """The server and handler classes to tour; :class:`TourSetupError` if they cannot be."""
    classes = _model_classes(model)
    if classes is None:
        raise TourSetupError(f"model {model!r} is not available here; try one of "
                             f"{', '.join(available_models())}")
    server_class, handler_class = classes
    if server_spec:
        server_class = _load("--server", server_spec)
        handler_class = _default_handler(server_class)
    if handler_spec:
        handler_class = _load("--handler", handler_spec)
    _check_pair(server_class, handler_class)
    return server_class, handler_class


def _load(option: str, spec: str) -> type:
    try:
        return load_class(spec)
    except TourSetupError as exc:
        raise TourSetupError(f"{option}: {exc}") from None


# -- tour prefork: a master and its workers ------------------------------------
#
# The master must be the main thread of a process with no other thread (it
# forks), so this tour is shaped differently from the others: the tour's own
# process *is* the master, and a driver program (a subprocess, started before
# the first fork; the one child of the master's that is not a worker) makes the
# clients and sends the signals.  The master tells the driver which workers it
# started and reaped through a pipe, from its worker_started/worker_exited hooks.
# The master's calls print live; each worker records into a file of its own
# (the tracer's forked-children support) and is printed once the group stopped.

#: The chapter on pre-forked workers and the PROXY protocol.
PREFORK_CHAPTER = "docs/12-many-cores-many-machines.md"

EXPLAIN.update({
    "PreforkMixIn.serve_forever": (
        "in the master: fork the workers, then supervise them (pidfds, the status "
        "pipe, signals); in a worker: the model's own loop", PREFORK_CHAPTER),
    "_pf_spawn": ("block every signal, fork() one worker, unblock: a signal for the "
                  "master never lands in the child", PREFORK_CHAPTER),
    "worker_started": ("hook, in the master, right after it forked a worker", PREFORK_CHAPTER),
    "worker_exited": ("hook, in the master, after it reaped a worker (its pidfd turned "
                      "readable): the loop replaces it", PREFORK_CHAPTER),
    "worker_init": ("hook, in the worker right after fork(), its signal handlers set: "
                    "open per-process resources here", PREFORK_CHAPTER),
    "_pf_worker_serves": ("a worker said 'ready' on the status pipe: a rolling restart "
                          "may now stop the next old worker", PREFORK_CHAPTER),
    "_pf_stop_worker": ("SIGTERM to a worker: it stops accepting and drains; SIGKILL "
                        "after graceful_timeout", PREFORK_CHAPTER),
    "PreforkMixIn._attach": ("in a worker: also watch the master's pipe (EOF: the master "
                             "died), start the heartbeat, tell the master 'ready'",
                             PREFORK_CHAPTER),
    "PreforkMixIn.process_request": ("count the request against max_requests, then the "
                                     "model's process_request", PREFORK_CHAPTER),
})


def _prefork_server_class() -> type:
    """The toured class: two pre-forked workers, each a synchronous TCPServer."""
    from .prefork import PreforkMixIn
    from .sockets import TCPServer

    class TourPreforkMixIn(PreforkMixIn):
        """Tells the tour's driver (``events``) who started and who left.

        A mixin of its own, not methods of the server class: the tracer traces
        the prefork hooks on PreforkMixIn's subclasses, the server hooks on the
        server classes.
        """

        events = -1  # the write end of the driver's pipe, in the master

        def worker_started(self, pid: int) -> None:
            """Called in the master right after it forked worker ``pid``."""
            with contextlib.suppress(BrokenPipeError):  # the driver has left
                os.write(self.events, f"started {pid}\n".encode())

        def worker_exited(self, pid: int, status: int) -> None:
            """Called in the master after it reaped worker ``pid``."""
            with contextlib.suppress(BrokenPipeError):
                os.write(self.events, f"exited {pid}\n".encode())

    class PreforkEchoServer(TourPreforkMixIn, TCPServer):
        """Two workers, each a synchronous echo server on the master's listener."""

        workers = 2
        worker_timeout = None  # the tour pauses nobody; no heartbeat ticks to print
        graceful_timeout = 5.0

    return PreforkEchoServer


def run_prefork_tour(out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """``tour prefork``: this process becomes the master; a driver subprocess plays the world."""
    if not hasattr(os, "pidfd_open") or threading.active_count() != 1:
        err.write("minisocketserver tour: error: tour prefork needs Linux (pidfds) and a "
                  "process with no other thread (the master forks)\n")
        return 2
    from .seed import SeedEchoHandler

    server_class = _prefork_server_class()
    out.write(
        "minisocketserver tour, prefork model: PreforkEchoServer (PreforkMixIn + TCPServer, "
        "2 workers)\nserving SeedEchoHandler on 127.0.0.1, on a port the kernel picks.  "
        "This process is the master;\na driver process makes the clients and sends the "
        "signals (its lines start with 'driver:').\nThe master's calls print as they are "
        "recorded; each worker's, once the group has stopped.\n")
    out.flush()
    printer = LivePrinter(out)
    tracer = Tracer(on_event=printer)
    logged = _log_to(out)
    events_r, events_w = os.pipe()
    driver: subprocess.Popen[bytes] | None = None
    try:
        with tracer:
            tracer.name_thread("master")
            server = server_class(("127.0.0.1", 0), SeedEchoHandler)
            try:
                server.events = events_w
                host, port = server.server_address[:2]
                driver = subprocess.Popen(
                    [sys.executable, "-c", "import sys; from minisocketserver.tour import "
                     "prefork_driver; sys.exit(prefork_driver(*sys.argv[1:]))",
                     str(os.getpid()), host, str(port), str(events_r)],
                    pass_fds=[events_r], stdout=out.fileno())
                os.close(events_r)
                events_r = -1
                server.serve_forever(poll_interval=0.5)
            finally:
                server.server_close()
            printer.say("\n== the group has stopped: what each worker process recorded, "
                        "read from its file")
        status = driver.wait(timeout=10) if driver is not None else 1
    finally:
        logging.getLogger("minisocketserver").removeHandler(logged)
        for fd in (events_r, events_w):
            if fd != -1:
                os.close(fd)
        if driver is not None and driver.poll() is None:
            driver.kill()
            driver.wait()
    recording = tracer.recording()
    workers = sorted({e.lifeline for e in recording.events if e.lifeline.startswith("child")})
    out.write(f"\n== done: {printer.calls} calls; the master and {len(workers)} worker "
              f"processes; the driver exited with status {status}.\nThe walkthrough: "
              f"{PREFORK_CHAPTER}.\n")
    return 0 if status == 0 else 1


def _log_to(out: TextIO) -> logging.Handler:
    """Print the package's INFO log lines ("prefork: ...") among the recorded calls."""
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("log [%(process)d]: %(message)s"))
    logger = logging.getLogger("minisocketserver")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def prefork_driver(master: str, host: str, port: str, events: str) -> int:
    """The world of ``tour prefork``: clients, a SIGKILL, a SIGHUP, then SIGTERM.

    Runs in its own process (started by the master, before any fork), reads
    the master's "started PID" / "exited PID" lines from descriptor ``events``
    and waits for each step's consequence there, bounded: no sleep.
    """
    import signal

    master_pid, address = int(master), (host, int(port))
    # Unbuffered: select() below must see every byte not yet read as the pipe's.
    lines = os.fdopen(int(events), "rb", buffering=0)

    def say(text: str) -> None:
        sys.stdout.write(f"\ndriver: {text}\n")
        sys.stdout.flush()

    def expect(started: int, exited: int) -> tuple[list[int], list[int]]:
        seen: dict[str, list[int]] = {"started": [], "exited": []}
        while len(seen["started"]) < started or len(seen["exited"]) < exited:
            readable, _, _ = select.select([lines], [], [], 10.0)
            if not readable:
                raise TimeoutError("the master did not report its workers in time")
            kind, pid = lines.readline().decode().split()
            seen[kind].append(int(pid))
        return seen["started"], seen["exited"]

    def echo(word: bytes) -> bytes:
        with socket.create_connection(address, timeout=10) as client:
            client.sendall(word)
            client.shutdown(socket.SHUT_WR)
            return client.recv(4096)

    started, _ = expect(2, 0)
    say(f"the master started workers {started[0]} and {started[1]}; a client connects")
    say(f"the reply: {echo(b'hello')!r}")
    say(f"SIGKILL to worker {started[0]}, as the OOM killer would")
    os.kill(started[0], signal.SIGKILL)
    expect(1, 1)
    say("SIGHUP to the master: a rolling restart, one worker at a time")
    os.kill(master_pid, signal.SIGHUP)
    expect(2, 2)
    say(f"after the restart, a client connects; the reply: {echo(b'world')!r}")
    say("SIGTERM to the master: every worker drains, then the master returns")
    os.kill(master_pid, signal.SIGTERM)
    return 0
