"""The seed's examples on the library (docs/examples/*_lib.py), run as scripts.

Each runs in a subprocess with ``--port 0`` and prints its port(s) first; the tests
read those lines rather than sleeping.  The same conversation is held with the
hand-written loop (``*_raw.py``) and with the library version, and a client must
not be able to tell them apart.
"""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import WAIT, recv_until_eof

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
HOST = "127.0.0.1"


@contextmanager
def running(script: str, ports: int = 1, *args: str) -> Iterator[list[int]]:
    """Start ``script --port 0``, yield its ports; on exit SIGINT it and expect status 0."""
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    pump = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or ()])
    pump.start()
    try:
        found = []
        for _ in range(ports):
            line = lines.get(timeout=WAIT)
            assert line.startswith(f"listening on {HOST}:"), line
            found.append(int(line.rsplit(":", 1)[1]))
        yield found
        proc.send_signal(signal.SIGINT)
        assert proc.wait(WAIT) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(WAIT)
        pump.join(WAIT)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


#: Per client, the chunks it sends: a character split across two sends, CRLF, an
#: empty line, invalid UTF-8, a long line, and a last line without its newline.
CONVERSATION = [
    [b"hello\n", "你好\n".encode()],
    ["sp你".encode()[:3], "sp你".encode()[3:] + b"lit\r\n", b"\n"],
    [b"bad \xff byte\n", b"x" * 5000 + b"\n"],
    [b"no newline at the end"],
]


def expected(chunks: list[bytes]) -> bytes:
    lines = b"".join(chunks).split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    texts = (line.removesuffix(b"\r").decode("utf-8", errors="replace") for line in lines)
    return b"".join((text + "好\n").encode() for text in texts)


def converse(port: int) -> list[bytes]:
    socks = [socket.create_connection((HOST, port), timeout=WAIT) for _ in CONVERSATION]
    try:
        for sock in socks:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Round-robin: every client has a chunk in flight before any finishes.
        for step in range(max(map(len, CONVERSATION))):
            for sock, chunks in zip(socks, CONVERSATION, strict=True):
                if step < len(chunks):
                    sock.sendall(chunks[step])
        for sock in socks:
            sock.shutdown(socket.SHUT_WR)
        return [recv_until_eof(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.timeout(30)
def test_select_echo_lib_answers_like_the_raw_loop() -> None:
    with running("select_echo_lib.py", 1, "--verbose") as [port]:
        lib = converse(port)
    with running("select_echo_raw.py") as [port]:
        raw = converse(port)
    assert lib == [expected(chunks) for chunks in CONVERSATION]
    assert lib == raw


@pytest.mark.timeout(30)
def test_three_ports_lib_says_hello_on_each_port_like_the_raw_loop() -> None:
    for script in ("three_ports_lib.py", "three_ports_raw.py"):
        with running(script, 3) as ports:
            assert len(set(ports)) == 3
            for port in ports * 2:
                with socket.create_connection((HOST, port), timeout=WAIT) as client:
                    assert recv_until_eof(client) == b"hello", script


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("script", "ports"), [("select_echo_lib.py", 1), ("three_ports_lib.py", 3)]
)
def test_max_seconds_stops_with_status_zero(script: str, ports: int) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--port", "0", "--max-seconds", "0.2"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == ports
