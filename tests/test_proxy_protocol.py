"""ProxyProtocolMixIn on every stream model, through real sockets (issue 13, item 2).

Each test plays the load balancer itself: it connects, sends a PROXY
header built by ``encode_v1``/``encode_v2`` (or something that is not
one), then talks to the handler, which echoes what the server told it.
``curl --haproxy-protocol`` stands in for a real v1 sender.  Refusals are
checked while a well-behaved client is served meanwhile, and each one
must close the connection without a reply, without ``handle_error``,
counted in ``proxy_stats`` under its reason.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from support import (
    WAIT,
    Resources,
    connect,
    has_ipv6_loopback,
    loop_has_turned,
    recv_until_eof,
    serving,
)
from test_tls import certificate, client_context, server_context  # noqa: F401 (fixtures)

import minisocketserver as ours
from minisocketserver.proxy_protocol import (
    ProxyHeader,
    ProxyProtocolMixIn,
    encode_v1,
    encode_v2,
)
from minisocketserver.tls import MultiplexingTLSServer, TLSMixIn

pytestmark = pytest.mark.timeout(60)

CLIENT = ("192.0.2.7", 56324)
SERVER = ("198.51.100.1", 443)
CLIENT6 = ("2001:db8::7", 40000)
SERVER6 = ("2001:db8::1", 443)

MODELS = [ours.TCPServer, ours.ThreadingTCPServer, ours.ThreadPoolTCPServer,
          ours.ForkingTCPServer, ours.MultiplexingTCPServer]
HEADERS = {
    "v1": encode_v1(CLIENT, SERVER),
    "v2": encode_v2(CLIENT, SERVER, tlvs=[(0xE0, b"tenant-7")], crc=True),
    "v1-tcp6": encode_v1(CLIENT6, SERVER6),
    "v2-tcp6": encode_v2(CLIENT6, SERVER6),
}


def report(server: Any, request: Any, client_address: Any, line: bytes) -> bytes:
    """What a handler knows of its client, as one JSON line, then the line it read."""
    header: ProxyHeader | None = server.proxy_header(request)
    sock = getattr(request, "socket", request)  # a TLSTransport wraps its socket
    peer = sock.getpeername()
    facts = {
        "client": list(client_address),
        "peer": peer[0] if isinstance(peer, tuple) else peer,
        "version": header and header.version,
        "tlv": header and (header.tlv(0xE0) or b"").decode(),
    }
    return json.dumps(facts).encode() + b"\n" + line


class Echo(ours.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        self.wfile.write(report(self.server, self.request, self.client_address, line))


class MuxEcho(ours.LineRequestHandler):
    def line_received(self, line: bytes) -> None:
        self.send(report(self.server, self.request, self.client_address, line))
        self.close()


def make(model: type, **attributes: Any) -> type:
    """``class S(ProxyProtocolMixIn, model)`` recording verify_request and handle_error."""

    class Server(ProxyProtocolMixIn, model):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.verified: list[Any] = []
            self.errors: list[Any] = []
            super().__init__(*args, **kwargs)

        def verify_request(self, request: Any, client_address: Any) -> bool:
            self.verified.append(client_address)
            return bool(client_address[0] != "192.0.2.66")

        def handle_error(self, request: Any, client_address: Any) -> None:
            self.errors.append(client_address)
            super().handle_error(request, client_address)

    for name, value in attributes.items():
        setattr(Server, name, value)
    Server.__name__ = Server.__qualname__ = f"Proxy{model.__name__}"
    return Server


def handler_for(model: type) -> Any:
    return MuxEcho if issubclass(model, ours.MultiplexingMixIn) else Echo


def ask(address: Any, first: bytes, line: bytes = b"hello\n") -> dict[str, Any]:
    """Send ``first`` (a header) and a line; the handler's facts, checked to end with the line."""
    with connect(address) as client:
        client.sendall(first + line)
        reply = recv_until_eof(client)
    facts, _, echoed = reply.partition(b"\n")
    assert echoed == line, reply
    result: dict[str, Any] = json.loads(facts)
    return result


def closed_without_reply(client: socket.socket) -> bool:
    """Whether the server closed ``client`` without a byte of reply (a reset counts)."""
    try:
        return recv_until_eof(client) == b""
    except ConnectionResetError:  # closed with our bytes unread: RST instead of FIN
        return True


