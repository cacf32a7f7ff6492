"""IPv6 and dual-stack listeners (issue 12, item 2).

``dualstack_ipv6 = True`` on an ``AF_INET6`` server turns IPV6_V6ONLY off
before binding, so one socket on ``'::'`` serves IPv4 and IPv6 clients.
Binding ``'::'`` listens on every interface (a dual-stack socket must: the
IPv4-mapped wildcard is the only way to take IPv4 too), but only for the
test's lifetime, on a port the kernel picks, and every client here
connects through loopback (127.0.0.1 or ::1): no traffic leaves the host.
"""

from __future__ import annotations

import ast
import http.server
import shutil
import socket
import socketserver as stdlib
import subprocess
from typing import Any

import pytest
from support import WAIT, Resources, connect, has_ipv6_loopback, recv_until_eof, serving

import minisocketserver as ours
from minisocketserver import plain_address

needs_ipv6 = pytest.mark.skipif(
    not has_ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)"
)


class AddressReporter(ours.StreamRequestHandler):
    """Replies with the client address the server saw, raw and plain."""

    def handle(self) -> None:
        report = (self.client_address, plain_address(self.client_address))
        self.wfile.write(repr(report).encode())


class DatagramAddressReporter(ours.DatagramRequestHandler):
    def handle(self) -> None:
        report = (self.client_address, plain_address(self.client_address))
        self.wfile.write(repr(report).encode())


class DualStackTCP(ours.TCPServer):
    address_family = socket.AF_INET6
    dualstack_ipv6 = True


class DualStackUDP(ours.UDPServer):
    address_family = socket.AF_INET6
    dualstack_ipv6 = True


def _ask(family: int, address: Any) -> tuple[Any, Any, Any]:
    """(what the server reported, our client's own address) over one connection."""
    with connect(address, family) as sock:
        mine = sock.getsockname()
        return (*ast.literal_eval(recv_until_eof(sock).decode()), mine)


# -- dual-stack ---------------------------------------------------------


@needs_ipv6
def test_dualstack_tcp_serves_ipv4_and_ipv6_clients_on_one_socket(no_leaks: Resources) -> None:
    with serving(DualStackTCP(("::", 0), AddressReporter)) as server:
        assert server.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
        port = server.server_address[1]
        raw, plain, mine = _ask(socket.AF_INET, ("127.0.0.1", port))
        assert raw == ("::ffff:127.0.0.1", mine[1], 0, 0)
        assert plain == ("127.0.0.1", mine[1])
        raw, plain, mine = _ask(socket.AF_INET6, ("::1", port))
        assert raw == ("::1", mine[1], 0, 0)
        assert plain == raw


@needs_ipv6
def test_dualstack_turns_v6only_off_even_where_the_system_sets_it_on(
    no_leaks: Resources,
) -> None:
    """On the BSDs and Windows a new IPv6 socket is IPv6-only: we undo it before bind()."""
    server = DualStackTCP(("::", 0), AddressReporter, bind_and_activate=False)
    # What the constructor's socket looks like on a v6only-by-default system.
    server.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    server.server_bind()
    server.server_activate()
    with serving(server):
        raw, plain, mine = _ask(socket.AF_INET, ("127.0.0.1", server.server_address[1]))
        assert (raw, plain) == (("::ffff:127.0.0.1", mine[1], 0, 0), ("127.0.0.1", mine[1]))


@needs_ipv6
def test_dualstack_udp_serves_ipv4_and_ipv6_clients_on_one_socket(no_leaks: Resources) -> None:
    with serving(DualStackUDP(("::", 0), DatagramAddressReporter)) as server:
        port = server.server_address[1]
        for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            with socket.socket(family, socket.SOCK_DGRAM) as client:
                client.settimeout(WAIT)
                client.sendto(b"who am I?", (host, port))
                raw, plain = ast.literal_eval(client.recv(65536).decode())
                mine = client.getsockname()
            if family == socket.AF_INET:
                assert raw == ("::ffff:127.0.0.1", mine[1], 0, 0)
                assert plain == ("127.0.0.1", mine[1])
            else:
                assert raw == plain == ("::1", mine[1], 0, 0)


