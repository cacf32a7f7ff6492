"""The socket servers: one class per (address family x socket type).

Design map, part 3 of 6.  These classes fill in the hooks ``BaseServer``
leaves open -- how to open, bind and listen, how to take a request, how to
end one -- and nothing else; the loop and the pipeline stay in server.py::

    BaseServer
     └─ TCPServer                  AF_INET x SOCK_STREAM   request: a connected socket
         ├─ UnixStreamServer       AF_UNIX x SOCK_STREAM
         └─ UDPServer              AF_INET x SOCK_DGRAM    request: (data, server socket)
             └─ UnixDatagramServer AF_UNIX x SOCK_DGRAM

``UDPServer`` derives from ``TCPServer`` to reuse its socket set-up, as in
stdlib: the classes vary along the family axis and the type axis, and a
single inheritance chain cannot express both without one such shortcut.
IPv6 needs no class of its own: set ``address_family = socket.AF_INET6``,
and ``dualstack_ipv6 = True`` for one listener that serves IPv4 clients too
(their addresses then arrive as ``::ffff:a.b.c.d``: ``plain_address()``
gives back the IPv4 form).

A listener the server did not bind itself (handed over by systemd, a
supervisor, or the previous generation of a restarting server) is adopted
with ``from_socket()``: the constructor runs as usual, but the socket is
taken as it is -- no new socket, no second ``bind()`` or ``listen()``.
activation.py finds such sockets in the systemd protocol.

Resource handling: a server owns its listening socket from the constructor
on (a failed bind or listen closes it before the exception leaves the
constructor) until ``server_close()``; an adopted one too, from the moment
``from_socket()`` has checked it.  A stream request is a socket the
server owns until ``shutdown_request()``; a datagram request borrows the
server's own socket and owns nothing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from typing import Any, TypeVar

from .server import BaseServer, HandlerFactory, logger

_Server = TypeVar("_Server", bound="TCPServer")

# The families one IP server class can serve: a class written for IPv4 runs
# unchanged on an IPv6 socket (and the reverse); only the format of
# server_address and client_address differs.
_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def plain_address(client_address: Any) -> Any:
    """An IPv4 client's address in its IPv4 form, whatever socket it came through.

    A dual-stack listener (``dualstack_ipv6``) reports an IPv4 client as an
    IPv4-mapped IPv6 address, ``('::ffff:127.0.0.1', port, 0, 0)``; this
    returns ``('127.0.0.1', port)`` for it, the form an ``AF_INET`` server
    would have reported, for logging and for ``verify_request`` checks
    written against IPv4 addresses.  Any other address (an IPv4 pair, a
    real IPv6 address, a Unix path) is returned unchanged.
    """
    if not (isinstance(client_address, tuple) and len(client_address) == 4):
        return client_address
    host, port = client_address[0], client_address[1]
    try:
        mapped = ipaddress.IPv6Address(host).ipv4_mapped
    except ValueError:  # not an IPv6 literal (a hostname a subclass put there)
        return client_address
    return client_address if mapped is None else (str(mapped), port)


def _family(value: int) -> str:
    """``AF_INET`` for 2: the constant's name, for error messages."""
    try:
        return socket.AddressFamily(value).name
    except ValueError:
        return str(value)


def _kind(value: int) -> str:
    """``SOCK_STREAM`` for 1: the constant's name, for error messages."""
    try:
        return socket.SocketKind(value).name
    except ValueError:
        return str(value)