@pytest.fixture
def leak_free(no_leaks: Resources) -> Resources:
    return no_leaks


# -- the client's address, on every model ----------------------------------------------


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("kind", ["v1", "v2", "v1-tcp6", "v2-tcp6"])
def test_each_model_gives_the_handler_the_client_address(
    model: type, kind: str, leak_free: Resources
) -> None:
    server = make(model)(("127.0.0.1", 0), handler_for(model))
    with serving(server):
        facts = ask(server.server_address, HEADERS[kind])
    expected = CLIENT if "tcp6" not in kind else CLIENT6
    assert facts["client"] == list(expected)
    assert facts["peer"] == "127.0.0.1"  # request.getpeername() stays the proxy's
    assert facts["version"] == int(kind[1])
    assert facts["tlv"] == ("tenant-7" if kind == "v2" else "")
    assert server.verified == [expected]  # once, with the client's own address
    assert server.errors == []
    assert server.proxy_stats.accepted == 1
    assert server._proxied == {}  # nothing left per connection


@pytest.mark.parametrize("model", [ours.ThreadPoolTCPServer, ours.MultiplexingTCPServer],
                         ids=lambda m: m.__name__)
@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_a_header_in_pieces_is_waited_for_and_not_a_byte_more_is_read(
    model: type, kind: str
) -> None:
    server = make(model)(("127.0.0.1", 0), handler_for(model))
    header = HEADERS[kind]
    with serving(server), connect(server.server_address) as client:
        ask(server.server_address, HEADERS["v2"])  # the loop is serving
        for start, end in ((0, 3), (3, 14), (14, 17), (17, len(header) - 1)):
            client.sendall(header[start:end])
            # Loopback delivers before sendall returns; one turn of the loop
            # later, the server has seen (and taken) this piece.
            loop_has_turned(server)
        client.sendall(header[-1:] + b"hello\n")
        reply = recv_until_eof(client)
    assert reply.endswith(b"\nhello\n")  # the line after the header arrived whole
    assert json.loads(reply.partition(b"\n")[0])["client"] == list(CLIENT)


@pytest.mark.parametrize("header", [encode_v2(command="LOCAL"), encode_v1(None, None),
                                    encode_v2("/run/client.sock", "/run/app.sock")],
                         ids=["v2-LOCAL", "v1-UNKNOWN", "v2-UNIX"])
def test_local_unknown_and_unix_headers_keep_the_real_peer(header: bytes) -> None:
    server = make(ours.ThreadingTCPServer)(("127.0.0.1", 0), Echo)
    with serving(server):
        facts = ask(server.server_address, header)
    assert facts["client"][0] == "127.0.0.1"
    assert server.verified and server.verified[0][0] == "127.0.0.1"


def test_verify_request_refuses_with_the_client_address() -> None:
    server = make(ours.ThreadingTCPServer)(("127.0.0.1", 0), Echo)
    with serving(server), connect(server.server_address) as refused:
        refused.sendall(encode_v1(("192.0.2.66", 1), SERVER) + b"hello\n")
        assert closed_without_reply(refused)
        assert ask(server.server_address, HEADERS["v1"])["client"] == list(CLIENT)
    assert server.verified == [("192.0.2.66", 1), CLIENT]
    assert server.errors == []


def test_handle_request_reads_the_header_on_its_thread() -> None:
    """No loop to wait in: the header is read where the request runs, bounded."""
    server = make(ours.TCPServer, proxy_header_timeout=0.3)(("127.0.0.1", 0), Echo)
    with server, connect(server.server_address) as client, \
            connect(server.server_address) as stalled:
        client.sendall(HEADERS["v2"] + b"hello\n")
        server.handle_request()
        assert recv_until_eof(client).endswith(b"hello\n")
        stalled.sendall(b"PROX")
        start = time.monotonic()
        server.handle_request()
        assert closed_without_reply(stalled)
        assert 0.2 < time.monotonic() - start < WAIT
    assert server.proxy_stats.refused["timeout"] == 1
    assert server.verified == [CLIENT]


