"""The seed's examples under docs/examples/, run as the scripts they are, on 127.0.0.1.

Each example runs in a subprocess with ``--port 0`` and tells us its port(s) on its
first stdout line(s); the tests read those lines instead of sleeping, so there is no
guessed delay anywhere.  Every subprocess has a time bound of its own
(``--max-seconds`` or its work) and is killed in a ``finally`` if it is still there.

Also here: the select/poll/epoll benchmark in its ``--quick`` form, which checks the
error select() raises for descriptor 1024 against what docs/select-poll-epoll.md says,
and ``--check``, which fails when that page no longer matches its recorded figures.
"""

from __future__ import annotations

import json
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"
BENCHMARK = ROOT / "benchmarks" / "select_poll_epoll.py"
HOST = "127.0.0.1"

#: Upper bound for any single wait on a subprocess or a socket in these tests.
STEP_TIMEOUT = 10.0

#: The exact error select() raises for a descriptor >= 1024, as the docs quote it.
SELECT_FD_ERROR = ("ValueError", "filedescriptor out of range in select()")


class Example:
    """A running example script whose stdout and stderr we read line by line.

    Two reader threads move lines into queues, so every read can time out: a plain
    ``readline()`` on a pipe would hang the test if the example printed nothing.
    """

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.stdout_lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_lines: queue.Queue[str | None] = queue.Queue()
        self._stderr_seen: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines)),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines)),
        ]
        for t in self._readers:
            t.daemon = True
            t.start()

    @staticmethod
    def _pump(pipe: IO[str], into: queue.Queue[str | None]) -> None:
        for line in pipe:
            into.put(line.rstrip("\n"))
        into.put(None)  # end of stream

    def readline(self, timeout: float = STEP_TIMEOUT) -> str:
        try:
            line = self.stdout_lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no stdout line within {timeout}s; {self.describe()}") from None
        if line is None:
            raise AssertionError(f"stdout closed early; {self.describe()}")
        return line

    def read_stderr_until(self, needle: str, timeout: float = STEP_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"stderr never said {needle!r}; {self.describe()}")
            try:
                line = self.stderr_lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"stderr closed before {needle!r}; {self.describe()}")
            self._stderr_seen.append(line)
            if needle in line:
                return line

    def ports(self, count: int = 1) -> list[int]:
        """Read the 'listening on HOST:PORT' lines the servers print first."""
        ports = []
        for _ in range(count):
            line = self.readline()
            assert line.startswith(f"listening on {HOST}:"), line
            ports.append(int(line.rsplit(":", 1)[1]))
        return ports

    def wait(self, timeout: float = STEP_TIMEOUT) -> int:
        return self.proc.wait(timeout=timeout)

    def stderr_text(self) -> str:
        """All of stderr; only meaningful once the process has exited."""
        for t in self._readers:
            t.join(timeout=STEP_TIMEOUT)
        while True:
            try:
                line = self.stderr_lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self._stderr_seen.append(line)
        return "\n".join(self._stderr_seen)

    def stdout_rest(self) -> list[str]:
        """Every stdout line not read yet; only meaningful once the process has exited."""
        for t in self._readers:
            t.join(timeout=STEP_TIMEOUT)
        lines = []
        while True:
            try:
                line = self.stdout_lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                lines.append(line)
        return lines

    def describe(self) -> str:
        return f"returncode={self.proc.poll()}"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=STEP_TIMEOUT)
        for t in self._readers:
            t.join(timeout=STEP_TIMEOUT)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


@contextmanager
def example(script: str, *args: str) -> Iterator[Example]:
    ex = Example(script, *args)
    try:
        yield ex
    finally:
        ex.close()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=STEP_TIMEOUT)
    # Small writes go out at once, so "two sends" really are two segments.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_line(sock: socket.socket, buf: bytearray) -> bytes:
    while (end := buf.find(b"\n")) < 0:
        data = sock.recv(65536)
        assert data, "server closed the connection before a whole reply"
        buf += data
    line = bytes(buf[:end])
    del buf[: end + 1]
    return line


def read_to_eof(sock: socket.socket) -> bytes:
    chunks = []
    while data := sock.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


