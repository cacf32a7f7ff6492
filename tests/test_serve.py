"""``python -m minisocketserver serve`` (issue 13, item 3), run as the real command.

Each test starts the command as a child process on port 0 (or a path, an
inherited socket, systemd's activator), reads the line ``serve: serving ...
on ADDRESS, ...`` from its stderr to learn where it listens, talks to it
with this package's clients, ``http.client`` or ``curl``, and stops it by
pid.  The handlers and WSGI applications are in tests/serve_apps.py.  Every
wait is a read from a pipe or a socket, bounded by support.WAIT.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support import WAIT, Resources, connect, recv_until_eof
from test_activation import HAS_IPV6, LineReader, _need_activate, _unused_port

TESTS = Path(__file__).parent
SERVE = [sys.executable, "-m", "minisocketserver", "serve"]
PROG = "python -m minisocketserver serve"
CURL = shutil.which("curl")


def _environ(**extra: str) -> dict[str, str]:
    """Ours, minus the activation variables, with tests/ on the import path (serve_apps)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])])
    environ.update(extra)
    return environ


@dataclass
class Served:
    """A running ``serve`` command: its process, its stderr, where it listens."""

    proc: subprocess.Popen[bytes]
    stderr: LineReader
    addresses: list[str] = field(default_factory=list)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """Read stderr lines until one matches ``pattern`` (bounded)."""
        deadline = time.monotonic() + WAIT
        while True:
            match = re.search(pattern, self.stderr.line(deadline))
            if match:
                return match

    def wait_for_eof(self) -> None:
        """Read stderr until every process that holds it has closed it (bounded)."""
        deadline = time.monotonic() + WAIT
        with contextlib.suppress(EOFError):
            while True:
                try:
                    self.stderr.line(deadline)
                except AssertionError as error:
                    if "the pipe closed" not in str(error):
                        raise
                    raise EOFError from None

    def inet(self, index: int = 0) -> tuple[str, int]:
        host, _, port = self.addresses[index].rpartition(":")
        return host.strip("[]"), int(port)

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        """Send ``signum``; the exit status and the rest of stderr."""
        self.proc.send_signal(signum)
        _, err = self.proc.communicate(timeout=WAIT)
        return self.proc.returncode, "\n".join(self.stderr.seen) + "\n" + err.decode()


@contextlib.contextmanager
def serve(*args: str, pass_fds: tuple[int, ...] = (), prefix: tuple[str, ...] = (),
          **env: str) -> Iterator[Served]:
    """Start ``serve args...``; yield it once it says where it serves; kill it if still up."""
    proc = subprocess.Popen(
        [*prefix, *SERVE, *args], pass_fds=pass_fds, env=_environ(**env),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        served = Served(proc, LineReader(proc.stderr))
        if not prefix:  # systemd's activator starts the command on the first client
            served.addresses = served.wait_for(r"serve: serving .* on (.*)$")[1].split(", ")
        yield served
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)


def ask(address: Any, line: bytes = b"ping\n", family: int = socket.AF_INET) -> str:
    """One line to a ``Who`` server, then EOF; its answer."""
    with connect(address, family) as client:
        client.sendall(line)
        client.shutdown(socket.SHUT_WR)
        return recv_until_eof(client).decode()


def get(port: int, path: str = "/", host: str = "127.0.0.1",
        context: ssl.SSLContext | None = None) -> tuple[http.client.HTTPResponse, dict[str, Any],
                                                        int]:
    """GET ``path`` with http.client: the response, its JSON body, the client's own port."""
    if context is None:
        conn: http.client.HTTPConnection = http.client.HTTPConnection(host, port, timeout=WAIT)
    else:
        conn = http.client.HTTPSConnection(host, port, timeout=WAIT, context=context)
    with contextlib.closing(conn):
        conn.connect()
        assert conn.sock is not None
        local_port = conn.sock.getsockname()[1]
        conn.request("GET", path, headers={"User-Agent": "test_serve"})
        response = conn.getresponse()
        return response, json.loads(response.read()), local_port


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    if CURL is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is missing: CI installs it")
        pytest.skip("curl is not installed")
    return subprocess.run([CURL, "--silent", "--show-error", "--max-time", str(WAIT), *args],
                          capture_output=True, text=True, timeout=WAIT + 5)


