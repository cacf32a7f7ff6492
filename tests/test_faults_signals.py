"""Signals: SIGINT during serve_forever(), and system calls interrupted by signals.

Issue 5, item 1.  Each server runs in a process of its own
(tests/fault_server.py), on its main thread, inside ``with server:``, as a
program would run it.

SIGINT: the KeyboardInterrupt leaves ``serve_forever()``, the ``with``
block closes the listening socket on its way out, and the process dies of
the interrupt exactly as Python makes it (exit status -SIGINT, traceback
ending in ``KeyboardInterrupt``): the same as stdlib ``socketserver``.

SIGUSR1, fired at every thread of the server (and every forked child)
while the loop waits and while a handler waits in ``recv()``: Python
retries each interrupted system call after running the handler (PEP 475),
so the server keeps answering, and the request in flight completes.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_models import MODELS
from support import WAIT, connect, recv_exactly, recv_until_eof

SCRIPT = str(Path(__file__).resolve().parent / "fault_server.py")

CASES = [("ours", m.name) for m in MODELS] + [
    ("stdlib", name) for name in ("sync", "threading", "forking")
]


@pytest.fixture
def spawn() -> Iterator[object]:
    started: list[subprocess.Popen[str]] = []

    def run(*args: str) -> tuple[subprocess.Popen[str], int]:
        proc = subprocess.Popen(
            [sys.executable, SCRIPT, *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        started.append(proc)
        assert proc.stdout is not None
        return proc, int(proc.stdout.readline())

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)


def request(port: int, line: bytes) -> bytes:
    with connect(("127.0.0.1", port)) as client:
        client.sendall(line)
        client.shutdown(socket.SHUT_WR)
        return recv_until_eof(client)


@pytest.mark.parametrize(("impl", "model"), CASES)
@pytest.mark.timeout(30)
def test_sigint_leaves_serve_forever_and_closes_the_listener(
    impl: str, model: str, spawn: object
) -> None:
    proc, port = spawn(impl, model)  # type: ignore[operator]
    assert request(port, b"before\n") == b"<before>\n"  # serve_forever() is running
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == -signal.SIGINT
    assert err.strip().splitlines()[-1] == "KeyboardInterrupt", err
    assert "listener closed: True" in out
    with socket.socket() as late, pytest.raises(ConnectionRefusedError):
        late.connect(("127.0.0.1", port))


@pytest.mark.parametrize("model", [m.name for m in MODELS])
@pytest.mark.timeout(30)
def test_interrupted_system_calls_are_retried(model: str, spawn: object) -> None:
    proc, port = spawn("ours", model, "--signals")  # type: ignore[operator]
    assert proc.stdin is not None and proc.stdout is not None

    def fire(rounds: int) -> None:
        proc.stdin.write(f"fire {rounds}\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "fired\n"

    fire(100)  # at the idle loop
    assert request(port, b"after idle signals\n") == b"<after idle signals>\n"
    with connect(("127.0.0.1", port)) as client:
        client.sendall(b"first\n")
        assert recv_exactly(client, 8) == b"<first>\n"  # the handler is running
        client.sendall(b"hel")
        fire(100)  # at the handler, waiting in recv() for the rest
        client.sendall(b"lo\n")
        assert recv_exactly(client, 8) == b"<hello>\n"
        client.shutdown(socket.SHUT_WR)
        assert recv_until_eof(client) == b""
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err
    assert "listener closed: True" in out
    handled = int(out.split("signals ")[1])
    assert handled > 0, out