# --------------------------------------------------------------------------------------
# select_echo_raw.py
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_echo_concurrent_clients_each_get_their_message_plus_hao() -> None:
    # "\uff0c" is the fullwidth comma of Chinese text: one more 3-byte character.
    messages = ["hello", "你好\uff0c世界", "", "emoji 🐍 ok", "a" * 5000 + "尾"]
    split_message = "split:你好"
    split_bytes = (split_message + "\n").encode()
    cut = len(b"split:") + 1  # one byte into the three bytes of 你
    with example("select_echo_raw.py", "--port", "0", "--max-seconds", "25", "--verbose") as ex:
        (port,) = ex.ports()
        clients = [connect(port) for _ in messages]
        splitter = connect(port)
        try:
            # The first half of a character goes out before anything else.  By the
            # time the other clients have their replies, the server has been through
            # at least one pass that saw it readable, so it received those 7 bytes on
            # their own: exactly what made the seed's str() decoding crash.
            splitter.sendall(split_bytes[:cut])
            # All requests in flight at once, then all replies: real concurrency for a
            # single-threaded server.
            for sock, msg in zip(clients, messages, strict=True):
                sock.sendall(msg.encode() + b"\n")
            for sock, msg in zip(clients, messages, strict=True):
                assert read_line(sock, bytearray()).decode() == msg + "好"
            splitter.sendall(split_bytes[cut:])
            assert read_line(splitter, bytearray()).decode() == split_message + "好"
            split_peer = "{}:{}".format(*splitter.getsockname()[:2])
        finally:
            for sock in [*clients, splitter]:
                sock.close()
        ex.proc.send_signal(signal.SIGINT)
        assert ex.wait() == 0
        log = ex.stderr_text()
    assert f"{split_peer}: received {cut} bytes" in log, log
    assert "Traceback" not in log


@pytest.mark.timeout(30)
def test_echo_pipelined_messages_in_one_send_get_one_reply_each() -> None:
    with example("select_echo_raw.py", "--port", "0", "--max-seconds", "25") as ex:
        (port,) = ex.ports()
        with connect(port) as sock:
            sock.sendall(b"".join(f"m{i}\n".encode() for i in range(200)))
            buf = bytearray()
            replies = [read_line(sock, buf).decode() for _ in range(200)]
        assert replies == [f"m{i}好" for i in range(200)]


@pytest.mark.timeout(30)
def test_echo_answers_last_line_after_half_close_then_closes() -> None:
    # The seed answered end-of-stream itself with "好", forever (its bug 1).
    with example("select_echo_raw.py", "--port", "0", "--max-seconds", "25") as ex:
        (port,) = ex.ports()
        with connect(port) as sock:
            sock.sendall("tail 尾".encode())
            sock.shutdown(socket.SHUT_WR)
            assert read_to_eof(sock) == "tail 尾好\n".encode()


@pytest.mark.timeout(30)
def test_echo_client_script_from_a_pipe() -> None:
    lines = ["hello", "你好", "", "second to last", "end"]
    with example("select_echo_raw.py", "--port", "0", "--max-seconds", "25") as ex:
        (port,) = ex.ports()
        result = subprocess.run(
            [sys.executable, str(EXAMPLES / "echo_client.py"), "--port", str(port)],
            input="\n".join(lines) + "\n",
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=STEP_TIMEOUT,
        )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [line + "好" for line in lines]


@pytest.mark.timeout(30)
def test_echo_server_stops_by_itself_after_max_seconds() -> None:
    with example("select_echo_raw.py", "--port", "0", "--max-seconds", "0.5") as ex:
        ex.ports()
        assert ex.wait() == 0
        assert "Traceback" not in ex.stderr_text()


# --------------------------------------------------------------------------------------
# three_ports_raw.py
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_three_ports_each_answer_hello_and_close() -> None:
    with example("three_ports_raw.py", "--port", "0", "--max-seconds", "25") as ex:
        ports = ex.ports(3)
        assert len(set(ports)) == 3
        for port in ports:
            with connect(port) as sock:
                assert read_to_eof(sock) == b"hello"
        # Twice on each, in the other order: the loop goes on serving every port.
        for port in reversed(ports):
            with connect(port) as sock:
                assert read_to_eof(sock) == b"hello"


