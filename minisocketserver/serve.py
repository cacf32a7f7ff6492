"""``python -m minisocketserver serve``: the command a service is deployed with.

Beyond stdlib.  The other commands are for study; this one runs a user's
request handler (``serve MODULE:HANDLER``) or WSGI application (``serve
--wsgi MODULE:APP``) as a service: on the addresses it is told, with the
concurrency model it is told, under TLS, behind a load balancer that speaks
the PROXY protocol, pre-forked into worker processes, and stopped by its
service manager without cutting a request short.  Nothing here is new
machinery: the command builds a server class out of the package's mixins,
in the order each of them asks for, and runs it::

    class Serve<Model>(StoppingMixIn,           always: a request drain() cuts is no bug
                       PreforkMixIn,            --workers N
                       ProxyProtocolMixIn,      --proxy-protocol v1|v2|any
                       <Model>TLSServer         --tls-cert (else <Model>TCPServer),
                                                or the class of --server
                       [, WSGIApplicationServer])   --wsgi: wsgiref's server on ours

One class per address family, because ``address_family`` is a class
attribute: ``--bind 127.0.0.1:8000 --bind [::1]:8000 --bind unix:/run/x``
builds three servers, served by one ``ServerGroup`` loop in one process.
``--workers`` serves exactly one listener (a ``PreforkMixIn`` master
supervises one shared socket): with several binds it is refused, and one
``serve`` per address (or one address behind HAProxy) is the way.

Addresses (``--bind``, repeatable; the line ``serve: serving ... on ...``
prints them back in the same syntax, with the port the kernel chose for 0):

    HOST:PORT       IPv4 (or a name, resolved as bind() resolves it)
    [ADDR]:PORT     IPv6; ``[::]:PORT`` is dual-stack where the platform can
                    be (IPv4 clients then arrive as ``::ffff:a.b.c.d``)
    unix:PATH       a Unix stream socket; a stale socket file nobody listens
                    on is removed first, a live one is an error
    fd:N            the listening socket inherited at descriptor N
    systemd         every socket of systemd's socket activation (LISTEN_FDS)

Signals, in one process: SIGTERM stops accepting and gives the requests in
flight ``--graceful-timeout`` seconds (``drain()``), then exits 0; SIGINT
(Ctrl-C) stops at once, cutting what is in flight, and exits 0.  With
``--workers`` the ``PreforkMixIn`` master owns every signal (HUP, TERM,
INT, QUIT, TTIN, TTOU, USR2; see prefork.py) and this command only waits
for its ``serve_forever()`` to return; SIGUSR2 re-executes this same
command line, which adopts the listener it is passed (``upgrading()``).
Once stopping, a second SIGTERM or SIGINT is ignored: the exit status
stays 0.

``--wsgi`` serves through wsgiref's request handler, with the few changes
``ApplicationRequestHandler`` lists (the model's truth in
``wsgi.multithread``/``wsgi.multiprocess``, ``REMOTE_PORT``, no copy of the
process's environment in each request's).

Exit statuses: 0 once stopped by a signal; 2 for a usage error (a bad
option, a spec that names nothing, a handler that cannot work with the
model), one line on stderr, before anything is bound; 1 when the system
refuses what was asked (an address in use, a certificate that cannot be
read, a service manager that cannot be told READY=1).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import ipaddress
import logging
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, NoReturn, cast

from . import activation, alias
from .handlers import BaseRequestHandler, DatagramRequestHandler
from .multiplexing_mixin import MultiplexedRequestHandler, MultiplexingMixIn
from .server import logger
from .server_group import ServerGroup
from .sockets import TCPServer, plain_address

PROG = "python -m minisocketserver serve"

#: The concurrency models, and the class each one serves with: plain, TLS.
MODELS: dict[str, tuple[str, str]] = {
    "sync": ("TCPServer", "TLSServer"),
    "threading": ("ThreadingTCPServer", "ThreadingTLSServer"),
    "threadpool": ("ThreadPoolTCPServer", "ThreadPoolTLSServer"),
    "forking": ("ForkingTCPServer", "ForkingTLSServer"),
    "multiplexing": ("MultiplexingTCPServer", "MultiplexingTLSServer"),
}

#: Seconds SIGTERM (and ``PreforkMixIn``'s shutdown) leaves requests in flight.
GRACEFUL_TIMEOUT = 30.0

#: How each line of the log starts: when, which process (a worker or the
#: master), how loud.
LOG_FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(message)s"


class ServeError(Exception):
    """Why the command cannot serve, in one line for stderr; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


