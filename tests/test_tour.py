"""``python -m minisocketserver tour``: the README's main command."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import minisocketserver as socketserver
from minisocketserver import cli
from minisocketserver.tour import (
    EXPLAIN,
    TourSetupError,
    available_models,
    load_class,
    run_tour,
)

ROOT = Path(__file__).resolve().parent.parent


class AuditingServer(socketserver.ThreadingTCPServer):
    """A user's server: its override must appear in the tour."""

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return super().verify_request(request, client_address)


class ShoutHandler(socketserver.StreamRequestHandler):
    """A user's handler: answers in capitals."""

    def handle(self) -> None:
        self.wfile.write(self.rfile.read().upper())


def tour(model: str, server: str | None = None, handler: str | None = None) -> str:
    out = io.StringIO()
    assert run_tour(model, server, handler, out) == 0
    return out.getvalue()


@pytest.mark.timeout(30)
def test_the_readme_command_runs_and_exits_0() -> None:
    # The real command line, in a fresh interpreter, as a newcomer runs it.
    done = subprocess.run(
        [sys.executable, "-m", "minisocketserver", "tour"], cwd=ROOT,
        capture_output=True, text=True, timeout=25, env={**os.environ, "PYTHONUTF8": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert "ThreadingTCPServer serving SeedEchoHandler" in out
    for step in ("TCPServer.server_bind()", "BaseServer.serve_forever(poll_interval=0.5)",
                 "Reactor.select(timeout=None)", "ThreadingMixIn.process_request(",
                 "BaseServer.finish_request(", "SeedEchoHandler.handle()",
                 "TCPServer.shutdown_request(", "BaseServer.shutdown()", "Reactor.wake()"):
        assert step in out, step
    assert "finish_request ran on: worker thread 1, worker thread 2." in out
    assert "[docs/06-threading.md]" in out
    assert "b'hello\\xe5\\xa5\\xbd'" in out  # the echo really answered, with 好


def test_every_explanation_points_to_a_chapter() -> None:
    chapters = {f"docs/{n}" for n in (
        "01-blocking-server.md", "02-select-loop.md", "03-baseserver.md",
        "04-socket-servers.md", "05-handlers.md", "06-threading.md", "07-forking.md",
        "08-multiplexing.md", "09-shutdown.md", "10-select-poll-epoll.md",
        "11-tls-ipv6-activation.md", "12-many-cores-many-machines.md")}
    assert {chapter for _, chapter in EXPLAIN.values()} <= chapters


@pytest.mark.timeout(30)
@pytest.mark.parametrize("model", ["sync", "forking", "threadpool", "udp", "unix",
                                   "multiplexing"])
def test_each_model_tours(model: str, no_leaks: object) -> None:
    assert model in available_models()
    out = tour(model)
    expected = {
        "sync": ["main thread", "BaseServer.process_request(", "loop thread"],
        "forking": ["child process 1", "child process 2", "<~ fork()",
                    "reaped child process 1", "[docs/07-forking.md]"],
        # Usually one pooled worker serves both clients in turn, but a
        # second may start if the first is not yet back in the pool's
        # queue when client 2 arrives: either is right.
        "threadpool": ["ThreadPoolMixIn.process_request_thread(",
                       "finish_request ran on: worker thread 1"],
        "udp": ["UDPServer.get_request()", "DatagramEchoHandler.handle()"],
        "unix": ["UnixStreamServer serving", "a temporary path"],
        "multiplexing": ["MultiplexedEchoHandler.data_received(data)",
                         "MultiplexedRequestHandler.send(data)", "[docs/08-multiplexing.md]"],
    }[model]
    for text in expected:
        assert text in out, text
    assert "replies [b'hello" in out


@pytest.mark.timeout(30)
def test_a_users_own_classes_show_up(no_leaks: object) -> None:
    out = tour("threading", "test_tour:AuditingServer", "test_tour:ShoutHandler")
    assert "AuditingServer: AuditingServer.verify_request(request, client_address)" in out
    assert "AuditingServer overrides this hook: policy check" in out
    assert "ShoutHandler.handle()" in out
    assert "replies [b'HELLO', b'WORLD']" in out


@pytest.mark.timeout(30)
@pytest.mark.skipif(shutil.which("openssl") is None, reason="the tls tour needs openssl")
def test_the_tls_tour_handshakes_on_the_worker(no_leaks: object) -> None:
    assert "tls" in available_models()
    out = tour("tls")
    assert "ThreadingTLSServer serving SeedEchoHandler" in out
    admitted = out.index("AdmissionMixIn.admit_request(request, client_address)")
    spoke = out.index("AdmissionMixIn.first_bytes_arrived(request, client_address)")
    handshake = out.index("TLSMixIn._handshake(request, client_address)")
    assert admitted < spoke < handshake
    # The handshake runs on a worker, never on the loop thread.
    lines = out.splitlines()
    handshakes = [line for line in lines if "TLSMixIn._handshake(" in line]
    assert len(handshakes) == 2 and all(line.startswith("worker thread") for line in handshakes)
    for text in ("a silent client then costs one descriptor, not a worker",
                 "the TLS handshake, here on the worker",
                 "close_notify if a session is up",
                 "[docs/11-tls-ipv6-activation.md]"):
        assert text in out, text
    assert "replies [b'hello\\xe5\\xa5\\xbd', b'world\\xe5\\xa5\\xbd']" in out


def test_the_tls_tour_without_openssl_says_so_in_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    out, err = io.StringIO(), io.StringIO()
    assert run_tour("tls", None, None, out, err) == 2
    assert out.getvalue() == ""
    assert err.getvalue().count("\n") == 1 and "openssl" in err.getvalue()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["tour", "carrier-pigeon"])
    with pytest.raises(TourSetupError, match="module:Class"):
        load_class("no_colon_here")
    # The tour itself says why in one line on stderr, and runs nothing.
    for server, message in [("no_colon_here", "expected module:Class"),
                            ("test_tour:ShoutHandler", "not a minisocketserver server class")]:
        out, err = io.StringIO(), io.StringIO()
        assert run_tour("threading", server, None, out, err) == 2
        assert out.getvalue() == ""
        assert err.getvalue().count("\n") == 1 and message in err.getvalue()


def test_echo_is_still_a_command() -> None:
    args = cli.build_parser().parse_args(["echo", "--port", "0", "--model", "sync"])
    assert (args.command, args.port, args.model) == ("echo", 0, "sync")
    assert cli.build_parser().parse_args(["tour"]).model == "threading"
