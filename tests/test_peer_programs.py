"""Peer programs: how real projects use stdlib socketserver, run on ours and on stdlib.

Issue 10 ("Done when").  Werkzeug's dev server, pytest-httpserver,
prometheus_client's exposition server, dnslib and sphinx's linkcheck tests
are all built on stdlib ``socketserver``.  None of them is installed here:
tests/peer_programs_support.py reproduces, in a few lines each, the *pattern*
by which each calls socketserver (the facts, not their code).  Each test runs
the same program twice in child processes, once with stdlib's
``socketserver`` and once with ``minisocketserver`` installed as
``sys.modules["socketserver"]`` before ``http.server``, ``wsgiref`` or
``xmlrpc`` is imported, talks to both from this process with stdlib clients,
and compares what a peer would observe.

==========================  ==========================================  =========================
test                        stands for                                  compared
==========================  ==========================================  =========================
keepalive_client_idle       sphinx linkcheck's test server:             responses on one kept-
                            ``ThreadingHTTPServer`` (daemon threads),   alive connection;
                            HTTP/1.1 clients, ``shutdown()`` +          ``shutdown()`` and
                            ``server_close()`` while one idles          ``server_close()`` < 2 s
dev_server_family           werkzeug's ``BaseWSGIServer`` (so also      address family, status,
                            pytest-httpserver): family set per          headers, the WSGI environ
                            instance, ``bind_and_activate=False`` then  the app saw, the body
                            bind/activate by hand, or an inherited fd
dns_udp_and_tcp             dnslib's ``DNSServer``: threading UDP and   replies, byte for byte;
                            TCP servers on one port, one handler        one port for both
                            switching on ``server.socket_type``, TCP
                            messages length-prefixed
prometheus_exposition       prometheus_client's ``start_http_server``:  two scrapes (plain and
                            ``make_server`` with a threading            gzip): status, headers
                            ``WSGIServer``, family set on the class,    but Date, body; the exit
                            served on a daemon thread, never closed     of the process
tls_listener                sphinx's HTTPS test server (listener        the raw response but
                            replaced after construction) and 3.14's     Date, TLS version; stop
                            ``HTTPSServer`` (wrapped in                 times
                            ``server_activate()``)
xmlrpc_calls                ``xmlrpc.server`` as programs use it,       results and faults of
                            synchronous and with ``ThreadingMixIn``     plain calls, multicall,
                                                                        introspection
==========================  ==========================================  =========================

Every program prints its port once listening (the tests never sleep),
every wait is bounded, and every child is reaped by PID.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from support import WAIT, Resources, recv_exactly, recv_until_eof

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "peer_programs_support.py"
IMPLS = ("stdlib", "ours")

#: What "promptly" means for shutdown() and server_close(): stdlib returns in
#: milliseconds here; 2 s leaves room for a loaded CI core, not for a wait on
#: a client.
PROMPT = 2.0

# urllib would honour *_proxy variables from the environment; these
# requests must go straight to 127.0.0.1.
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Peer:
    """A peer program running in a child process, and its line protocol.

    Resource handling: ``peer()`` owns both the child and its stderr file:
    it reaps the child (killed by PID if it outlives its bound) and closes
    the pipes and the file, whatever the test did.
    """

    def __init__(self, impl: str, program: str, args: tuple[str, ...], stderr: IO[bytes]) -> None:
        self.impl = impl
        # stderr to a file: a program that fails loudly must not block on a
        # full pipe nobody reads.
        self.stderr = stderr
        self.proc = subprocess.Popen(
            [sys.executable, str(PROGRAMS), "--impl", impl, program, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            bufsize=0,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.pending = b""
        self.ready: dict[str, Any] = {}

    def line(self, timeout: float) -> dict[str, Any] | None:
        """The program's next JSON line, or None if none comes within ``timeout``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                self.proc.wait(WAIT)
                raise AssertionError(f"{self} ended early:\n{self.errors()}")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        result: dict[str, Any] = json.loads(line)
        return result

    def expect(self, what: str) -> dict[str, Any]:
        """The next line, which must come within the test bound."""
        result = self.line(WAIT)
        assert result is not None, f"{self}: no {what} within {WAIT} s:\n{self.errors()}"
        return result

    def stop(self) -> dict[str, Any]:
        """Ask the program to stop as its project does; what it measured."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stop\n")
        return self.expect("report after stop")

    @property
    def port(self) -> int:
        port: int = self.ready["servers"][0]["address"][1]
        return port

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def __str__(self) -> str:
        return f"peer program on {self.impl} (pid {self.proc.pid})"


@contextlib.contextmanager
def peer(impl: str, program: str, *args: str) -> Iterator[Peer]:
    """Run a program on ``impl``; yield it listening; reap it, which must exit 0."""
    with tempfile.TemporaryFile() as stderr:
        run = Peer(impl, program, args, stderr)
        try:
            run.ready = run.expect("ready line")
            expected = "minisocketserver." if impl == "ours" else "socketserver."
            for server in run.ready["servers"]:
                # Otherwise the comparison would be stdlib against itself.
                assert any(name.startswith(expected) for name in server["mro"]), server["mro"]
            yield run
            assert run.proc.stdin is not None
            run.proc.stdin.close()
            try:
                code = run.proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{run} did not exit within {WAIT} s") from None
            assert code == 0, f"{run} exited {code}:\n{run.errors()}"
        finally:
            # Whatever happened, the child is gone and its pipes are closed.
            if run.proc.poll() is None:
                run.proc.kill()
            run.proc.wait(WAIT)
            for pipe in (run.proc.stdin, run.proc.stdout):
                if pipe is not None:
                    pipe.close()


def both(observe: Callable[[str], Any]) -> dict[str, Any]:
    """``observe`` on each implementation; they must agree."""
    seen = {impl: observe(impl) for impl in IMPLS}
    assert seen["ours"] == seen["stdlib"]
    return seen


def without_date(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Response headers but ``Date``, the one that differs between two runs."""
    return [(name, value) for name, value in headers if name.lower() != "date"]