# -- the command line ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bind:
    """One ``--bind`` value, parsed: where to listen, or which socket to adopt.

    ``kind`` is ``"inet"`` (``address`` is ``(host, port)``, ``family``
    ``AF_INET`` or ``AF_INET6``), ``"unix"`` (``address`` is the path),
    ``"fd"`` (``address`` is the descriptor number) or ``"systemd"``.
    """

    spec: str
    kind: str
    address: Any = None
    family: int = socket.AF_INET


def parse_bind(spec: str) -> Bind:
    """``--bind``'s value as a ``Bind``; ``ServeError`` (one line) if it is none of the forms."""
    forms = "HOST:PORT, [IPV6]:PORT, unix:PATH, fd:N or systemd"
    if spec == "systemd":
        return Bind(spec, "systemd")
    if spec.startswith("unix:"):
        path = spec.removeprefix("unix:")
        if not path:
            raise ServeError(f"--bind {spec}: unix: needs a path (unix:/run/app.sock)")
        return Bind(spec, "unix", path, socket.AF_UNIX)
    if spec.startswith("fd:"):
        number = spec.removeprefix("fd:")
        if not number.isdigit():
            raise ServeError(f"--bind {spec}: fd: needs a descriptor number (fd:3)")
        return Bind(spec, "fd", int(number))
    if spec.startswith("["):
        host, closing, rest = spec[1:].partition("]")
        if not closing or not rest.startswith(":"):
            raise ServeError(f"--bind {spec}: expected [IPV6]:PORT, e.g. [::1]:8000")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ServeError(f"--bind {spec}: {host!r} is not an IPv6 address") from None
        return Bind(spec, "inet", (host, _port(spec, rest[1:])), socket.AF_INET6)
    host, colon, port = spec.rpartition(":")
    if not colon:
        raise ServeError(f"--bind {spec}: expected {forms}")
    if ":" in host:
        raise ServeError(f"--bind {spec}: an IPv6 address goes in brackets: [{host}]:{port}")
    # An empty host is every IPv4 interface, as bind(("", port)) has it.
    return Bind(spec, "inet", (host, _port(spec, port)), socket.AF_INET)