class TCPServer(BaseServer):
    """A stream server: ``get_request()`` accepts one connection.

    Class variables (set them on a subclass, before construction):
        address_family, socket_type, request_queue_size,
        allow_reuse_address, allow_reuse_port, dualstack_ipv6.

    Instance variables:
        socket: the listening socket; server_address: where it is bound,
        updated from the kernel by ``server_bind()`` (port 0 -> real port).

    Other constructor: ``from_socket(sock, RequestHandlerClass, **kwargs)``
    serves a socket that is already bound (and listening).

    Client addresses on an IPv6 server are 4-tuples ``(host, port,
    flowinfo, scope_id)``.  On a dual-stack one, an IPv4 client arrives as
    an IPv4-mapped address: ``('::ffff:127.0.0.1', 51234, 0, 0)``.
    ``plain_address(client_address)`` turns that into ``('127.0.0.1',
    51234)`` for logs and for ``verify_request`` rules written for IPv4.
    """

    #: Address family of the listening socket; ``AF_INET6`` for IPv6.  An
    #: instance built by ``from_socket()`` takes its socket's family.
    address_family: int = socket.AF_INET
    #: ``SOCK_STREAM`` here; ``SOCK_DGRAM`` in ``UDPServer``.
    socket_type: int = socket.SOCK_STREAM
    #: The ``listen()`` backlog: Linux completes and queues this many
    #: connections + 1 while the loop is busy.  The kernel silently caps it
    #: at net.core.somaxconn (``socket.SOMAXCONN`` is only the constant
    #: Python was compiled with).  Stdlib's default is 5: under a burst the
    #: queue overflows, Linux drops the SYNs, and clients retry after 1 s,
    #: then 3 s; the full run of docs/performance.md (``python
    #: benchmarks/run.py``, commit 9761848, 16 clients connecting) measured a
    #: worst connect of 2.05 s against stdlib's ThreadingTCPServer, 1.5 ms
    #: against ours.  We default to socket.SOMAXCONN; set 5 to get stdlib's.
    request_queue_size: int = socket.SOMAXCONN
    #: Set SO_REUSEADDR before binding, so a restarted server can bind a
    #: port whose old connections are still in TIME_WAIT.  On Linux that
    #: works only if the server that made those connections set it too.
    allow_reuse_address: bool = False
    #: Set SO_REUSEPORT before binding (several sockets may share the port).
    #: IP sockets only: on ``AF_UNIX`` it is ignored (see ``server_bind``).
    allow_reuse_port: bool = False
    #: With ``address_family = AF_INET6``, True turns IPV6_V6ONLY off before
    #: binding, so that one socket bound to ``'::'`` serves IPv4 clients too
    #: (as ``::ffff:a.b.c.d``; see ``plain_address()``).  False leaves the
    #: option as the system sets it, as stdlib does: on Linux that is usually
    #: dual-stack already (net.ipv6.bindv6only = 0), on Windows and the BSDs
    #: it is IPv6 only.  The constructor raises ``ValueError`` for it with
    #: ``AF_INET``, or where the platform cannot turn the option off.
    dualstack_ipv6: bool = False

    # Set on the instance by from_socket() before __init__ runs; see there.
    _socket_to_adopt: socket.socket | None = None

    def __init__(
        self,
        server_address: Any,
        RequestHandlerClass: HandlerFactory,
        bind_and_activate: bool = True,
    ) -> None:
        """Open the socket and, unless ``bind_and_activate`` is false, bind and listen.

        With ``bind_and_activate=False`` the caller may set socket options
        first and then call ``server_bind()`` and ``server_activate()``.
        """
        super().__init__(server_address, RequestHandlerClass)
        adopted = self._socket_to_adopt
        # Whether the listener came from from_socket(): server_bind() and
        # server_activate() then leave the socket as it was handed over.
        self._adopted = adopted is not None
        if adopted is not None:
            self._socket_to_adopt = None  # self.socket is the one reference kept
            self.address_family = adopted.family
            self.socket = adopted
        else:
            self._check_dualstack()
            self.socket = socket.socket(self.address_family, self.socket_type)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                # The caller never receives the object, so nobody else
                # could ever close this descriptor.
                self.server_close()
                raise

    @classmethod
    def from_socket(
        cls: type[_Server], sock: socket.socket, RequestHandlerClass: HandlerFactory,
        **kwargs: Any,
    ) -> _Server:
        """A server for ``sock``, an open socket someone else bound (and, for streams, listens on).

        For listeners inherited from systemd (``listen_fds()``), a
        supervisor, or an earlier process of the same service.  ``kwargs``
        go to the constructor (a subclass's own keywords).  The constructor
        runs as usual, ``server_bind()`` and ``server_activate()`` included,
        so that subclasses that extend them (as ``http.server`` and
        ``wsgiref`` extend ``server_bind()``) still run their part, but the
        socket is taken as it is: no new socket is opened,
        ``bind()`` and ``listen()`` are not called again, socket options
        (reuse, dual-stack) are not touched, and ``server_address`` comes
        from ``getsockname()``.

        Raises ``ValueError``, leaving ``sock`` untouched, if it is closed,
        of a type the class does not serve (a UDP socket to a TCP server),
        of a family it does not serve (a TCP socket to a Unix server; the IP
        classes serve IPv4 and IPv6 alike and take the socket's family), not
        bound, or a stream socket that is not listening.  Once the checks
        pass the server owns ``sock``: ``server_close()`` closes it, and so
        does a constructor that raises.
        """
        cls._check_adoptable(sock)
        # The object is built in the two steps cls(...) takes, so that the
        # socket can be handed to TCPServer.__init__ before it runs.  It
        # cannot travel as an argument: subclasses (stdlib's, the user's)
        # pass on only the arguments they know to super().__init__().
        server = cls.__new__(cls)
        server._socket_to_adopt = sock
        cls.__init__(server, sock.getsockname(), RequestHandlerClass, **kwargs)
        return server

    @classmethod
    def _check_adoptable(cls, sock: socket.socket) -> None:
        """Called by ``from_socket()``: ``ValueError`` unless this class can serve ``sock``."""
        name = cls.__name__
        if sock.fileno() == -1:
            raise ValueError(f"{name}.from_socket(): the socket is closed")
        if sock.type != cls.socket_type:
            raise ValueError(
                f"{name}.from_socket(): {name} serves {_kind(cls.socket_type)} sockets, "
                f"not {_kind(sock.type)}"
            )
        served = _INET_FAMILIES if cls.address_family in _INET_FAMILIES else (cls.address_family,)
        if sock.family not in served:
            families = " or ".join(_family(f) for f in served)
            raise ValueError(
                f"{name}.from_socket(): {name} serves {families} sockets, "
                f"not {_family(sock.family)}"
            )
        address = sock.getsockname()
        # An unbound socket reports port 0 (IP) or an empty path (AF_UNIX).
        if not address or (sock.family in _INET_FAMILIES and address[1] == 0):
            raise ValueError(f"{name}.from_socket(): the socket is not bound")
        # Where the platform has no SO_ACCEPTCONN the check is skipped, and
        # such a socket fails at each accept() instead (EINVAL).
        listening = (
            sock.type != socket.SOCK_STREAM
            or not hasattr(socket, "SO_ACCEPTCONN")
            or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        )
        if not listening:
            raise ValueError(
                f"{name}.from_socket(): the socket is not listening (call listen() first)"
            )

    def _check_dualstack(self) -> None:
        """Called by the constructor before it opens a socket: is ``dualstack_ipv6`` possible?"""
        if not self.dualstack_ipv6:
            return
        if self.address_family != socket.AF_INET6:
            raise ValueError(
                f"{type(self).__name__}.dualstack_ipv6 needs address_family = AF_INET6, "
                f"not {_family(self.address_family)}"
            )
        # has_dualstack_ipv6() also tries the option on a scratch socket:
        # a kernel built without IPv4 can have the constant but refuse it.
        if not socket.has_dualstack_ipv6():
            raise ValueError(
                f"{type(self).__name__}.dualstack_ipv6: this platform cannot serve IPv4 "
                "and IPv6 from one socket (no IPV6_V6ONLY); open one server per family "
                "and serve both with a ServerGroup"
            )

    def server_bind(self) -> None:
        """Called by the constructor: set the socket options, bind, learn the address.

        On an adopted socket (``from_socket()``) only the last step runs.
        """
        if self._adopted:
            self.server_address = self.socket.getsockname()
            return
        if self.allow_reuse_address and hasattr(socket, "SO_REUSEADDR"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Linux rejects SO_REUSEPORT on AF_UNIX sockets with EOPNOTSUPP, and
        # where it is accepted it means nothing for a path, so it is applied
        # to the IP families only (stdlib 3.11 to 3.13.0, at least, set it
        # anyway and raise: python/cpython gh-128916).
        reuse_port_applies = self.address_family in _INET_FAMILIES
        if self.allow_reuse_port and reuse_port_applies and hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if self.dualstack_ipv6:
            # Only before bind(): the kernel fixes the option at bind time.
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        self.socket.bind(self.server_address)
        # Port 0 asks the kernel for a free port: report the one it chose.
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Called by the constructor after ``server_bind()``: ``listen()``.

        An adopted socket (``from_socket()``) is listening already, with the
        backlog its owner chose; it is left alone.
        """
        if not self._adopted:
            self.socket.listen(self.request_queue_size)

    def server_close(self) -> None:
        """Close the listening socket (connections being handled stay open).

        ``super()`` first: from another thread than a running loop's, it
        stops the loop before the socket closes (see ``BaseServer``).
        """
        super().server_close()
        self.socket.close()

    def fileno(self) -> int:
        """The listening socket's descriptor, for the loop's selector."""
        return self.socket.fileno()

    def get_request(self) -> tuple[Any, Any]:
        """Called by the loop when the listener is readable: ``accept()``."""
        return self.socket.accept()

    def shutdown_request(self, request: Any) -> None:
        """End a connection: send FIN now, then close our descriptor.

        ``close()`` only drops this process's reference: the connection
        stays open while anything else holds it (a ``makefile()`` object a
        handler kept, or the copy a forked child inherited), and the client
        waits for an EOF that does not come.  ``shutdown(SHUT_WR)`` acts on
        the connection itself: queued data is flushed, then FIN is sent,
        whoever else holds the descriptor.
        """
        # OSError: the peer reset or already closed the connection
        # (ENOTCONN); nothing is left to flush, and close_request() must run.
        with contextlib.suppress(OSError):
            request.shutdown(socket.SHUT_WR)
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Called by ``shutdown_request()``: close the connection's socket."""
        request.close()


class UDPServer(TCPServer):
    """A datagram server: each request is one datagram, ``(data, socket)``.

    ``max_packet_size`` bounds what one ``recvfrom()`` reads; the kernel
    discards the rest of a longer datagram, as in stdlib.
    """

    allow_reuse_address: bool = False
    allow_reuse_port: bool = False
    socket_type: int = socket.SOCK_DGRAM
    #: Bytes read per datagram; the rest of a longer datagram is lost.
    max_packet_size: int = 8192
    # Whether a truncated datagram has been logged at WARNING yet.
    _truncation_reported = False

    def get_request(self) -> tuple[Any, Any]:
        """Called by the loop when a datagram is waiting: read it.

        The request pairs the datagram with the server's socket, so that a
        handler can answer through the very socket it arrived on.  A
        datagram longer than ``max_packet_size`` is cut to that size, as in
        stdlib; unlike stdlib, the cut is reported (``recvmsg`` flags it
        with MSG_TRUNC, which ``recvfrom`` cannot tell).
        """
        if not hasattr(self.socket, "recvmsg"):  # pragma: no cover - Windows
            data, client_address = self.socket.recvfrom(self.max_packet_size)
            return (data, self.socket), client_address
        data, _, flags, client_address = self.socket.recvmsg(self.max_packet_size)
        if flags & socket.MSG_TRUNC:
            self._report_truncation(client_address)
        return (data, self.socket), client_address

    def _report_truncation(self, client_address: Any) -> None:
        """Log a datagram cut to ``max_packet_size``: a warning once, then debug.

        Once per server at WARNING, so that a flood of oversized datagrams
        cannot flood the log too.
        """
        level = logging.DEBUG if self._truncation_reported else logging.WARNING
        self._truncation_reported = True
        logger.log(
            level,
            "%s: a datagram from %s was longer than max_packet_size (%d bytes) and was "
            "truncated%s",
            type(self).__name__, client_address, self.max_packet_size,
            "" if level == logging.DEBUG else "; further truncations are logged at DEBUG",
        )

    def server_activate(self) -> None:
        """Datagram sockets have no backlog: nothing to do after binding."""

    def shutdown_request(self, request: Any) -> None:
        """No connection to end: the socket in the request is the server's own."""
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Nothing to release for a datagram."""


if hasattr(socket, "AF_UNIX"):

    class UnixStreamServer(TCPServer):
        """``TCPServer`` on a filesystem path (``AF_UNIX``).

        The path is not removed by ``server_close()`` (as in stdlib): unlink
        it before binding again.
        """

        address_family: int = socket.AF_UNIX

    class UnixDatagramServer(UDPServer):
        """``UDPServer`` on a filesystem path (``AF_UNIX``)."""

        address_family: int = socket.AF_UNIX
