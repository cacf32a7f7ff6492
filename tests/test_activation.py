"""Listeners the server did not bind (issue 12, item 3).

``from_socket()`` adopts a bound, listening socket on every model.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from support import WAIT, Resources, connect, open_fds, recv_until_eof, serving

import minisocketserver as ours

TESTS = Path(__file__).parent
SERVER_SCRIPT = str(TESTS / "activation_server.py")
LAUNCHER = str(TESTS / "activation_launcher.py")


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _has_ipv6_loopback()


# -- from_socket() ----------------------------------------------------------


class SpySocket(socket.socket):
    """A socket that records bind() and listen(): the server must call neither."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def bind(self, address: Any) -> None:
        self.calls.append("bind")
        super().bind(address)

    def listen(self, *backlog: int) -> None:
        self.calls.append("listen")
        super().listen(*backlog)


class StreamUpper(ours.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


class DatagramUpper(ours.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read().upper())


class LineUpper(ours.LineRequestHandler):
    def line_received(self, line: bytes) -> None:
        self.send(line.upper())
        self.close()


def _bound(kind: str, tmp_path: Path) -> SpySocket:
    """A socket of ``kind``, bound (and listening, for streams), its calls then forgotten."""
    family, type_, address = {
        "tcp": (socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0)),
        "tcp6": (socket.AF_INET6, socket.SOCK_STREAM, ("::1", 0)),
        "udp": (socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0)),
        "unix": (socket.AF_UNIX, socket.SOCK_STREAM, str(tmp_path / "s")),
        "unixdgram": (socket.AF_UNIX, socket.SOCK_DGRAM, str(tmp_path / "s")),
    }[kind]
    sock = SpySocket(family, type_)
    sock.bind(address)
    if type_ == socket.SOCK_STREAM:
        sock.listen()
    sock.calls.clear()
    return sock


def _exchange(kind: str, address: Any, tmp_path: Path) -> bytes:
    """Send one request to a server of ``kind``; return its reply."""
    if kind in ("tcp", "tcp6", "unix"):
        family = {"tcp": socket.AF_INET, "tcp6": socket.AF_INET6, "unix": socket.AF_UNIX}[kind]
        with connect(address, family) as client:
            client.sendall(b"adopted\n")
            return recv_until_eof(client)
    family = socket.AF_UNIX if kind == "unixdgram" else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        if family == socket.AF_UNIX:
            client.bind(str(tmp_path / "client"))  # so the reply has somewhere to go
        client.sendto(b"adopted\n", address)
        return client.recv(65536)


MODELS = [
    ("TCPServer", "tcp"),
    ("ThreadingTCPServer", "tcp"),
    ("ThreadPoolTCPServer", "tcp"),
    ("ForkingTCPServer", "tcp"),
    ("MultiplexingTCPServer", "tcp"),
    ("ThreadingTCPServer", "tcp6"),
    ("UDPServer", "udp"),
    ("ThreadingUDPServer", "udp"),
    ("ForkingUDPServer", "udp"),
    ("UnixStreamServer", "unix"),
    ("ThreadingUnixStreamServer", "unix"),
    ("ThreadPoolUnixStreamServer", "unix"),
    ("ForkingUnixStreamServer", "unix"),
    ("MultiplexingUnixStreamServer", "unix"),
    ("UnixDatagramServer", "unixdgram"),
    ("ThreadingUnixDatagramServer", "unixdgram"),
    ("ForkingUnixDatagramServer", "unixdgram"),
]


@pytest.mark.parametrize(("name", "kind"), MODELS)
def test_from_socket_serves_the_socket_as_it_is_on_every_model(
    name: str, kind: str, tmp_path: Path, no_leaks: Resources
) -> None:
    if kind == "tcp6" and not HAS_IPV6:
        pytest.skip("this machine has no IPv6 loopback (::1)")
    cls = getattr(ours, name)
    handler = (
        LineUpper if name.startswith("Multiplexing")
        else DatagramUpper if kind in ("udp", "unixdgram")
        else StreamUpper
    )
    sock = _bound(kind, tmp_path)
    fds_before = open_fds()
    server = cls.from_socket(sock, handler)
    # No socket was opened (and none thrown away: the descriptor set is
    # the same), and the adopted one was neither bound nor put to listen.
    assert open_fds() == fds_before
    assert server.socket is sock
    assert sock.calls == []
    assert server.server_address == sock.getsockname()
    assert server.address_family == sock.family
    with serving(server):
        assert _exchange(kind, server.server_address, tmp_path) == b"ADOPTED\n"
    assert sock.fileno() == -1, "server_close() closes the adopted socket"