def _port(spec: str, text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise ServeError(f"--bind {spec}: the port must be a number from 0 to 65535, "
                         f"not {text!r}")
    return int(text)


@dataclasses.dataclass
class ServeConfig:
    """The command line, checked: everything ``serve()`` needs to know."""

    handler: str | None = None
    wsgi: str | None = None
    server: str | None = None
    model: str = "threading"
    binds: list[Bind] = dataclasses.field(default_factory=list)
    workers: int | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    proxy_protocol: str | None = None
    proxy_allow: list[str] = dataclasses.field(default_factory=list)
    max_requests: int = 0
    max_requests_jitter: int = 0
    timeout: float | None = None
    graceful_timeout: float = GRACEFUL_TIMEOUT


class _OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors on one line (usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=PROG,
        usage=f"{PROG} [options] MODULE:HANDLER\n       {PROG} [options] --wsgi MODULE:APP",
        description="Serve a request handler, or a WSGI application, as a service: on the\n"
                    "addresses given, with a concurrency model, TLS, the PROXY protocol and\n"
                    "pre-forked workers.  Logs go to stderr; the line 'serve: serving ... on\n"
                    "ADDRESS, ...' tells where it listens.  SIGTERM drains the requests in\n"
                    "flight, then exits 0; Ctrl-C stops at once.",
        epilog="examples:\n"
               "  serve myapp:EchoHandler --bind 127.0.0.1:9000 --model forking\n"
               "  serve --wsgi myapp:app --bind [::]:8443 --workers 4 \\\n"
               "        --tls-cert cert.pem --tls-key key.pem\n"
               "  serve --wsgi myapp:app --bind unix:/run/myapp.sock --proxy-protocol v2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("handler", nargs="?", metavar="MODULE:HANDLER",
                        help="the request handler class (a BaseRequestHandler, or a "
                             "MultiplexedRequestHandler for --model multiplexing)")
    what = parser.add_argument_group("what to serve")
    what.add_argument("--wsgi", metavar="MODULE:APP",
                      help="serve this WSGI application (wsgiref's HTTP/1.0 handler on "
                           "this package's servers) instead of a handler")
    model = what.add_mutually_exclusive_group()
    model.add_argument("--model", choices=list(MODELS),
                       help="the concurrency model (default: threading)")
    model.add_argument("--server", metavar="MODULE:CLASS",
                       help="serve with your own server class instead of a model's")
    where = parser.add_argument_group("where")
    where.add_argument("--bind", action="append", metavar="ADDRESS",
                       help="HOST:PORT, [IPV6]:PORT ([::]:PORT is dual-stack), unix:PATH, "
                            "fd:N (an inherited socket) or systemd (socket activation); "
                            "repeatable (default: 127.0.0.1:8000)")
    how = parser.add_argument_group("how")
    how.add_argument("--workers", type=int, metavar="N",
                     help="pre-fork N worker processes sharing the listener, supervised "
                          "by this process (default: no fork, one process)")
    how.add_argument("--tls-cert", metavar="FILE",
                     help="serve TLS with this certificate chain (PEM)")
    how.add_argument("--tls-key", metavar="FILE",
                     help="the certificate's private key (default: in --tls-cert's file)")
    how.add_argument("--proxy-protocol", choices=["v1", "v2", "any"],
                     help="every connection starts with a PROXY protocol header from a "
                          "load balancer (HAProxy, nginx): handlers see the client's address")
    how.add_argument("--proxy-allow", action="append", metavar="CIDR", default=[],
                     help="the load balancers' networks, repeatable "
                          "(default: 127.0.0.0/8 and ::1/128)")
    limits = parser.add_argument_group("workers and stopping")
    limits.add_argument("--max-requests", type=_count, default=0, metavar="N",
                        help="recycle a worker after N requests (default: 0, never)")
    limits.add_argument("--max-requests-jitter", type=_count, default=0, metavar="N",
                        help="plus a random 0..N per worker, so workers do not all recycle "
                             "at once")
    limits.add_argument("--timeout", type=_seconds, metavar="S",
                        help="kill and replace a worker whose loop has not turned for S "
                             "seconds (default: 30; 0: never)")
    limits.add_argument("--graceful-timeout", type=_seconds, default=GRACEFUL_TIMEOUT,
                        metavar="S",
                        help="on SIGTERM, S seconds for the requests in flight before "
                             f"they are cut (default: {GRACEFUL_TIMEOUT:g})")
    return parser


def parse_args(argv: Sequence[str]) -> ServeConfig:
    """The checked configuration; ``ServeError`` for what argparse cannot check alone."""
    args = build_parser().parse_args(argv)
    if (args.handler is None) == (args.wsgi is None):
        raise ServeError("name a handler (MODULE:HANDLER) or an application (--wsgi "
                         "MODULE:APP)" if args.handler is None else
                         "a handler (MODULE:HANDLER) or --wsgi MODULE:APP, not both")
    if args.wsgi is not None and args.server is not None:
        raise ServeError("--wsgi builds its server class from --model; --server is for "
                         "handlers")
    if args.wsgi is not None and args.model == "multiplexing":
        raise ServeError("--wsgi needs a model with blocking handlers (wsgiref reads "
                         "and writes as it goes): sync, threading, threadpool or forking")
    if args.workers is not None and args.workers < 1:
        raise ServeError(f"--workers must be 1 or more, not {args.workers}")
    if args.workers is None:
        given = [option for option, value in (
            ("--max-requests", args.max_requests), ("--max-requests-jitter",
                                                    args.max_requests_jitter),
            ("--timeout", args.timeout)) if value]
        if given:
            raise ServeError(f"{' and '.join(given)} apply to pre-forked workers: "
                             "add --workers N")
    if args.tls_key is not None and args.tls_cert is None:
        raise ServeError("--tls-key needs --tls-cert")
    if args.proxy_allow and args.proxy_protocol is None:
        raise ServeError("--proxy-allow needs --proxy-protocol")
    for network in args.proxy_allow:
        try:
            ipaddress.ip_network(network)
        except ValueError as error:
            raise ServeError(f"--proxy-allow {network}: {error}") from None
    binds = [parse_bind(spec) for spec in args.bind or ["127.0.0.1:8000"]]
    if args.workers is not None and len(binds) > 1:
        raise ServeError("--workers serves one listener, shared by the workers: give one "
                         "--bind (run one serve per address, or put them behind one "
                         "load balancer)")
    return ServeConfig(
        handler=args.handler, wsgi=args.wsgi, server=args.server,
        model=args.model or "threading", binds=binds, workers=args.workers,
        tls_cert=args.tls_cert, tls_key=args.tls_key,
        proxy_protocol=args.proxy_protocol, proxy_allow=args.proxy_allow,
        max_requests=args.max_requests, max_requests_jitter=args.max_requests_jitter,
        timeout=args.timeout, graceful_timeout=args.graceful_timeout,
    )


# -- what to serve ---------------------------------------------------------------


def load_object(option: str, spec: str) -> Any:
    """``MODULE:NAME`` (``NAME`` may be dotted) -> the object; ``ServeError`` if it names none."""
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name.strip() or not name.strip():
        raise ServeError(f"{option}: expected MODULE:NAME (e.g. myapp:Handler), got {spec!r}")
    try:
        value: Any = importlib.import_module(module_name)
    except Exception as exc:  # whatever the module's own code raised as it ran
        message = " ".join(str(exc).split())
        raise ServeError(f"{option}: cannot import {module_name!r}: "
                         f"{type(exc).__name__}: {message}") from exc
    for part in name.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ServeError(f"{option}: {spec}: no attribute {part!r}") from None
    return value


def _handler_class(spec: str, multiplexing: bool) -> type:
    """The handler ``spec`` names, checked against the model it will run in."""
    handler = load_object("MODULE:HANDLER", spec)
    if not isinstance(handler, type) or not issubclass(
            handler, (BaseRequestHandler, MultiplexedRequestHandler)):
        raise ServeError(f"{spec} is not a request handler class (a subclass of "
                         "BaseRequestHandler or MultiplexedRequestHandler)")
    if issubclass(handler, DatagramRequestHandler):
        raise ServeError(f"{spec} is a DatagramRequestHandler; serve serves connections: "
                         "use a StreamRequestHandler")
    multiplexed = issubclass(handler, MultiplexedRequestHandler)
    if multiplexing and not multiplexed:
        raise ServeError(f"the multiplexing model calls its handlers back on the loop's "
                         f"thread, and {spec} blocks: use a MultiplexedRequestHandler "
                         "(or another --model)")
    if multiplexed and not multiplexing:
        raise ServeError(f"{spec} is a MultiplexedRequestHandler: it needs --model "
                         "multiplexing (or a multiplexing --server)")
    return handler


def _server_base(config: ServeConfig) -> type:
    """The class the servers are built on: the model's (TLS or not), or ``--server``'s."""
    package = sys.modules[__package__ or "minisocketserver"]
    tls = config.tls_cert is not None
    if config.server is None:
        name = MODELS[config.model][tls]
        base = getattr(package, name, None)
        if not isinstance(base, type):
            raise ServeError(f"--model {config.model}{' with TLS' if tls else ''}: "
                             f"this platform has no {name}")
        return base
    base = load_object("--server", config.server)
    if not isinstance(base, type) or not issubclass(base, TCPServer):
        raise ServeError(f"--server {config.server} is not a minisocketserver server "
                         "class (a subclass of TCPServer)")
    if base.socket_type != socket.SOCK_STREAM:
        raise ServeError(f"--server {config.server} serves datagrams; serve serves "
                         "connections")
    if not tls:
        return base
    from .tls import TLSMixIn

    if not issubclass(base, TLSMixIn):
        if issubclass(base, MultiplexingMixIn):
            # Its handshake must run in the loop, which only
            # MultiplexingTLSServer's process_request() does.
            raise ServeError(f"--server {config.server} multiplexes: for TLS build it on "
                             "MultiplexingTLSServer")
        base = type(base.__name__, (TLSMixIn, base), {"__module__": base.__module__})
    return base


# For the type checker the mixin below is a server; at run time it derives
# from object, as the package's mixins do.
if TYPE_CHECKING:
    _ServerBase = TCPServer
else:
    _ServerBase = object


class StoppingMixIn(_ServerBase):
    """First in the bases of every class ``serve`` builds: a cut request is not a bug.

    ``drain()`` cuts the requests still running when the graceful timeout
    (or SIGINT's none) is over: a worker thread's connection is shut down
    under its handler, whose next read or write raises.  ``handle_error``
    would print that as a traceback, although it is what was asked for;
    from ``drain()`` on (``serve_group()`` calls it, and so does each
    pre-forked worker as it leaves), a connection error is one line of the
    log instead.
    """

    #: Set by ``drain()``: the requests still running may be cut.
    stopping: bool = False

    def drain(self, timeout: float) -> int:
        """Mark the server as stopping, then drain (see ``BaseServer.drain``)."""
        self.stopping = True
        return super().drain(timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Called by the model when a request raised: one line if it was cut, else a traceback."""
        error = sys.exc_info()[1]
        if self.stopping and isinstance(error, OSError):
            logger.info("serve: the request from %s was cut: %s", client_address, error)
            return
        super().handle_error(request, client_address)


def server_class(config: ServeConfig, base: type, bind_family: int) -> type[TCPServer]:
    """The class serving one family of address: the mixins ``config`` asks for, then ``base``.

    ``PreforkMixIn`` and ``ProxyProtocolMixIn`` each want to come first,
    prefork before proxy (each worker reads its own connections' headers);
    they are imported only when asked for.
    """
    bases: list[type] = [StoppingMixIn]
    attributes: dict[str, Any] = {
        "address_family": bind_family,
        # A restart must bind while the old connections are in TIME_WAIT.
        "allow_reuse_address": True,
        "dualstack_ipv6": False,
        "__module__": __name__,
    }
    if config.workers is not None:
        from .prefork import PreforkMixIn

        bases.append(PreforkMixIn)
        attributes.update(
            workers=config.workers,
            max_requests=config.max_requests,
            max_requests_jitter=config.max_requests_jitter,
            graceful_timeout=config.graceful_timeout,
        )
        if config.timeout is not None:
            attributes["worker_timeout"] = config.timeout or None
    if config.proxy_protocol is not None:
        from .proxy_protocol import ProxyProtocolMixIn

        bases.append(ProxyProtocolMixIn)
        attributes["proxy_protocol"] = config.proxy_protocol
        if config.proxy_allow:
            attributes["proxy_allow_from"] = tuple(config.proxy_allow)
    bases.append(base)
    name = "Serve" + base.__name__
    if config.wsgi is not None:
        bases.append(wsgi_classes()[0])
        attributes.update(
            wsgi_multithread=config.model in ("threading", "threadpool"),
            wsgi_multiprocess=config.model == "forking" or config.workers is not None,
            wsgi_https=config.tls_cert is not None,
        )
    return cast("type[TCPServer]", type(name, tuple(bases), attributes))


# -- WSGI: wsgiref's server and handler, on this package's classes ----------------


def wsgi_classes() -> tuple[type, type]:
    """``(WSGIApplicationServer, ApplicationRequestHandler)``: wsgiref's, on this package.

    Called once ``alias.install()`` has run, so that ``wsgiref`` (and
    ``http.server`` under it) import this package as ``socketserver`` and
    their classes derive from ours: a model's class then goes first in the
    bases, as ``class ThreadingWSGIServer(ThreadingMixIn, WSGIServer)``
    does in the wsgiref documentation.  The classes are made once per process.
    """
    global _wsgi
    if _wsgi is None:
        _wsgi = _make_wsgi_classes()
    return _wsgi


_wsgi: tuple[type, type] | None = None


def _make_wsgi_classes() -> tuple[type, type]:
    from http.server import HTTPServer
    from wsgiref.simple_server import ServerHandler, WSGIRequestHandler, WSGIServer

    class ApplicationServerHandler(ServerHandler):
        """wsgiref's per-request handler, without the server's environment.

        wsgiref copies the process's ``os.environ`` into every request's
        ``environ`` (its CGI heritage): the service's secrets (a
        ``DATABASE_URL``) would reach any page that shows ``environ``, a
        debugger's or an error page's.  gunicorn and werkzeug start from
        the CGI variables alone, and so does this handler.
        """

        os_environ: dict[str, str] = {}  # noqa: RUF012 - wsgiref reads it from the class
        # Set by the request handler: wsgiref logs each request through it.
        request_handler: WSGIRequestHandler

    class ApplicationRequestHandler(WSGIRequestHandler):
        """wsgiref's request handler, with the truth about the model and the client.

        Differences from wsgiref's, each for a reason:

        * ``wsgi.multithread`` and ``wsgi.multiprocess`` say what the
          server does (wsgiref always says single-threaded, single-process).
        * ``REMOTE_ADDR`` is an IPv4 client's IPv4 form on a dual-stack
          listener, ``REMOTE_PORT`` is set (werkzeug and gunicorn set it);
          both come from ``client_address``, which ``ProxyProtocolMixIn``
          makes the original client's.
        * A Unix socket's peer has no address: ``REMOTE_ADDR`` is empty
          (wsgiref fails indexing ``''``).
        * The process's environment is not copied (``ApplicationServerHandler``).
        """

        def setup(self) -> None:
            """Called by the handler's constructor: the client's address in the form logged."""
            address = plain_address(self.client_address)
            # A Unix stream socket's peer is '' (or a path, if it bound one).
            self.client_address = address if isinstance(address, tuple) else ("", 0)
            super().setup()

        def address_string(self) -> str:
            """The client, as the access log line shows it (``-`` for a Unix peer)."""
            return str(self.client_address[0]) or "-"

        def get_environ(self) -> dict[str, str]:
            """Called by ``handle()``: wsgiref's CGI variables, plus ``REMOTE_PORT``."""
            environ: dict[str, str] = super().get_environ()
            environ["REMOTE_ADDR"] = str(self.client_address[0])
            environ.pop("REMOTE_HOST", None)  # no reverse DNS: the address is the host
            if self.client_address[1]:
                environ["REMOTE_PORT"] = str(self.client_address[1])
            return environ

        def handle(self) -> None:
            """Called by the handler's constructor: one request, as wsgiref's handler serves it.

            The same steps as wsgiref's own ``handle()``, whose
            ``ServerHandler`` is made with ``multithread=False`` whatever
            the server; here it is told what the server does.
            """
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:  # http.server's limit on a request line
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.parse_request():  # the error response is sent already
                return
            server: Any = self.server  # a WSGIApplicationServer (typeshed: stdlib's BaseServer)
            handler = ApplicationServerHandler(
                self.rfile, cast("IO[bytes]", self.wfile), self.get_stderr(), self.get_environ(),
                multithread=server.wsgi_multithread,
                multiprocess=server.wsgi_multiprocess,
            )
            handler.request_handler = self
            handler.run(server.get_app())

    class WSGIApplicationServer(WSGIServer):
        """wsgiref's ``WSGIServer`` for ``serve --wsgi``: Unix sockets, HTTPS, the model.

        Class variables (set by ``server_class()``): ``wsgi_multithread``,
        ``wsgi_multiprocess``, ``wsgi_https``.
        """

        wsgi_multithread = False
        wsgi_multiprocess = False
        wsgi_https = False

        def server_bind(self) -> None:
            """Called by the constructor: bind, then the environment every request starts from.

            ``http.server`` takes the bound address apart as (host, port);
            a Unix socket's is a path, so its requests name the server
            ``localhost`` on the scheme's port (clients send ``Host:`` anyway).
            """
            if self.address_family != getattr(socket, "AF_UNIX", None):
                super().server_bind()
                return
            super(HTTPServer, self).server_bind()  # past http.server's (host, port) part
            self.server_name = "localhost"
            self.server_port = 443 if self.wsgi_https else 80
            self.setup_environ()

        def setup_environ(self) -> None:
            """wsgiref's base environment, with ``HTTPS=on`` under TLS (``wsgi.url_scheme``)."""
            super().setup_environ()
            if self.wsgi_https:
                self.base_environ["HTTPS"] = "on"

    return WSGIApplicationServer, ApplicationRequestHandler


# -- binding ---------------------------------------------------------------------


def upgrading(config: ServeConfig) -> bool:
    """Whether this process is the new master of a SIGUSR2 upgrade (see prefork.py).

    The old master passes its listener on by systemd's protocol, named
    ``prefork``, and re-executes this same command line: the listener is
    then adopted, whatever the ``--bind`` says.  ``PreforkMixIn`` adopts
    it in its constructor for HOST:PORT and ``unix:`` binds (a ``unix:``
    path is live then: it is the old master's, and must not be refused);
    ``systemd`` takes it as any passed socket; ``fd:N`` was closed by the
    exec, so it is taken in its place.
    """
    if config.workers is None or os.environ.get("LISTEN_PID") != str(os.getpid()):
        return False
    from .prefork import LISTEN_NAME

    return LISTEN_NAME in os.environ.get("LISTEN_FDNAMES", "").split(":")


def _inherited_socket(bind: Bind, config: ServeConfig) -> list[tuple[str, socket.socket]]:
    """The sockets an ``fd:N`` or ``systemd`` bind adopts, each with its label."""
    if bind.kind == "fd" and not upgrading(config):
        fd = bind.address
        try:
            is_socket = stat.S_ISSOCK(os.fstat(fd).st_mode)
        except OSError:  # EBADF
            raise ServeError(f"--bind {bind.spec}: descriptor {fd} is not open") from None
        if not is_socket:
            raise ServeError(f"--bind {bind.spec}: descriptor {fd} is not a socket")
        # As listen_fds() does: the programs a handler starts must not hold
        # the listener open (a restart of the service would not free it).
        os.set_inheritable(fd, False)
        return [(bind.spec, socket.socket(fileno=fd))]
    pid = os.environ.get("LISTEN_PID")
    try:
        found = activation.listen_fds_with_names()
    except ValueError as error:
        raise ServeError(f"--bind systemd: {error}") from None
    if not found:
        why = ("LISTEN_FDS unset" if pid is None else
               f"LISTEN_PID={pid}, this process is {os.getpid()}")
        raise ServeError(f"--bind systemd: no sockets passed ({why})")
    return [(f"systemd fd {sock.fileno()} ({name})", sock) for name, sock in found]


def _clear_stale_unix_socket(bind: Bind) -> None:
    """Remove ``unix:PATH``'s socket file if nobody listens on it; refuse if someone does.

    A server that was killed leaves its socket file behind, and bind()
    fails on it (EADDRINUSE) although nobody serves there: every restart
    would need a hand to remove it.  A connect() tells a stale file
    (ECONNREFUSED) from a live server, which must not lose its address.
    Anything that is not a socket is left alone, for bind() to report.
    """
    path = bind.address
    try:
        is_socket = stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return
    if not is_socket:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)  # a live server with a full backlog makes connect() wait
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            return
        except OSError:
            return
    raise ServeError(f"--bind {bind.spec}: a server is listening there already", status=1)


def bind_servers(config: ServeConfig, handler: Any, base: type,
                 context: Any) -> list[TCPServer]:
    """One server per listener, each of the class its family needs; all closed on error."""
    servers: list[TCPServer] = []
    classes: dict[int, type[TCPServer]] = {}
    keywords = {} if context is None else {"context": context}

    def class_for(family: int) -> type[TCPServer]:
        if family not in classes:
            classes[family] = server_class(config, base, family)
        return classes[family]

    try:
        for bind in config.binds:
            if bind.kind in ("fd", "systemd"):
                found = _inherited_socket(bind, config)
                if config.workers is not None and len(found) > 1:
                    for _, sock in found:
                        sock.close()
                    raise ServeError(f"--bind {bind.spec}: {len(found)} sockets passed, and "
                                     "--workers serves one listener")
                for index, (label, sock) in enumerate(found):
                    if sock.type != socket.SOCK_STREAM:
                        for _, rest in found[index:]:
                            rest.close()
                        raise ServeError(f"--bind {label}: not a stream socket; serve "
                                         "serves connections")
                    try:
                        servers.append(class_for(sock.family).from_socket(
                            sock, handler, **keywords))
                    except ValueError as error:
                        # from_socket() leaves a socket it refuses alone.
                        for _, rest in found[index:]:
                            rest.close()
                        reason = str(error).partition("(): ")[2] or str(error)
                        raise ServeError(f"--bind {label}: {reason}") from None
                continue
            if bind.kind == "unix" and not upgrading(config):
                _clear_stale_unix_socket(bind)
            cls = class_for(bind.family)
            if bind.address[0] == "::" and socket.has_dualstack_ipv6():
                cls = type(cls.__name__, (cls,), {"dualstack_ipv6": True,
                                                  "__module__": __name__})
            try:
                servers.append(cls(bind.address, handler, **keywords))
            except OSError as error:
                raise ServeError(f"--bind {bind.spec}: cannot listen there: "
                                 f"{error.strerror or error}", status=1) from None
    except BaseException:
        for server in servers:
            server.server_close()
        raise
    return servers


def tls_context(config: ServeConfig) -> Any:
    """The server-side ``ssl.SSLContext`` for ``--tls-cert``/``--tls-key``, or None."""
    if config.tls_cert is None:
        return None
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as error:
        reason = getattr(error, "strerror", None) or error
        raise ServeError(f"--tls-cert {config.tls_cert}: cannot load the certificate and "
                         f"key: {reason}", status=1) from None
    if config.wsgi is not None:
        context.set_alpn_protocols(["http/1.1"])
    return context


def describe(server: TCPServer) -> str:
    """Where a server listens, in ``--bind``'s own syntax (the real port for port 0)."""
    address = server.socket.getsockname()
    if server.socket.family == getattr(socket, "AF_UNIX", None):
        if isinstance(address, bytes):  # Linux's abstract namespace, shown as systemd does
            return "unix:@" + address[1:].decode(errors="backslashreplace")
        return f"unix:{address}"
    host, port = address[:2]
    return f"[{host}]:{port}" if server.socket.family == socket.AF_INET6 else f"{host}:{port}"


# -- running ---------------------------------------------------------------------


class _StopOnSignal:
    """SIGTERM's and SIGINT's handler while one process serves: stop the group from a thread.

    The handler raises nothing (a KeyboardInterrupt lands at any bytecode,
    and in the forking model it can be swallowed as "Exception ignored";
    see cli.py's ``_ShutdownOnSignal``, of which this is the same design):
    it starts one thread that calls the group's ``shutdown()``, which must
    not run on the loop's own thread, and ``serve_forever()`` returns in
    the main thread.  A later signal changes nothing.

    A forking model's children inherit the handler with the rest of the
    process; in them it restores the default and sends the signal again,
    so that ``drain()``'s SIGTERM (and a terminal's Ctrl-C, which reaches
    the whole process group) ends a child as it ends any process.

    Used by the main thread only (handlers run there): no lock.
    """

    def __init__(self, group: ServerGroup, graceful_timeout: float) -> None:
        self._group = group
        self._graceful_timeout = graceful_timeout
        self._pid = os.getpid()
        self.signum: int | None = None
        self.stopper: threading.Thread | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        """Called by Python in the main thread when SIGTERM or SIGINT arrives."""
        if os.getpid() != self._pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if self.stopper is None:
            self.signum = signum
            self.stopper = threading.Thread(target=self._stop, name=signal.Signals(signum).name)
            self.stopper.start()

    def _stop(self) -> None:
        if self.signum == signal.SIGTERM:
            logger.info("serve: SIGTERM: no new connections; the requests in flight have "
                        "%g s", self._graceful_timeout)
        else:
            logger.info("serve: SIGINT: stopping now")
        self._group.shutdown()

    @property
    def drain_timeout(self) -> float:
        """What the requests in flight get once the loop has stopped."""
        return self._graceful_timeout if self.signum == signal.SIGTERM else 0.0


def serve_group(servers: list[TCPServer], graceful_timeout: float) -> int:
    """Serve in this one process until SIGTERM or SIGINT; drain; return the exit status."""
    with ServerGroup(servers) as group:
        on_signal = _StopOnSignal(group, graceful_timeout)
        # Installed before READY=1 and the "serving" line: whoever reads
        # either may stop us at once.
        previous = {signum: signal.signal(signum, on_signal)
                    for signum in (signal.SIGTERM, signal.SIGINT)}
        try:
            if not _ready():
                return 1
            group.serve_forever()
            deadline = time.monotonic() + on_signal.drain_timeout
            cut = sum(server.drain(max(0.0, deadline - time.monotonic()))
                      for server in servers)
            if cut:
                logger.info("serve: %d request%s cut, still running after %g s", cut,
                            "" if cut == 1 else "s", on_signal.drain_timeout)
            _stopping()
            logger.info("serve: stopped")
        finally:
            for signum, handler in previous.items():
                # Once stopping, the process is on its way out: a second
                # SIGTERM (an impatient manager's) must not turn a clean
                # exit 0 into a death by signal, so it is ignored from here.
                signal.signal(signum, handler if on_signal.signum is None else signal.SIG_IGN)
            if on_signal.stopper is not None:
                # shutdown() returns once serve_forever() has: at once by now.
                on_signal.stopper.join()
    return 0


def serve_prefork(server: Any) -> int:
    """Let the ``PreforkMixIn`` master supervise its workers until it is stopped.

    The master handles every signal itself and starts no thread; a
    KeyboardInterrupt that still reaches this frame (Ctrl-C before its
    handlers are in place) is a stop like any other.
    """
    with server:
        if not _ready():
            return 1
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
        # The master restored the default handlers as it returned: a second
        # SIGTERM now (an impatient manager's) would turn a clean exit 0
        # into a death by signal.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, signal.SIG_IGN)
        _stopping()
        logger.info("serve: stopped")
    return 0


def _ready() -> bool:
    """Tell a service manager that listens (``NOTIFY_SOCKET``) READY=1; False if it cannot be."""
    try:
        activation.notify("READY=1")
    except OSError as error:
        logger.error("serve: cannot tell the service manager READY=1: %s", error)
        return False
    return True


def _stopping() -> None:
    # The manager may be gone already (it is what sent SIGTERM): a goodbye
    # it cannot read changes nothing.
    with contextlib.suppress(OSError):
        activation.notify("STOPPING=1")


def _summary(config: ServeConfig) -> str:
    """``myapp:app (WSGI, threading, TLS, PROXY v2, 4 workers)``: what is served, and how."""
    what = config.wsgi if config.wsgi is not None else config.handler
    how = [] if config.wsgi is None else ["WSGI"]
    how.append(config.model if config.server is None else f"--server {config.server}")
    if config.tls_cert is not None:
        how.append("TLS")
    if config.proxy_protocol is not None:
        how.append(f"PROXY {config.proxy_protocol}")
    if config.workers is not None:
        how.append(f"{config.workers} worker{'' if config.workers == 1 else 's'}")
    return f"{what} ({', '.join(how)})"


def serve(config: ServeConfig) -> int:
    """Build the servers ``config`` describes, serve until stopped; the exit status."""
    base = _server_base(config)
    app = None
    if config.wsgi is not None:
        app = load_object("--wsgi", config.wsgi)
        if not callable(app):
            raise ServeError(f"--wsgi {config.wsgi} is not callable but a "
                             f"{type(app).__name__}: name the WSGI application")
        handler: type = wsgi_classes()[1]
    else:
        assert config.handler is not None  # parse_args() saw to it
        handler = _handler_class(config.handler, issubclass(base, MultiplexingMixIn))
    context = tls_context(config)
    servers = bind_servers(config, handler, base, context)
    for server in servers if app is not None else []:
        server.set_app(app)  # type: ignore[attr-defined]
    logger.info("serve: serving %s on %s", _summary(config),
                ", ".join(describe(server) for server in servers))
    if config.workers is not None:
        return serve_prefork(servers[0])
    return serve_group(servers, config.graceful_timeout)


def main(argv: Sequence[str]) -> int:
    """``python -m minisocketserver serve ARGS``: the exit status (errors: one line on stderr)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=LOG_FORMAT)
    try:
        config = parse_args(argv)
        # Before any of the user's code is imported: a handler module that
        # does "import socketserver", and wsgiref's http.server, then build
        # on this package's classes (see alias.py).
        alias.install()
        return serve(config)
    except ServeError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.status
    except alias.AliasError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1