# -- curl, a real v1 sender -------------------------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_haproxy_protocol_reaches_an_http_handler() -> None:
    logged: list[str] = []

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            header = self.server.proxy_header(self.request)  # type: ignore[attr-defined]
            body = json.dumps({"client": list(self.client_address),
                               "peer": list(self.request.getpeername()),
                               "family": header.family, "version": header.version}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            logged.append(self.address_string() + " " + format % args)

    server = make(ours.ThreadingTCPServer)(("127.0.0.1", 0), Hello)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    with serving(server):
        done = subprocess.run(["curl", "-s", "-m", str(WAIT), "--haproxy-protocol", url],
                              capture_output=True, timeout=WAIT + 5, check=True)
        bare = subprocess.run(["curl", "-s", "-m", str(WAIT), url],
                              capture_output=True, timeout=WAIT + 5)
    facts = json.loads(done.stdout)
    # curl connects itself, so the client it names is its own end of the connection.
    assert facts["client"] == facts["peer"] and facts["client"][0] == "127.0.0.1"
    assert (facts["family"], facts["version"]) == ("TCP4", 1)
    assert logged and logged[0].startswith("127.0.0.1 \"GET / HTTP/1.1\" 200")
    assert server.verified == [tuple(facts["client"])]
    assert bare.returncode == 52  # no header: refused, "empty reply from server"
    assert server.proxy_stats.refused["malformed"] == 1


# -- refusals, quiet, while a well-behaved client is served ---------------------------------


def _no_header(client: socket.socket) -> None:
    client.sendall(b"GET / HTTP/1.0\r\n\r\n")


def _bad_version(client: socket.socket) -> None:
    client.sendall(b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a\x31\x11\x00\x0c")


def _line_of_108(client: socket.socket) -> None:
    client.sendall(b"PROXY UNKNOWN " + b"x" * 93)  # 107 bytes, no CRLF: refused already


def _eof_mid_header(client: socket.socket) -> None:
    client.sendall(b"PROXY TCP4 192.0.2.")
    client.shutdown(socket.SHUT_WR)


REFUSALS: dict[str, tuple[Callable[[socket.socket], None], str]] = {
    "no header": (_no_header, "malformed"),
    "bad v2 version": (_bad_version, "malformed"),
    "108-byte v1 line": (_line_of_108, "malformed"),
    "EOF mid-header": (_eof_mid_header, "closed"),
}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_quietly_while_others_are_served(
    model: type, case: str, leak_free: Resources
) -> None:
    # A deadline far away: every refusal here must come from the bytes, not the clock.
    server = make(model, proxy_header_timeout=WAIT * 3)(("127.0.0.1", 0), handler_for(model))
    send, reason = REFUSALS[case]
    with serving(server), connect(server.server_address) as refused:
        send(refused)
        assert ask(server.server_address, HEADERS["v1"])["client"] == list(CLIENT)
        assert closed_without_reply(refused)
    assert server.proxy_stats.refused[reason] == 1
    assert server.proxy_stats.accepted == 1
    assert server.verified == [CLIENT] and server.errors == []


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_a_client_that_sends_prox_and_stalls_is_closed_at_the_timeout(
    model: type, leak_free: Resources
) -> None:
    server = make(model, proxy_header_timeout=0.3)(("127.0.0.1", 0), handler_for(model))
    with serving(server), connect(server.server_address) as stalled:
        stalled.sendall(b"PROX")
        start = time.monotonic()
        assert ask(server.server_address, HEADERS["v2"])["client"] == list(CLIENT)
        assert closed_without_reply(stalled)
        elapsed = time.monotonic() - start
    assert 0.2 < elapsed < WAIT
    assert server.proxy_stats.refused["timeout"] == 1
    assert server.verified == [CLIENT] and server.errors == []


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_a_peer_outside_the_allow_list_is_refused_at_accept(model: type) -> None:
    # Linux routes all of 127/8 to loopback: 127.0.0.2 is another peer.
    server = make(model, proxy_allow_from=["127.0.0.1/32"], proxy_header_timeout=WAIT * 3)(
        ("127.0.0.1", 0), handler_for(model))
    with serving(server), socket.socket() as outsider:
        outsider.settimeout(WAIT)
        outsider.bind(("127.0.0.2", 0))
        outsider.connect(server.server_address)
        # No header sent: refused at accept, not after a wait for one.
        assert closed_without_reply(outsider)
        assert ask(server.server_address, HEADERS["v1"])["client"] == list(CLIENT)
    assert server.proxy_stats.refused["not_allowed"] == 1
    assert server.verified == [CLIENT] and server.errors == []


def test_two_hundred_stalled_clients_do_not_stop_a_real_one_on_the_pool() -> None:
    """More stalled clients than the pool's 64 workers and 128 queue slots together."""
    server = make(ours.ThreadPoolTCPServer)(("127.0.0.1", 0), Echo)
    stalled: list[socket.socket] = []
    with serving(server):
        ask(server.server_address, HEADERS["v2"])  # the loop is serving
        try:
            for _ in range(200):
                stalled.append(connect(server.server_address))
                stalled[-1].sendall(b"PROX")
            loop_has_turned(server)
            start = time.monotonic()
            assert ask(server.server_address, HEADERS["v1"])["client"] == list(CLIENT)
            elapsed = time.monotonic() - start
        finally:
            for client in stalled:
                client.close()
    print(f"served in {elapsed * 1000:.1f} ms behind 200 stalled PROX clients")
    assert elapsed < 2.0


# -- the allow-list and IPv6 -------------------------------------------------------------


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize("allowed, served", [(("::1/128",), True), (("127.0.0.0/8",), False)])
def test_the_allow_list_over_ipv6(allowed: tuple[str, ...], served: bool) -> None:
    model = make(ours.ThreadingTCPServer, proxy_allow_from=allowed,
                 address_family=socket.AF_INET6)
    server = model(("::1", 0), Echo)
    with serving(server), connect(server.server_address[:2], socket.AF_INET6) as client:
        client.sendall(HEADERS["v1"] + b"hello\n")
        if served:
            assert recv_until_eof(client).endswith(b"hello\n")
        else:
            assert closed_without_reply(client)
    assert server.proxy_stats.refused["not_allowed"] == (0 if served else 1)


@pytest.mark.parametrize("peer, allowed", [
    (("127.0.0.1", 1), True), (("10.0.0.1", 1), False),
    (("::ffff:127.0.0.1", 1, 0, 0), True),   # an IPv4 peer on a dual-stack listener
    (("::1", 1, 0, 0), True), (("::2", 1, 0, 0), False), ("", True),  # "" a Unix peer
    (("fe80::1%lo", 1, 0, 1), False),
])
def test_allow_list_matching(peer: Any, allowed: bool) -> None:
    server = make(ours.TCPServer)(("127.0.0.1", 0), Echo)
    with server:
        assert server._proxy_peer_allowed(peer) is allowed


def test_the_allow_list_takes_networks_and_is_checked_at_construction() -> None:
    import ipaddress

    server = make(ours.TCPServer, proxy_allow_from=[ipaddress.ip_network("10.0.0.0/8")])(
        ("127.0.0.1", 0), Echo)
    with server:
        assert server._proxy_peer_allowed(("10.1.2.3", 1))
        assert not server._proxy_peer_allowed(("127.0.0.1", 1))
    with pytest.raises(ValueError):
        make(ours.TCPServer, proxy_allow_from=["10.0.0.300/8"])(("127.0.0.1", 0), Echo)
    with pytest.raises(ValueError, match="proxy_protocol"):
        make(ours.TCPServer, proxy_protocol="v3")(("127.0.0.1", 0), Echo)


def test_mode_v1_refuses_a_v2_header() -> None:
    server = make(ours.ThreadingTCPServer, proxy_protocol="v1")(("127.0.0.1", 0), Echo)
    with serving(server), connect(server.server_address) as client:
        client.sendall(HEADERS["v2"] + b"hello\n")
        assert closed_without_reply(client)
        assert ask(server.server_address, HEADERS["v1"])["client"] == list(CLIENT)
    assert server.proxy_stats.refused["malformed"] == 1


# -- with TLS: the header in clear, then the handshake --------------------------------------


class TLSEcho(ours.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        self.wfile.write(report(self.server, self.request, self.client_address,
                                self.request.version().encode() + b" " + line))


class MuxTLSEcho(ours.LineRequestHandler):
    def line_received(self, line: bytes) -> None:
        version = (self.request.version() or "").encode()
        self.send(report(self.server, self.request, self.client_address, version + b" " + line))
        self.close()


class ProxyTLSServer(ProxyProtocolMixIn, TLSMixIn, ours.ThreadingMixIn, ours.TCPServer):
    pass


class ProxyTLSPoolServer(ProxyProtocolMixIn, TLSMixIn, ours.ThreadPoolMixIn, ours.TCPServer):
    pass


class ProxyMuxTLSServer(ProxyProtocolMixIn, MultiplexingTLSServer):
    pass


def tls_ask(address: Any, context: ssl.SSLContext, header: bytes,
            pause: Callable[[], None] = lambda: None) -> tuple[dict[str, Any], bytes]:
    raw = socket.create_connection(address, timeout=WAIT)
    raw.sendall(header)
    pause()
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"hello\n")
        reply = recv_until_eof(tls)
    facts, _, rest = reply.partition(b"\n")
    return json.loads(facts), rest


@pytest.mark.parametrize("cls", [ProxyTLSServer, ProxyTLSPoolServer, ProxyMuxTLSServer],
                         ids=lambda c: c.__name__)
@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_tls_behind_a_proxy_header(
    cls: type, kind: str,
    server_context: ssl.SSLContext, client_context: ssl.SSLContext,  # noqa: F811
) -> None:
    verified: list[Any] = []

    class Server(cls):  # type: ignore[valid-type, misc]
        def verify_request(self, request: Any, client_address: Any) -> bool:
            verified.append(client_address)
            return True

    handler = MuxTLSEcho if cls is ProxyMuxTLSServer else TLSEcho
    server = Server(("127.0.0.1", 0), handler, context=server_context)
    with serving(server):
        facts, rest = tls_ask(server.server_address, client_context, HEADERS[kind])
    assert facts["client"] == list(CLIENT) and facts["peer"] == "127.0.0.1"
    assert rest.startswith(b"TLSv1.") and rest.endswith(b" hello\n")
    assert verified == [CLIENT]  # once, also where the handshake re-enters the pipeline
    assert server.tls_stats.completed == 1 and server.proxy_stats.accepted == 1
    assert server._proxied == {}


def test_tls_gets_its_own_time_after_the_header(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext,  # noqa: F811
) -> None:
    """The header within proxy_header_timeout; the handshake within handshake_timeout of accept."""

    class Server(ProxyTLSPoolServer):
        proxy_header_timeout = 0.2
        handshake_timeout = WAIT

    server = Server(("127.0.0.1", 0), TLSEcho, context=server_context)
    with serving(server):
        # Time passing is what is tested: the ClientHello comes after the
        # header's deadline, well within the handshake's.
        facts, _ = tls_ask(server.server_address, client_context, HEADERS["v1"],
                           pause=lambda: time.sleep(0.5))
    assert facts["client"] == list(CLIENT)


@pytest.mark.parametrize("cls", [ProxyTLSPoolServer, ProxyMuxTLSServer], ids=lambda c: c.__name__)
def test_a_header_then_silence_holds_no_worker_and_times_out_as_tls(
    cls: type, server_context: ssl.SSLContext, client_context: ssl.SSLContext,  # noqa: F811
) -> None:
    reached_the_handshake: list[Any] = []

    class Server(cls):  # type: ignore[valid-type, misc]
        handshake_timeout = 0.4
        max_workers = 2

        def handshake_failed(self, request: Any, client_address: Any, exc: Exception) -> None:
            reached_the_handshake.append(client_address)
            super().handshake_failed(request, client_address, exc)

    handler = MuxTLSEcho if cls is ProxyMuxTLSServer else TLSEcho
    server = Server(("127.0.0.1", 0), handler, context=server_context)
    silent = []
    with serving(server):
        tls_ask(server.server_address, client_context, HEADERS["v1"])  # the loop is serving
        try:
            for _ in range(5):  # more than the workers
                silent.append(connect(server.server_address))
                silent[-1].sendall(HEADERS["v2"])
            loop_has_turned(server)  # all five are held, their headers taken
            facts, _ = tls_ask(server.server_address, client_context, HEADERS["v1"])
            assert facts["client"] == list(CLIENT)
            for client in silent:
                assert closed_without_reply(client)
        finally:
            for client in silent:
                client.close()
    assert server.proxy_stats.accepted == 7
    assert server.tls_stats.timed_out == 5 and server.tls_stats.completed == 2
    # They timed out waiting in the loop: none got as far as a handshake (a worker).
    assert reached_the_handshake == []
    assert server._proxied == {}


def test_shutdown_closes_connections_still_waiting_for_their_header() -> None:
    server = make(ours.ThreadPoolTCPServer)(("127.0.0.1", 0), Echo)
    with connect(server.server_address) as waiting:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            ask(server.server_address, HEADERS["v2"])  # the loop is serving
            waiting.sendall(b"PROXY TCP4 ")
            loop_has_turned(server)
            assert server._proxied  # held, its partial header taken
        finally:
            server.shutdown()
            thread.join(WAIT)
            server.server_close()
        assert closed_without_reply(waiting)
    assert server._proxied == {}


def test_a_long_v2_header_is_read_whole() -> None:
    """A header past the 536 bytes first peeked at: its TLVs (about 60 KiB) all arrive."""
    big = [(0xE0, b"tenant-7"), (0xE1, b"x" * 60000)]
    server = make(ours.ThreadingTCPServer)(("127.0.0.1", 0), Echo)
    with serving(server):
        facts = ask(server.server_address, encode_v2(CLIENT, SERVER, tlvs=big, crc=True))
    assert facts["client"] == list(CLIENT) and facts["tlv"] == "tenant-7"


def test_a_unix_socket_server_behind_a_local_proxy(tmp_path: Any) -> None:
    """Unix-socket peers pass the allow-list (the socket file's permissions guard them)."""
    path = str(tmp_path / "app.sock")
    server = make(ours.ThreadingUnixStreamServer)(path, Echo)
    with serving(server), socket.socket(socket.AF_UNIX) as client:
        client.settimeout(WAIT)
        client.connect(path)
        client.sendall(HEADERS["v2"] + b"hello\n")
        reply = recv_until_eof(client)
    facts = json.loads(reply.partition(b"\n")[0])
    assert facts["client"] == list(CLIENT) and facts["peer"] == ""
    assert server.verified == [CLIENT]


def test_a_default_socket_timeout_never_makes_the_loop_wait(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext,  # noqa: F811
) -> None:
    """With ``socket.setdefaulttimeout()``, accepted sockets are in timeout mode.

    Python then waits for readiness inside ``recv()``, up to the timeout,
    whatever its flags (MSG_DONTWAIT included): the stage's peek at a
    client that sent its header and nothing more would hold the loop.
    """
    class Server(ProxyTLSPoolServer):
        handshake_timeout = WAIT

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(WAIT)
    try:
        server = Server(("127.0.0.1", 0), TLSEcho, context=server_context)
        with serving(server), connect(server.server_address) as quiet:
            tls_ask(server.server_address, client_context, HEADERS["v1"])  # the loop is serving
            quiet.sendall(HEADERS["v2"])  # and no ClientHello after it
            start = time.monotonic()
            facts, _ = tls_ask(server.server_address, client_context, HEADERS["v1"])
            elapsed = time.monotonic() - start
    finally:
        socket.setdefaulttimeout(previous)
    assert facts["client"] == list(CLIENT)
    assert elapsed < WAIT / 2


@pytest.mark.parametrize("model", [ours.ThreadingTCPServer, ours.MultiplexingTCPServer],
                         ids=lambda m: m.__name__)
def test_hooks_before_the_stage_see_each_connection_once_with_the_client(model: type) -> None:
    """A mixin before this one in the bases (``PreforkMixIn`` counts ``process_request``
    calls for ``max_requests``) sees one call per connection served, with the client's
    address, and none for a connection refused."""
    seen: list[Any] = []

    class Counting:
        def process_request(self, request: Any, client_address: Any) -> None:
            seen.append(client_address)
            super().process_request(request, client_address)  # type: ignore[misc]

    class Server(Counting, make(model)):  # type: ignore[misc]
        pass

    server = Server(("127.0.0.1", 0), handler_for(model))
    with serving(server), connect(server.server_address) as refused:
        refused.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert closed_without_reply(refused)
        assert ask(server.server_address, HEADERS["v1"])["client"] == list(CLIENT)
    assert seen == [CLIENT]
