"""Programs written for stdlib socketserver, run unchanged on our classes.

Issue 2, item 2 (last point).  http.server, xmlrpc.server, wsgiref and
logging.config build their servers on stdlib's classes.  Each test below
builds the same server on ours -- the few lines those modules add on top of
``TCPServer`` are reproduced, or their functions borrowed unchanged -- and
serves the module's own request handler to a real client: urllib, curl,
http.client, xmlrpc.client, a raw socket.

The handlers themselves still derive from stdlib's ``StreamRequestHandler``
(that is what "unchanged" means); what runs them here is our server: the
loop, the pipeline, the threads, shutdown and close.
"""

from __future__ import annotations

import functools
import http.client
import http.server
import json
import logging
import logging.config
import shutil
import socket
import socketserver as stdlib
import struct
import subprocess
import urllib.error
import urllib.request
import xmlrpc.client
import xmlrpc.server
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from support import WAIT, Resources, connect, serving

import minisocketserver as ours

pytestmark = pytest.mark.timeout(30)

# urllib would honour *_proxy variables from the environment; these
# requests must go straight to 127.0.0.1.
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class HTTPServer(ours.TCPServer):
    """``http.server.HTTPServer``, on our ``TCPServer``: same attributes, same bind."""

    allow_reuse_address = True

    def server_bind(self) -> None:
        super().server_bind()
        host, port = self.server_address[:2]
        self.server_name = socket.getfqdn(host)
        self.server_port = port


class ThreadingHTTPServer(ours.ThreadingMixIn, HTTPServer):
    """``http.server.ThreadingHTTPServer``, on ours."""

    daemon_threads = True


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "hello.txt").write_bytes("hello, 好\n".encode())
    (tmp_path / "sub").mkdir()
    return tmp_path


def file_handler(root: Path, protocol: str = "HTTP/1.0") -> Any:
    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = protocol

    return functools.partial(Handler, directory=str(root))


@pytest.mark.parametrize("cls", [HTTPServer, ThreadingHTTPServer], ids=lambda c: c.__name__)
def test_http_server_serves_files_to_urllib(cls: type, site: Path, no_leaks: Resources) -> None:
    with serving(cls(("127.0.0.1", 0), file_handler(site))) as server:
        assert server.server_port == server.server_address[1]
        base = f"http://127.0.0.1:{server.server_port}"
        with direct.open(f"{base}/hello.txt", timeout=WAIT) as response:
            assert response.status == 200
            assert response.read() == "hello, 好\n".encode()
        with direct.open(f"{base}/", timeout=WAIT) as response:
            listing = response.read().decode()
        assert "hello.txt" in listing and "sub/" in listing
        with pytest.raises(urllib.error.HTTPError) as missing:
            direct.open(f"{base}/missing", timeout=WAIT)
        assert missing.value.code == 404
        missing.value.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_http_server_serves_files_to_curl(site: Path, no_leaks: Resources) -> None:
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), file_handler(site))) as server:
        url = f"http://127.0.0.1:{server.server_port}/hello.txt"
        done = subprocess.run(
            ["curl", "--silent", "--show-error", "--noproxy", "*", "--max-time", "10",
             "--include", url],
            capture_output=True, timeout=WAIT, check=True,
        )  # fmt: skip
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert body == "hello, 好\n".encode()


def test_http_keep_alive_serves_several_requests_on_one_connection(
    site: Path, no_leaks: Resources
) -> None:
    """HTTP/1.1: one handler reads request after request from the same rfile."""
    handler = file_handler(site, protocol="HTTP/1.1")
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=WAIT)
        try:
            for _ in range(3):
                connection.request("GET", "/hello.txt")
                response = connection.getresponse()
                assert response.status == 200
                assert response.read() == "hello, 好\n".encode()
            connection.request("HEAD", "/hello.txt")
            response = connection.getresponse()
            assert response.getheader("Content-Length") == str(len("hello, 好\n".encode()))
            response.read()
        finally:
            connection.close()


class XMLRPCServer(ours.ThreadingTCPServer, xmlrpc.server.SimpleXMLRPCDispatcher):
    """``xmlrpc.server.SimpleXMLRPCServer``, on ours: the same three attributes."""

    allow_reuse_address = True
    _send_traceback_header = False

    def __init__(self, addr: Any, logRequests: bool = True, allow_none: bool = False) -> None:
        self.logRequests = logRequests
        xmlrpc.server.SimpleXMLRPCDispatcher.__init__(self, allow_none, None, False)
        ours.ThreadingTCPServer.__init__(self, addr, xmlrpc.server.SimpleXMLRPCRequestHandler)


def test_xmlrpc_server_answers_xmlrpc_client(no_leaks: Resources) -> None:
    def divide(a: int, b: int) -> float:
        return a / b

    with serving(XMLRPCServer(("127.0.0.1", 0), logRequests=False)) as server:
        server.register_function(pow)
        server.register_function(divide)
        server.register_introspection_functions()
        server.register_multicall_functions()
        url = f"http://127.0.0.1:{server.server_address[1]}/RPC2"
        with xmlrpc.client.ServerProxy(url) as proxy:
            assert proxy.pow(2, 10) == 1024
            assert proxy.divide(7, 2) == 3.5
            assert "divide" in proxy.system.listMethods()
            with pytest.raises(xmlrpc.client.Fault, match="ZeroDivisionError"):
                proxy.divide(1, 0)
            multi = xmlrpc.client.MultiCall(proxy)
            multi.pow(3, 3)
            multi.divide(9, 3)
            assert list(multi()) == [27, 3.0]