def assert_clean_exit(status: int, err: str) -> None:
    assert status == 0, err
    assert "Traceback" not in err, err
    assert "serve: stopped" in err, err


# -- the models ------------------------------------------------------------------


@pytest.mark.parametrize("model", ["sync", "threading", "threadpool", "forking", "multiplexing"])
def test_each_model_serves_the_handler(model: str, no_leaks: Resources) -> None:
    handler = "serve_apps:MultiplexedWho" if model == "multiplexing" else "serve_apps:Who"
    with serve(handler, "--model", model, "--bind", "127.0.0.1:0") as served:
        answer = ask(served.inet())
        status, err = served.stop()
    pid, host, line = answer.split()
    assert (host, line) == ("127.0.0.1", "ping")
    # The forking model answers from a child; the others from the command itself.
    assert (int(pid) == served.proc.pid) == (model != "forking")
    assert f"serving {handler} ({model}) on 127.0.0.1:" in err
    assert_clean_exit(status, err)


def test_several_binds_are_served_by_one_process(tmp_path: Path) -> None:
    binds = ["127.0.0.1:0", f"unix:{tmp_path / 'who.sock'}", *(["[::1]:0"] if HAS_IPV6 else [])]
    args = [arg for bind in binds for arg in ("--bind", bind)]
    with serve("serve_apps:Who", *args) as served:
        answers = [ask(served.inet(0)), ask(str(tmp_path / "who.sock"), family=socket.AF_UNIX)]
        if HAS_IPV6:
            answers.append(ask(served.inet(2), family=socket.AF_INET6))
        status, err = served.stop()
    assert served.addresses[1] == f"unix:{tmp_path / 'who.sock'}"
    assert [answer.split()[0] for answer in answers] == [str(served.proc.pid)] * len(binds)
    assert [answer.split()[1] for answer in answers] == ["127.0.0.1", "-", "::1"][:len(binds)]
    assert_clean_exit(status, err)


def test_server_class_of_the_user(no_leaks: Resources) -> None:
    with serve("serve_apps:Who", "--server", "serve_apps:Greeting", "--bind",
               "127.0.0.1:0") as served:
        answer = ask(served.inet())
        status, err = served.stop()
    assert answer.splitlines()[0] == "hello from Greeting"
    assert answer.splitlines()[1].endswith(" 127.0.0.1 ping")
    assert_clean_exit(status, err)


# -- WSGI ------------------------------------------------------------------------


def test_wsgi_by_http_client(no_leaks: Resources) -> None:
    with serve("--wsgi", "serve_apps:hello", "--bind", "127.0.0.1:0") as served:
        port = served.inet()[1]
        response, report, local_port = get(port, "/some/where?q=1")
        status, err = served.stop()
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("X-Served-By") == str(served.proc.pid)
    assert report["REMOTE_ADDR"] == "127.0.0.1"
    assert report["REMOTE_PORT"] == str(local_port)
    assert report["SERVER_PORT"] == str(port)
    assert (report["PATH_INFO"], report["QUERY_STRING"]) == ("/some/where", "q=1")
    assert report["HTTP_USER_AGENT"] == "test_serve"
    assert (report["wsgi.url_scheme"], report["wsgi.multithread"],
            report["wsgi.multiprocess"]) == ("http", True, False)
    # The server's own environment is not the request's (wsgiref copies it).
    assert "HOME" not in report and "PATH" not in report
    # wsgiref's access log, one line per request, on stderr.
    assert re.search(r'^127\.0\.0\.1 - - \[.*\] "GET /some/where\?q=1 HTTP/1.1" 200 ', err,
                     re.MULTILINE), err
    assert_clean_exit(status, err)


def test_wsgi_by_curl_forking() -> None:
    with serve("--wsgi", "serve_apps:hello", "--model", "forking",
               "--bind", "127.0.0.1:0") as served:
        result = curl("--include", f"http://127.0.0.1:{served.inet()[1]}/curl")
        status, err = served.stop()
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.partition("\n\n")  # text=True: \r\n is \n
    assert head.startswith("HTTP/1.0 200 OK"), head
    report = json.loads(body)
    assert report["PATH_INFO"] == "/curl"
    assert report["pid"] != served.proc.pid
    assert (report["wsgi.multithread"], report["wsgi.multiprocess"]) == (False, True)
    assert_clean_exit(status, err)