def test_keepalive_client_idle(no_leaks: Resources) -> None:
    """sphinx linkcheck: stop the server while a keep-alive client sits idle."""

    def observe(impl: str) -> Any:
        with peer(impl, "keepalive") as run:
            assert run.ready["daemon_threads"] is True
            conn = http.client.HTTPConnection("127.0.0.1", run.port, timeout=WAIT)
            try:
                responses = []
                first = None
                for method, path in (("HEAD", "/a"), ("GET", "/a"), ("GET", "/b")):
                    conn.request(method, path)
                    response = conn.getresponse()
                    responses.append(
                        (response.status, without_date(response.getheaders()), response.read())
                    )
                    if method == "HEAD":
                        first = conn.sock
                # All three on one connection: the client now idles on it.
                assert conn.sock is first
                assert run.proc.stdin is not None
                run.proc.stdin.write(b"stop\n")
                # Wait only a little past PROMPT: a server_close() that waits
                # for this client would never return, as the client leaves
                # only once this wait is over.
                report = run.line(2 * PROMPT)
            finally:
                conn.close()
            if report is None:
                late = run.expect("report after the client left")
                pytest.fail(
                    f"{impl}: server_close() returned only when the idle keep-alive client "
                    f"left, after {late['close_s']} s (shutdown() took {late['shutdown_s']} s)"
                )
            assert report["shutdown_s"] < PROMPT, report
            assert report["close_s"] < PROMPT, report
            assert report["loop_ended"], report
        return responses

    seen = both(observe)
    assert [status for status, _, _ in seen["ours"]] == [200, 200, 200]


def ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@pytest.mark.parametrize(
    ("host", "how"),
    [
        pytest.param(
            "::1",
            "bind",
            id="ipv6-bind-by-hand",
            marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback (::1)"),
        ),
        pytest.param("127.0.0.1", "fd", id="inherited-listener"),
    ],
)
def test_dev_server_family(no_leaks: Resources, host: str, how: str) -> None:
    """werkzeug: a per-instance family, deferred bind, or a listener from a parent."""

    def observe(impl: str) -> Any:
        with peer(impl, "devserver", host, how) as run:
            (server,) = run.ready["servers"]
            conn = http.client.HTTPConnection(host, run.port, timeout=WAIT)
            try:
                exchanges = []
                for method, path, body in (
                    ("GET", "/hello?x=1", None),
                    ("POST", "/echo", b"payload=\xc3\xa9"),
                ):
                    conn.request(method, path, body=body)
                    response = conn.getresponse()
                    exchanges.append(
                        (
                            response.status,
                            without_date(response.getheaders()),
                            json.loads(response.read()),
                        )
                    )
                    # WSGIRequestHandler speaks HTTP/1.0: one request a connection.
                    conn.close()
            finally:
                conn.close()
            report = run.stop()
            assert report["shutdown_s"] < PROMPT and report["close_s"] < PROMPT, report
            return server["family"], server["type"], len(server["address"]), exchanges

    seen = both(observe)
    family, _, address_size, exchanges = seen["ours"]
    assert family == (socket.AF_INET6 if ":" in host else socket.AF_INET)
    assert address_size == (4 if ":" in host else 2)
    assert exchanges[1][2]["body"] == "payload=é"


def test_dns_udp_and_tcp(no_leaks: Resources) -> None:
    """dnslib: one handler on a UDP and a TCP server sharing a port number."""
    queries = [
        b"\x12\x34" + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00",
        b"\xab\xcd" + b"q" * 1200,
        # Longer than one recv(8192): the TCP handler must loop on its prefix.
        b"\x00\x01" + bytes(range(97, 123)) * 800,
    ]

    def observe(impl: str) -> Any:
        with peer(impl, "dns") as run:
            udp_server, tcp_server = run.ready["servers"]
            port = udp_server["address"][1]
            assert tcp_server["address"][1] == port
            assert (udp_server["type"], tcp_server["type"]) == (
                socket.SOCK_DGRAM,
                socket.SOCK_STREAM,
            )
            replies = []
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.settimeout(WAIT)
                for query in queries[:2]:
                    udp.sendto(query, ("127.0.0.1", port))
                    replies.append(udp.recv(65536))
            for query in queries:
                with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as tcp:
                    framed = struct.pack("!H", len(query)) + query
                    # The prefix and a few bytes first, the rest after.
                    tcp.sendall(framed[:5])
                    tcp.sendall(framed[5:])
                    (length,) = struct.unpack("!H", recv_exactly(tcp, 2))
                    replies.append(recv_exactly(tcp, length))
                    assert recv_until_eof(tcp) == b"", "one message per connection"
            report = run.stop()
            assert report["shutdown_s"] < PROMPT and report["loops_ended"], report
            return replies

    seen = both(observe)
    assert seen["ours"][0] == queries[0][:2] + b"\x81\x80" + queries[0][2:].upper() + (
        b"|udp|127.0.0.1"
    )
    assert seen["ours"][-1].endswith(b"|tcp|127.0.0.1")