class AddressPage(http.server.BaseHTTPRequestHandler):
    """An http.server handler: the page is the client's address, as the server saw it."""

    def do_GET(self) -> None:
        body = f"{self.client_address[0]} {plain_address(self.client_address)[0]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean


@needs_ipv6
@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_4_and_curl_6_reach_one_dualstack_http_server(no_leaks: Resources) -> None:
    class DualStackHTTP(ours.ThreadingTCPServer):
        address_family = socket.AF_INET6
        dualstack_ipv6 = True

    with serving(DualStackHTTP(("::", 0), AddressPage)) as server:
        port = server.server_address[1]
        pages = {}
        for flag, url in (("-4", f"http://127.0.0.1:{port}/"), ("-6", f"http://[::1]:{port}/")):
            curl = subprocess.run(
                ["curl", "-s", "--fail", "--max-time", str(WAIT), flag, url],
                capture_output=True, text=True, timeout=2 * WAIT,
            )
            assert curl.returncode == 0, curl.stderr
            pages[flag] = curl.stdout
    assert pages == {"-4": "::ffff:127.0.0.1 127.0.0.1\n", "-6": "::1 ::1\n"}


def test_dualstack_on_an_ipv4_server_is_a_value_error(no_leaks: Resources) -> None:
    class Confused(ours.TCPServer):
        dualstack_ipv6 = True

    with pytest.raises(ValueError, match="dualstack_ipv6 needs address_family = AF_INET6"):
        Confused(("127.0.0.1", 0), AddressReporter)


def test_dualstack_where_the_platform_cannot_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, no_leaks: Resources
) -> None:
    monkeypatch.setattr(socket, "has_dualstack_ipv6", lambda: False)
    with pytest.raises(ValueError, match="cannot serve IPv4 and IPv6 from one socket"):
        DualStackTCP(("::", 0), AddressReporter)


@needs_ipv6
def test_by_default_v6only_is_left_as_stdlib_leaves_it(no_leaks: Resources) -> None:
    seen = []
    for impl in (stdlib, ours):
        cls: Any = type("V6", (impl.TCPServer,), {"address_family": socket.AF_INET6})
        with cls(("::1", 0), impl.BaseRequestHandler) as server:
            seen.append(server.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
    assert seen[0] == seen[1]


# -- plain_address --------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "plain"),
    [
        (("::ffff:127.0.0.1", 5000, 0, 0), ("127.0.0.1", 5000)),
        (("::ffff:192.0.2.7", 80, 0, 0), ("192.0.2.7", 80)),
        (("::1", 5000, 0, 0), ("::1", 5000, 0, 0)),
        (("fe80::1%lo", 5000, 0, 1), ("fe80::1%lo", 5000, 0, 1)),
        (("127.0.0.1", 5000), ("127.0.0.1", 5000)),
        ("/run/app.sock", "/run/app.sock"),
        ("", ""),
        (("not-an-address", 1, 0, 0), ("not-an-address", 1, 0, 0)),
    ],
)
def test_plain_address(address: Any, plain: Any) -> None:
    assert plain_address(address) == plain


# -- allow_reuse_port is for IP sockets only (python/cpython gh-128916) ----


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
@pytest.mark.parametrize("kind", ["UnixStreamServer", "UnixDatagramServer"])
def test_allow_reuse_port_is_ignored_on_unix_sockets(
    kind: str, tmp_path: Any, no_leaks: Resources
) -> None:
    cls: Any = type("Reuse", (getattr(ours, kind),), {"allow_reuse_port": True})
    path = str(tmp_path / "sock")
    # Stdlib 3.11 sets the option anyway and Linux refuses it (EOPNOTSUPP);
    # later releases fixed it, so stdlib is no oracle here.
    with cls(path, ours.BaseRequestHandler) as server:
        assert server.server_address == path
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