def test_wsgi_on_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "app.sock"
    # A stale socket file (a server killed without cleaning up) is replaced.
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))
    with serve("--wsgi", "serve_apps:hello", "--bind", f"unix:{path}") as served:
        result = curl("--unix-socket", str(path), "http://localhost/unix")
        status, err = served.stop()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["REMOTE_ADDR"], report["SERVER_NAME"], report["SERVER_PORT"]) == (
        "", "localhost", "80")
    assert "REMOTE_PORT" not in report
    assert_clean_exit(status, err)


# -- TLS -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (EC: made in milliseconds)."""
    directory = tmp_path_factory.mktemp("serve-tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=WAIT,
    )
    return cert, key


def test_tls_wsgi_with_curl(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    with serve("--wsgi", "serve_apps:hello", "--tls-cert", str(cert), "--tls-key", str(key),
               "--bind", "127.0.0.1:0") as served:
        port = served.inet()[1]
        result = curl("--cacert", str(cert), f"https://127.0.0.1:{port}/secret")
        plain = curl(f"http://127.0.0.1:{port}/secret")  # not TLS: refused, quietly
        status, err = served.stop()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["wsgi.url_scheme"], report["REMOTE_ADDR"], report["PATH_INFO"]) == (
        "https", "127.0.0.1", "/secret")
    assert plain.returncode != 0
    assert "(WSGI, threading, TLS)" in err
    assert_clean_exit(status, err)