def test_prometheus_exposition(no_leaks: Resources) -> None:
    """prometheus_client: scrape a threading WSGI server that is never closed."""

    def observe(impl: str) -> Any:
        with peer(impl, "exposition") as run:
            url = f"http://127.0.0.1:{run.port}/metrics"
            scrapes = []
            for encoding in ("identity", "gzip"):
                request = urllib.request.Request(url, headers={"Accept-Encoding": encoding})
                with direct.open(request, timeout=WAIT) as response:
                    scrapes.append(
                        (response.status, without_date(response.getheaders()), response.read())
                    )
            report = run.stop()
            # The process must still exit (code 0, checked by peer()) with
            # its daemon serving thread running.
            return run.ready["servers"][0]["family"], scrapes, report

    seen = both(observe)
    family, scrapes, report = seen["ours"]
    assert family == socket.AF_INET
    assert report == {"scrapes": 2}
    assert scrapes[0][2].endswith(b"scrapes_total 1.0\n")
    assert gzip.decompress(scrapes[1][2]).endswith(b"scrapes_total 2.0\n")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate and key for ``localhost``, in one PEM file."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not found: cannot make a certificate for the TLS listener")
    pem = tmp_path_factory.mktemp("tls") / "localhost.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
            "-keyout", str(pem), "-out", str(pem),
        ],
        check=True,
        capture_output=True,
        timeout=WAIT,
    )
    return pem


@pytest.mark.parametrize("where", ["activate", "replace"])
def test_tls_listener(no_leaks: Resources, certificate: Path, where: str) -> None:
    """sphinx's HTTPS test server and 3.14's HTTPSServer: a well-behaved TLS client."""
    context = ssl.create_default_context(cafile=str(certificate))

    def observe(impl: str) -> Any:
        with peer(impl, "tls", where, str(certificate)) as run:
            assert run.ready["listener"] == "SSLSocket"
            raw = socket.create_connection(("127.0.0.1", run.port), timeout=WAIT)
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /page HTTP/1.0\r\nHost: localhost\r\n\r\n")
                response = recv_until_eof(tls)
                version = tls.version()
            report = run.stop()
            assert report["shutdown_s"] < PROMPT and report["close_s"] < PROMPT, report
            head, _, body = response.partition(b"\r\n\r\n")
            lines = [line for line in head.split(b"\r\n") if not line.startswith(b"Date:")]
            return version, lines, body

    seen = both(observe)
    _, lines, body = seen["ours"]
    assert lines[0] == b"HTTP/1.0 200 OK"
    assert body == b"/page over SSLSocket\n"


@pytest.mark.parametrize("variant", ["simple", "threading"])
def test_xmlrpc_calls(no_leaks: Resources, variant: str) -> None:
    """xmlrpc.server: calls, a fault, an unknown method, multicall, introspection."""

    def outcome(call: Callable[[], Any]) -> Any:
        try:
            return ["result", call()]
        except xmlrpc.client.Fault as fault:
            return ["fault", fault.faultCode, fault.faultString]

    def observe(impl: str) -> Any:
        with peer(impl, "xmlrpc", variant) as run:
            url = f"http://127.0.0.1:{run.port}/RPC2"
            with xmlrpc.client.ServerProxy(url, allow_none=True) as proxy:
                multi = xmlrpc.client.MultiCall(proxy)
                multi.add(2, 3)
                multi.fail("in a multicall")
                multi.missing()
                outcomes = [
                    outcome(lambda: proxy.add(2, 3)),
                    outcome(lambda: proxy.echo({"a": [1, 2.5, None, "é"], "b": True})),
                    outcome(lambda: proxy.fail("no")),
                    outcome(lambda: proxy.missing()),
                    outcome(lambda: sorted(proxy.system.listMethods())),
                    outcome(lambda: proxy.system.methodHelp("add")),
                ]
                results = multi()
                # Each result of a multicall raises its own fault when read.
                outcomes.append([outcome(lambda i=i: results[i]) for i in range(3)])
            report = run.stop()
            assert report["shutdown_s"] < PROMPT and report["close_s"] < PROMPT, report
            return outcomes

    seen = both(observe)
    assert seen["ours"][0] == ["result", 5]
    assert seen["ours"][2] == ["fault", 1, "<class 'ValueError'>:no"]