# --------------------------------------------------------------------------------------
# threading_demo.py
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_threading_demo_prints_0_to_9_in_any_order() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "threading_demo.py"), "--delay", "0.05"],
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.splitlines(), key=int) == [str(i) for i in range(10)]


# --------------------------------------------------------------------------------------
# Ctrl-C
# --------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("script", ["select_echo_raw.py", "three_ports_raw.py"])
def test_sigint_stops_a_server_with_status_0_and_no_traceback(script: str) -> None:
    ports = 3 if script == "three_ports_raw.py" else 1
    with example(script, "--port", "0", "--max-seconds", "25") as ex:
        first = ex.ports(ports)[0]
        # An open, idle client: the server must close it too, not trip over it.
        with connect(first):
            ex.proc.send_signal(signal.SIGINT)
            assert ex.wait() == 0
        log = ex.stderr_text()
    assert "interrupted (Ctrl-C)" in log
    assert "Traceback" not in log


@pytest.mark.timeout(30)
def test_sigint_stops_the_threading_demo_early() -> None:
    with example("threading_demo.py", "--delay", "60") as ex:
        ex.read_stderr_until("started 10 threads")
        ex.proc.send_signal(signal.SIGINT)
        assert ex.wait() == 0  # long before the 60 s wait would have ended
        assert ex.stdout_rest() == []
        log = ex.stderr_text()
    assert "Traceback" not in log


# --------------------------------------------------------------------------------------
# The select/poll/epoll benchmark
# --------------------------------------------------------------------------------------


def _nofile_can_reach(n: int) -> bool:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return hard == resource.RLIM_INFINITY or hard > n


@pytest.mark.timeout(30)
def test_benchmark_quick_runs_and_select_raises_the_documented_error() -> None:
    t0 = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--json", "-"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=25,
        cwd=ROOT,
    )
    elapsed = time.monotonic() - t0
    assert result.returncode == 0, result.stderr
    assert elapsed < 10, f"--quick took {elapsed:.1f}s"  # aims at well under 5 s
    data = json.loads(result.stdout)

    cells = {(r["backend"], r["scenario"], r["n"]): r for r in data["results"]}
    backends = [
        "select.select",
        "select.poll",
        "select.epoll",
        "SelectSelector",
        "PollSelector",
        "EpollSelector",
    ]
    for backend in backends:
        for scenario in ("idle", "one_ready"):
            for n in (10, 100):
                cell = cells[(backend, scenario, n)]
                assert cell["status"] == "ok", cell
                assert 0 < cell["p10_us"] <= cell["median_us"] <= cell["p90_us"]

    # The error, as the committed docs quote it.
    documented = (ROOT / "docs" / "select-poll-epoll.md").read_text(encoding="utf-8")
    assert f"`{SELECT_FD_ERROR[0]}: {SELECT_FD_ERROR[1]}`" in documented

    if not _nofile_can_reach(1100):
        pytest.skip("RLIMIT_NOFILE cannot be raised above 1100: no descriptor 1024 to probe")
    limits = data["limits"]
    assert limits["fd_low"] == 1023 and limits["fd_high"] == 1024
    assert limits["select_low"] == {"ok": True}
    assert limits["select_high"] == {
        "ok": False,
        "type": SELECT_FD_ERROR[0],
        "message": SELECT_FD_ERROR[1],
    }
    assert limits["selectselector_register_high"] == {"ok": True}
    assert limits["selectselector_select_high"]["message"] == SELECT_FD_ERROR[1]
    assert limits["poll_high"] == {"ok": True}
    assert limits["epoll_high"] == {"ok": True}


@pytest.mark.timeout(30)
def test_benchmark_docs_match_their_recorded_figures() -> None:
    # The page is rendered from docs/data/select-poll-epoll.json; --check re-renders it
    # (and the SVG, when the same matplotlib is installed) and compares.
    result = subprocess.run(
        [sys.executable, str(BENCHMARK), "--check"],
        capture_output=True,
        text=True,
        timeout=25,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
