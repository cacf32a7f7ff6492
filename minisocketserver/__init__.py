"""minisocketserver: Python's ``socketserver``, rebuilt to be read.

A clean-room reimplementation of the standard library's ``socketserver``:
``import minisocketserver as socketserver`` and code written for stdlib runs
unchanged, on Python 3.10 to 3.13.  Every file is annotated so the source
can be studied as a walkthrough of how a socket server works.

The design, as two independent axes
-----------------------------------
A server class is an *address family x socket type* (the socket servers)
combined with a *concurrency model* (a mixin listed first among the bases)::

                      sync (none)   ThreadingMixIn        ForkingMixIn
    TCPServer         TCPServer     ThreadingTCPServer    ForkingTCPServer
    UDPServer         UDPServer     ThreadingUDPServer    ForkingUDPServer
    UnixStreamServer  ...           ThreadingUnix...      ForkingUnix...
    UnixDatagramServer

What happens to a request is a fixed pipeline of small hooks, each
overridable alone (the template-method design stdlib made famous)::

    serve_forever -> select -> get_request -> verify_request
        -> process_request -> finish_request -> RequestHandlerClass
               setup -> handle -> finish
        -> shutdown_request -> close_request

The files, in reading order
---------------------------
reactor.py          the selector and the wake-up channel every loop waits on
server.py           BaseServer: serve_forever, handle_request, the pipeline
sockets.py          TCPServer, UDPServer, UnixStreamServer, UnixDatagramServer
threading_mixin.py  ThreadingMixIn: a thread per request
forking_mixin.py    ForkingMixIn: a child process per request
multiplexing_mixin.py  MultiplexingMixIn: every connection in the loop's thread
server_group.py     ServerGroup: one loop serving several servers
threadpool_mixin.py ThreadPoolMixIn: reused worker threads, a bounded queue
admission.py        AdmissionMixIn: a new connection waits in the loop for its first bytes
tls.py              TLSMixIn and the TLS servers: the handshake never stalls the loop
prefork.py          PreforkMixIn: a master pre-forks workers sharing the listener
proxy_protocol.py   ProxyProtocolMixIn: the client's address from HAProxy's PROXY header
handlers.py         BaseRequestHandler, StreamRequestHandler, DatagramRequestHandler
activation.py       listen_fds(), notify(): listeners inherited from systemd
alias.py            install(): this package as ``socketserver``, for stdlib's servers
tracer.py           records which hook runs on which thread; renders diagrams
tour.py, diagrams.py  ``python -m minisocketserver tour``; the diagrams/ recorder
serve.py            ``python -m minisocketserver serve``: a handler or WSGI app as a service
cli.py, seed.py     ``python -m minisocketserver echo|tour|run|serve``; the seed's echo handler

Where we differ from stdlib (each place says why, with the evidence):
``shutdown()`` returns at once instead of after up to ``poll_interval``; an
idle loop does not wake up periodically unless ``service_actions`` is
overridden; ``shutdown()`` from the serving thread raises instead of
hanging; finished worker threads are forgotten at once.
"""

from __future__ import annotations

import os
import socket

from .activation import listen_fds, listen_fds_with_names, notify
from .admission import AdmissionMixIn
from .alias import install
from .handlers import BaseRequestHandler, DatagramRequestHandler, StreamRequestHandler
from .multiplexing_mixin import (
    LineRequestHandler,
    MultiplexedRequestHandler,
    MultiplexingMixIn,
    MultiplexingTCPServer,
)
from .server import BaseServer
from .server_group import ServerGroup
from .sockets import TCPServer, UDPServer, plain_address
from .threading_mixin import ThreadingMixIn, ThreadingTCPServer, ThreadingUDPServer
from .threadpool_mixin import ThreadPoolMixIn, ThreadPoolTCPServer