def test_from_socket_passes_keywords_to_a_subclass_constructor(no_leaks: Resources) -> None:
    class Tagged(ours.ThreadingTCPServer):
        def __init__(
            self, server_address: Any, handler: Any, bind_and_activate: bool = True, *, tag: str
        ) -> None:
            self.tag = tag
            super().__init__(server_address, handler, bind_and_activate)

    with socket.create_server(("127.0.0.1", 0)) as sock:
        server = Tagged.from_socket(sock, StreamUpper, tag="blue")
        assert server.tag == "blue"
        with serving(server):
            assert _exchange("tcp", server.server_address, Path()) == b"ADOPTED\n"


def test_from_socket_runs_the_server_bind_of_subclasses(no_leaks: Resources) -> None:
    """http.server and wsgiref learn their name and port in server_bind(): it still runs."""

    class Named(ours.TCPServer):
        def server_bind(self) -> None:
            super().server_bind()
            self.server_port = self.server_address[1]

    sock = socket.create_server(("127.0.0.1", 0))
    with Named.from_socket(sock, StreamUpper) as server:
        assert server.server_port == sock.getsockname()[1]


def test_an_ipv4_class_adopts_an_ipv6_socket_and_the_reverse(no_leaks: Resources) -> None:
    if not HAS_IPV6:
        pytest.skip("this machine has no IPv6 loopback (::1)")

    class Six(ours.TCPServer):
        address_family = socket.AF_INET6
        dualstack_ipv6 = True  # concerns sockets the server opens, not adopted ones

    six = socket.create_server(("::1", 0), family=socket.AF_INET6)
    with ours.TCPServer.from_socket(six, StreamUpper) as server:
        assert server.address_family == socket.AF_INET6
    four = socket.create_server(("127.0.0.1", 0))
    with Six.from_socket(four, StreamUpper) as server:
        assert server.address_family == socket.AF_INET
        assert ours.TCPServer.address_family == socket.AF_INET  # the class is untouched


def _unbound(family: int, type_: int) -> socket.socket:
    return socket.socket(family, type_)


def _bound_not_listening(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.mark.parametrize(
    ("cls_name", "make", "message"),
    [
        ("UnixStreamServer", lambda p: socket.create_server(("127.0.0.1", 0)),
         "UnixStreamServer serves AF_UNIX sockets, not AF_INET"),
        ("TCPServer", lambda p: _bound("unix", p),
         "TCPServer serves AF_INET or AF_INET6 sockets, not AF_UNIX"),
        ("TCPServer", lambda p: _bound("udp", p),
         "TCPServer serves SOCK_STREAM sockets, not SOCK_DGRAM"),
        ("UDPServer", lambda p: socket.create_server(("127.0.0.1", 0)),
         "UDPServer serves SOCK_DGRAM sockets, not SOCK_STREAM"),
        ("UnixDatagramServer", lambda p: _bound("unix", p),
         "UnixDatagramServer serves SOCK_DGRAM sockets, not SOCK_STREAM"),
        ("TCPServer", _bound_not_listening, "the socket is not listening"),
        ("UDPServer", lambda p: _unbound(socket.AF_INET, socket.SOCK_DGRAM),
         "the socket is not bound"),
        ("UnixDatagramServer", lambda p: _unbound(socket.AF_UNIX, socket.SOCK_DGRAM),
         "the socket is not bound"),
    ],
)
def test_from_socket_refuses_a_socket_the_class_cannot_serve(
    cls_name: str, make: Any, message: str, tmp_path: Path, no_leaks: Resources
) -> None:
    with make(tmp_path) as sock:
        fds_before = open_fds()
        with pytest.raises(ValueError, match=message):
            getattr(ours, cls_name).from_socket(sock, StreamUpper)
        assert open_fds() == fds_before
        assert sock.fileno() != -1, "a refused socket is left to its owner, open"


def test_from_socket_refuses_a_closed_socket(no_leaks: Resources) -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.close()
    with pytest.raises(ValueError, match="the socket is closed"):
        ours.TCPServer.from_socket(sock, StreamUpper)


def test_a_failing_constructor_closes_the_adopted_socket(no_leaks: Resources) -> None:
    """Once the checks pass the server owns the socket, as it owns one it opened."""

    class Broken(ours.TCPServer):
        def server_bind(self) -> None:
            raise RuntimeError("no")

    sock = socket.create_server(("127.0.0.1", 0))
    with pytest.raises(RuntimeError):
        Broken.from_socket(sock, StreamUpper)
    assert sock.fileno() == -1