@pytest.mark.parametrize(("handler", "args"), [
    ("serve_apps:MultiplexedWho", ["--model", "multiplexing"]),
    ("serve_apps:Who", ["--server", "serve_apps:Greeting"]),
])
def test_tls_handler(handler: str, args: list[str], certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    context = ssl.create_default_context(cafile=str(cert))
    # The certificate and key in one file: --tls-key is optional.
    both = cert.parent / "both.pem"
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    with serve(handler, *args, "--tls-cert", str(both), "--bind", "127.0.0.1:0") as served:
        with connect(served.inet()) as raw, context.wrap_socket(
                raw, server_hostname="localhost") as client:
            client.sendall(b"ping\n")
            answer = b""
            while not answer.endswith(b"ping\n"):
                chunk = client.recv(4096)
                assert chunk, answer
                answer += chunk
        status, err = served.stop()
    assert answer.decode().split()[-2:] == ["127.0.0.1", "ping"]
    assert_clean_exit(status, err)


# -- inherited sockets -----------------------------------------------------------


def test_fd_bind_serves_an_inherited_socket(no_leaks: Resources) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        fd = listener.fileno()
        address = listener.getsockname()
        with serve("serve_apps:Who", "--bind", f"fd:{fd}", pass_fds=(fd,)) as served:
            answer = ask(address)
            status, err = served.stop()
    assert served.addresses == ["{}:{}".format(*address)]
    assert answer.split()[0] == str(served.proc.pid)
    assert_clean_exit(status, err)


def test_systemd_bind_under_the_activator() -> None:
    activate = _need_activate()
    port = _unused_port([socket.AF_INET])
    prefix = (activate, "-l", f"127.0.0.1:{port}", "-E", f"PYTHONPATH={TESTS}")
    with serve("serve_apps:Who", "--model", "forking", "--bind", "systemd",
               prefix=prefix) as served:
        served.wait_for("^Listening on ")
        # The first client starts the command; it waits in the backlog meanwhile.
        answer = ask(("127.0.0.1", port))
        match = served.wait_for(r"serve: serving .* on (.*)$")
        status, err = served.stop()
    assert match[1] == f"127.0.0.1:{port}"
    assert answer.split()[1:] == ["127.0.0.1", "ping"]
    assert_clean_exit(status, err)


# -- stopping --------------------------------------------------------------------


@pytest.mark.parametrize("model", ["sync", "threading", "forking"])
def test_sigterm_lets_the_request_in_flight_finish(model: str) -> None:
    with serve("serve_apps:TwoStep", "--model", model, "--bind", "127.0.0.1:0") as served:
        with connect(served.inet()) as client:
            client.sendall(b"first\n")
            assert client.recv(100) == b"started\n"
            served.proc.send_signal(signal.SIGTERM)
            served.wait_for("serve: SIGTERM: no new connections")
            client.sendall(b"second\n")
            rest = recv_until_eof(client)
        status, err = served.stop()  # a second SIGTERM changes nothing
    assert rest == b"done\n"
    assert "cut" not in err
    assert_clean_exit(status, err)


def test_sigterm_cuts_what_outlives_the_graceful_timeout() -> None:
    with serve("serve_apps:TwoStep", "--graceful-timeout", "0.2",
               "--bind", "127.0.0.1:0") as served, connect(served.inet()) as client:
        client.sendall(b"first\n")
        assert client.recv(100) == b"started\n"
        status, err = served.stop()
        assert recv_until_eof(client) == b""
    assert "serve: 1 request cut, still running after 0.2 s" in err
    assert_clean_exit(status, err)


def test_sigint_stops_at_once_without_a_traceback() -> None:
    with serve("serve_apps:TwoStep", "--bind", "127.0.0.1:0") as served, connect(
            served.inet()) as client:
        client.sendall(b"first\n")
        assert client.recv(100) == b"started\n"
        status, err = served.stop(signal.SIGINT)
        assert recv_until_eof(client) == b""
    assert "serve: SIGINT: stopping now" in err
    assert "serve: 1 request cut" in err
    assert_clean_exit(status, err)


# -- errors: one line on stderr, before anything is bound ------------------------


def _fails(*args: str, status: int = 2) -> str:
    proc = subprocess.run([*SERVE, *args], env=_environ(), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=WAIT)
    err = proc.stderr.decode()
    assert (proc.returncode, proc.stdout, err.count("\n")) == (status, b"", 1), err
    assert err.startswith(f"{PROG}: error: "), err
    return err.strip().removeprefix(f"{PROG}: error: ")


@pytest.mark.parametrize(("args", "message"), [
    ([], "name a handler (MODULE:HANDLER) or an application (--wsgi MODULE:APP)"),
    (["serve_apps:Who", "--wsgi", "serve_apps:hello"], "not both"),
    (["no_such_module_here:Handler"],
     "cannot import 'no_such_module_here': ModuleNotFoundError"),
    (["serve_apps:Nope"], "no attribute 'Nope'"),
    (["serve_apps"], "expected MODULE:NAME"),
    (["serve_apps:NOT_A_CLASS"], "is not a request handler class"),
    (["serve_apps:Who", "--model", "multiplexing"], "use a MultiplexedRequestHandler"),
    (["serve_apps:MultiplexedWho"], "it needs --model multiplexing"),
    (["serve_apps:Who", "--model", "bogus"], "invalid choice: 'bogus'"),
    (["serve_apps:Who", "--model", "sync", "--server", "serve_apps:Greeting"],
     "not allowed with argument"),
    (["serve_apps:Who", "--server", "serve_apps:Who"], "is not a minisocketserver server"),
    (["--wsgi", "serve_apps:NOT_A_CLASS"], "is not callable"),
    (["--wsgi", "serve_apps:hello", "--model", "multiplexing"], "blocking handlers"),
    (["serve_apps:Who", "--bind", "nonsense"], "expected HOST:PORT"),
    (["serve_apps:Who", "--bind", "::1:80"], "goes in brackets: [::1]:80"),
    (["serve_apps:Who", "--bind", "127.0.0.1:99999"], "from 0 to 65535"),
    (["serve_apps:Who", "--bind", "fd:987"], "descriptor 987 is not open"),
    (["serve_apps:Who", "--bind", "systemd"], "no sockets passed (LISTEN_FDS unset)"),
    (["serve_apps:Who", "--workers", "0"], "--workers must be 1 or more"),
    (["serve_apps:Who", "--workers", "2", "--bind", "127.0.0.1:0", "--bind", "127.0.0.1:0"],
     "--workers serves one listener"),
    (["serve_apps:Who", "--max-requests", "5"], "add --workers N"),
    (["serve_apps:Who", "--proxy-allow", "10.0.0.0/8"], "--proxy-allow needs --proxy-protocol"),
    (["serve_apps:Who", "--proxy-protocol", "v1", "--proxy-allow", "10.0.0.1/8"],
     "has host bits set"),
    (["serve_apps:Who", "--tls-key", "key.pem"], "--tls-key needs --tls-cert"),
])
def test_bad_arguments_are_one_line_and_status_2(args: list[str], message: str) -> None:
    assert message in _fails(*args)


def test_an_address_in_use_is_one_line_and_status_1(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        message = _fails("serve_apps:Who", "--bind", f"127.0.0.1:{port}", status=1)
    assert message == f"--bind 127.0.0.1:{port}: cannot listen there: Address already in use"
    missing = tmp_path / "missing.pem"
    message = _fails("serve_apps:Who", "--tls-cert", str(missing), status=1)
    assert message.endswith("cannot load the certificate and key: No such file or directory")


def test_a_live_unix_socket_is_not_taken_over(tmp_path: Path) -> None:
    path = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        message = _fails("serve_apps:Who", "--bind", f"unix:{path}", status=1)
    assert message == f"--bind unix:{path}: a server is listening there already"


# -- pre-forked workers (prefork.py) ---------------------------------------------


def _worker_pids(served: Served, count: int) -> list[int]:
    """The pids of the first ``count`` "prefork: worker N started" lines."""
    return [int(served.wait_for(r"prefork: worker (\d+) started")[1]) for _ in range(count)]


def test_workers_serve_from_two_pids() -> None:
    with serve("serve_apps:Who", "--model", "sync", "--workers", "2",
               "--bind", "127.0.0.1:0") as served:
        workers = _worker_pids(served, 2)
        # A sync worker is busy for as long as its client keeps the
        # connection open: the second client can only be served by the other.
        with connect(served.inet()) as first, connect(served.inet()) as second:
            pids = []
            for client in (first, second):
                client.sendall(b"ping\n")
                pids.append(int(client.recv(100).split()[0]))
        status, err = served.stop()
    assert sorted(pids) == sorted(workers)
    assert served.proc.pid not in pids
    assert "(sync, 2 workers)" in err
    assert "prefork: graceful stop (SIGTERM): 2 workers" in err
    assert_clean_exit(status, err)


def test_upgrade_by_sigusr2_keeps_a_unix_socket(tmp_path: Path) -> None:
    """SIGUSR2 re-executes this very command line; the new master adopts the live socket."""
    path = str(tmp_path / "who.sock")
    with serve("serve_apps:Who", "--workers", "1", "--bind", f"unix:{path}") as served:
        before = ask(path, family=socket.AF_UNIX).split()[0]
        served.proc.send_signal(signal.SIGUSR2)
        # The new master says where it serves, with its pid in the line's prefix.
        new_master = int(served.wait_for(r"\[(\d+)\] INFO serve: serving .* on unix:")[1])
        gone = False
        try:
            served.wait_for(f"prefork: upgrade: serving; stopping the old master "
                            f"{served.proc.pid}")
            assert served.proc.wait(WAIT) == 0  # the old master drained and left
            after = ask(path, family=socket.AF_UNIX).split()[0]
            # Not our child (a grandchild of the old master): stopped by pid,
            # its end seen as the end of stderr, which it and its workers hold.
            os.kill(new_master, signal.SIGTERM)
            served.wait_for(rf"\[{new_master}\] INFO serve: stopped")
            served.wait_for_eof()
            gone = True
        finally:
            # On a failure above, no master may outlive the test (its
            # workers leave when it is gone).
            if not gone:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(new_master, signal.SIGKILL)
    assert new_master != served.proc.pid
    assert before != after
    assert "Traceback" not in "\n".join(served.stderr.seen)


# -- the PROXY protocol (proxy_protocol.py) --------------------------------------


def test_proxy_v1_gives_the_client_s_address_to_the_application() -> None:
    with serve("--wsgi", "serve_apps:hello", "--proxy-protocol", "v1",
               "--bind", "127.0.0.1:0") as served:
        port = served.inet()[1]
        by_curl = curl("--haproxy-protocol", "--write-out", r"\n%{local_port}",
                       f"http://127.0.0.1:{port}/curl")
        with connect(served.inet()) as client:
            client.sendall(f"PROXY TCP4 203.0.113.7 127.0.0.1 5555 {port}\r\n".encode()
                           + b"GET /raw HTTP/1.0\r\n\r\n")
            raw = recv_until_eof(client).decode()
        headerless = curl(f"http://127.0.0.1:{port}/none")
        status, err = served.stop()
    assert by_curl.returncode == 0, by_curl.stderr
    body, _, local_port = by_curl.stdout.rpartition("\n")
    report = json.loads(body)
    assert (report["REMOTE_ADDR"], report["REMOTE_PORT"]) == ("127.0.0.1", local_port)
    report = json.loads(raw.partition("\r\n\r\n")[2])
    assert (report["REMOTE_ADDR"], report["REMOTE_PORT"]) == ("203.0.113.7", "5555")
    assert re.search(r'^203\.0\.113\.7 - - \[.*\] "GET /raw HTTP/1.0" 200 ', err, re.MULTILINE)
    # Refused, quietly: closed ("Empty reply from server"), or reset if the
    # request was still unread in the kernel at the close.
    assert headerless.returncode in (52, 56), headerless.stderr
    assert_clean_exit(status, err)


def _answer_if_any(address: Any, data: bytes) -> bytes:
    """What a server that may close (or reset) the connection at accept answers ``data``.

    The refusal races with the client: the server may close before the
    send, or between the send and the half-close (ENOTCONN, EPIPE, a reset).
    """
    received = b""
    with connect(address) as client:
        with contextlib.suppress(ConnectionError, OSError):
            client.sendall(data)
            client.shutdown(socket.SHUT_WR)
        with contextlib.suppress(ConnectionResetError):
            received = recv_until_eof(client)
    return received


def test_proxy_v2_to_a_handler_and_the_allowed_peers() -> None:
    from minisocketserver.proxy_protocol import encode_v2

    header = encode_v2(("2001:db8::1", 4444), ("2001:db8::2", 80))
    with serve("serve_apps:Who", "--proxy-protocol", "any",
               "--bind", "127.0.0.1:0") as allowed, serve(
            "serve_apps:Who", "--proxy-protocol", "v2", "--proxy-allow", "10.0.0.0/8",
            "--bind", "127.0.0.1:0") as elsewhere:
        answer = ask(allowed.inet(), header + b"ping\n")
        refused = _answer_if_any(elsewhere.inet(), header + b"ping\n")
        statuses = [allowed.stop(), elsewhere.stop()]
    assert answer.split()[1:] == ["2001:db8::1", "ping"]
    assert refused == b""  # 127.0.0.1 may not speak for anyone there
    for status, err in statuses:
        assert_clean_exit(status, err)


def test_wsgi_prefork_tls_behind_a_proxy(certificate: tuple[Path, Path]) -> None:
    """The deployment of the issue: pre-forked TLS workers behind HAProxy's header."""
    cert, key = certificate
    with serve("--wsgi", "serve_apps:hello", "--workers", "2", "--tls-cert", str(cert),
               "--tls-key", str(key), "--proxy-protocol", "v1", "--max-requests", "100",
               "--max-requests-jitter", "10", "--timeout", "5", "--graceful-timeout", "5",
               "--bind", "127.0.0.1:0") as served:
        workers = _worker_pids(served, 2)
        result = curl("--haproxy-protocol", "--cacert", str(cert),
                      f"https://127.0.0.1:{served.inet()[1]}/deployed")
        status, err = served.stop()
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["pid"] in workers
    assert (report["wsgi.url_scheme"], report["REMOTE_ADDR"], report["wsgi.multiprocess"]) == (
        "https", "127.0.0.1", True)
    assert "(WSGI, threading, TLS, PROXY v1, 2 workers)" in err
    assert_clean_exit(status, err)


def test_help_names_every_option_and_the_top_level_lists_serve() -> None:
    own = subprocess.run([*SERVE, "--help"], capture_output=True, text=True, timeout=WAIT)
    top = subprocess.run([*SERVE[:-1], "--help"], capture_output=True, text=True, timeout=WAIT)
    assert (own.returncode, top.returncode) == (0, 0)
    assert own.stdout.startswith(f"usage: {PROG} [options] MODULE:HANDLER\n")
    for option in ("--wsgi", "--model", "--server", "--bind", "--workers", "--tls-cert",
                   "--tls-key", "--proxy-protocol", "--proxy-allow", "--max-requests",
                   "--max-requests-jitter", "--timeout", "--graceful-timeout"):
        assert f"  {option} " in own.stdout, option
    assert re.search(r"^    serve +serve your handler", top.stdout, re.MULTILINE), top.stdout