class OurWSGIServer(HTTPServer):
    """``wsgiref.simple_server.WSGIServer``, on ours, with its methods as they are."""

    application = None
    setup_environ = WSGIServer.setup_environ
    get_app = WSGIServer.get_app
    set_app = WSGIServer.set_app

    def server_bind(self) -> None:
        super().server_bind()
        self.setup_environ()


def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = json.dumps({
        "method": environ["REQUEST_METHOD"],
        "path": environ["PATH_INFO"],
        "query": environ["QUERY_STRING"],
        "posted": environ["wsgi.input"].read(size).decode(),
        "server_port": environ["SERVER_PORT"],
    }).encode()  # fmt: skip
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class QuietWSGIRequestHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_wsgiref_make_server_on_our_server_class(no_leaks: Resources) -> None:
    server = make_server(
        "127.0.0.1", 0, wsgi_app, server_class=OurWSGIServer,
        handler_class=QuietWSGIRequestHandler,
    )  # fmt: skip
    with serving(server):
        port = server.server_address[1]
        base = f"http://127.0.0.1:{port}"
        with direct.open(f"{base}/items/7?full=1", timeout=WAIT) as response:
            got = json.loads(response.read())
        assert got == {
            "method": "GET", "path": "/items/7", "query": "full=1", "posted": "",
            "server_port": str(port),
        }  # fmt: skip
        with direct.open(f"{base}/submit", data=b"a=1&b=2", timeout=WAIT) as response:
            got = json.loads(response.read())
        assert (got["method"], got["posted"]) == ("POST", "a=1&b=2")


class ConfigReceiver(ours.ThreadingTCPServer):
    """logging.config's ConfigSocketReceiver, on ours: the attributes its handler reads.

    ``logging.config.listen()`` defines its receiver class inside the
    function, on stdlib's ``ThreadingTCPServer`` imported into
    logging.config's namespace, so it can only be pointed at ours by
    monkeypatching that module.  Its request handler, though, is reachable
    unchanged: ``listen()`` returns a thread whose ``hdlr`` attribute is the
    handler class and ``verify`` the caller's verifier.  This server gives
    that handler what it reads from its server: ``verify`` and ``ready``.
    """

    allow_reuse_address = True

    def __init__(self, handler: Any, ready: Any, verify: Any) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.ready = ready
        self.verify = verify


def send_config(address: Any, payload: bytes) -> None:
    """What a logging-config client sends: a 4-byte big-endian length, then the config."""
    with connect(address) as client:
        client.sendall(struct.pack(">L", len(payload)) + payload)


@pytest.mark.parametrize("verified", [True, False])
def test_logging_config_listener_handler_on_our_server(
    verified: bool, no_leaks: Resources
) -> None:
    name = "minisocketserver.tests.listen"
    logger = logging.getLogger(name)
    logger.setLevel(logging.WARNING)
    checked = []

    def verify(data: bytes) -> bytes | None:
        checked.append(data)
        return data if verified else None

    listener = logging.config.listen(0, verify=verify)  # a thread, never started here
    # "incremental": only this logger's level changes; handlers stay as they are.
    config = {"version": 1, "incremental": True, "loggers": {name: {"level": "DEBUG"}}}
    payload = json.dumps(config).encode()
    try:
        receiver = ConfigReceiver(listener.hdlr, listener.ready, listener.verify)
        with serving(receiver):
            send_config(receiver.server_address, payload)
            # The handler sets ready once it has applied (or discarded) the config.
            assert listener.ready.wait(WAIT)
        assert checked == [payload]
        assert logger.level == (logging.DEBUG if verified else logging.WARNING)
    finally:
        logger.setLevel(logging.NOTSET)


def program_servers() -> list[Any]:
    """One stdlib-based server of each program, built the program's own way."""
    listener = logging.config.listen(0)
    return [
        http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler),
        xmlrpc.server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False),
        make_server("127.0.0.1", 0, wsgi_app),
        listener.rcvr(host="127.0.0.1", port=0, handler=listener.hdlr, ready=None, verify=None),
    ]


@pytest.mark.parametrize("model", ["sync", "threading", "forking"])
def test_our_state_uses_no_attribute_name_those_programs_set(
    model: str, no_leaks: Resources
) -> None:
    with stdlib.TCPServer(("127.0.0.1", 0), stdlib.BaseRequestHandler) as plain:
        baseline = set(vars(plain))
    program_names: set[str] = set()
    for server in program_servers():
        with server:
            program_names |= set(vars(server)) - baseline
    assert {"server_name", "logRequests", "base_environ", "verify"} <= program_names

    cls = {"sync": ours.TCPServer, "threading": ours.ThreadingTCPServer,
           "forking": ours.ForkingTCPServer}[model]  # fmt: skip

    class Echo(ours.StreamRequestHandler):
        def handle(self) -> None:
            self.wfile.write(self.rfile.read())

    # Our state as it is after a request has been served, and after closing.
    with serving(cls(("127.0.0.1", 0), Echo)) as server, connect(server.server_address) as client:
        client.sendall(b"x")
        client.shutdown(socket.SHUT_WR)
        assert client.recv(10) == b"x"
        ours_names = set(vars(server))
    ours_names |= set(vars(server))
    assert not ours_names & program_names