# The stdlib 3.13 names first, in stdlib's order, so that ``from
# minisocketserver import *`` gives what ``from socketserver import *`` does.
__all__ = [
    "BaseServer",
    "TCPServer",
    "UDPServer",
    "ThreadingUDPServer",
    "ThreadingTCPServer",
    "BaseRequestHandler",
    "StreamRequestHandler",
    "DatagramRequestHandler",
    "ThreadingMixIn",
]

if hasattr(os, "fork"):
    from .forking_mixin import ForkingMixIn, ForkingTCPServer, ForkingUDPServer

    __all__ += ["ForkingUDPServer", "ForkingTCPServer", "ForkingMixIn"]

if hasattr(socket, "AF_UNIX"):
    from .sockets import UnixDatagramServer, UnixStreamServer
    from .threading_mixin import ThreadingUnixDatagramServer, ThreadingUnixStreamServer

    __all__ += [
        "UnixStreamServer",
        "UnixDatagramServer",
        "ThreadingUnixStreamServer",
        "ThreadingUnixDatagramServer",
    ]
    if hasattr(os, "fork"):
        from .forking_mixin import ForkingUnixDatagramServer, ForkingUnixStreamServer

        __all__ += ["ForkingUnixStreamServer", "ForkingUnixDatagramServer"]

# Beyond stdlib: the models it lacks.
__all__ += ["ThreadPoolMixIn", "ThreadPoolTCPServer"]
if hasattr(socket, "AF_UNIX"):
    from .threadpool_mixin import ThreadPoolUnixStreamServer

    __all__ += ["ThreadPoolUnixStreamServer"]

# Beyond stdlib, after its names: the fourth concurrency model, and one loop
# for several servers.
__all__ += [
    "MultiplexingMixIn",
    "MultiplexingTCPServer",
    "MultiplexedRequestHandler",
    "LineRequestHandler",
    "ServerGroup",
]
if hasattr(socket, "AF_UNIX"):
    from .multiplexing_mixin import MultiplexingUnixStreamServer

    __all__ += ["MultiplexingUnixStreamServer"]

# Beyond stdlib: listeners bound by someone else (systemd, a supervisor), and
# the IPv4 form of a client address seen through a dual-stack socket.
__all__ += ["listen_fds", "listen_fds_with_names", "notify", "plain_address"]

# Beyond stdlib: stand in for it, so that http.server, xmlrpc.server, wsgiref
# and logging.config, which import ``socketserver`` by name, run on these
# classes (``python -m minisocketserver run`` calls it for you).
__all__ += ["install"]

# Beyond stdlib: TLS for every stream model, and the admission stage it
# stands on.  Where Python was built without ssl, the TLS names are absent.
__all__ += ["AdmissionMixIn"]

try:
    from .tls import (
        MultiplexingTLSServer,
        ThreadingTLSServer,
        ThreadPoolTLSServer,
        TLSMixIn,
        TLSServer,
        TLSStats,
        TLSTransport,
    )
except ImportError:  # pragma: no cover - no ssl module
    pass
else:
    __all__ += [
        "TLSMixIn",
        "TLSServer",
        "ThreadingTLSServer",
        "ThreadPoolTLSServer",
        "MultiplexingTLSServer",
        "TLSStats",
        "TLSTransport",
    ]
    if hasattr(os, "fork"):
        from .tls import ForkingTLSServer

        __all__ += ["ForkingTLSServer"]

# Beyond stdlib: every core, a master and its pre-forked workers.
if hasattr(os, "fork"):
    from .prefork import PreforkMixIn

    __all__ += ["PreforkMixIn"]

# Beyond stdlib: the client's own address behind a load balancer (HAProxy's
# PROXY protocol, v1 and v2), for every stream model.
from .proxy_protocol import (  # noqa: E402
    ProxyHeader,
    ProxyProtocolError,
    ProxyProtocolMixIn,
    ProxyStats,
    parse_header,
)

__all__ += ["ProxyProtocolMixIn", "ProxyHeader", "ProxyProtocolError", "ProxyStats",
            "parse_header"]
