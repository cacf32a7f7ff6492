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

import select
import signal
import socket
import subprocess
import sys
import time
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


def wait_until_blocked_in_recv(pid: int, client: socket.socket) -> None:
    """Return once the server has read all the client sent and sleeps in the kernel.

    A signal that lands while the main thread runs Python just before a
    blocking ``recv()`` is lost until that ``recv()`` returns: CPython's C
    handler only sets a flag, checked between bytecodes, and the system call
    entered next does not see it.  A sync server waiting for the rest of a
    line would then wait for the client, and the client for the server.
    Asleep in ``recv()``, the thread is interrupted (EINTR) and raises at
    once.  Both conditions are read from /proc: the server's end of this
    connection has nothing left in its receive queue, and the main thread
    is asleep (state S), which for a sync handler can only be its next
    ``recv()``.
    """
    server_port, client_port = client.getpeername()[1], client.getsockname()[1]
    # /proc/net/tcp: "sl local_address rem_address st tx_queue:rx_queue ...",
    # addresses as hex IP:port.
    ends = (f":{server_port:04X}", f":{client_port:04X}")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        with open("/proc/net/tcp") as table:
            queued = [
                int(fields[4].split(":")[1], 16)
                for fields in (row.split() for row in table.readlines()[1:])
                if fields[1].endswith(ends[0]) and fields[2].endswith(ends[1])
            ]
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
        if queued == [0] and state == "S":
            return
        time.sleep(0.001)  # nothing to wait on: the kernel's state is only polled
    pytest.fail(f"the server did not block in recv(): queue {queued}, state {state}")


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
    assert "closing\nlistener closed: True" in out
    with socket.socket() as late, pytest.raises(ConnectionRefusedError):
        late.connect(("127.0.0.1", port))


@pytest.mark.parametrize(("impl", "model"), CASES)
@pytest.mark.timeout(30)
def test_sigint_caught_by_another_thread_still_stops_the_loop(
    impl: str, model: str, spawn: object
) -> None:
    """The kernel may hand a process's SIGINT to any thread, not only the main one.

    The handler (KeyboardInterrupt) runs on the main thread all the same,
    but only once that thread runs: a loop asleep in select() with no
    timeout must be woken (``Reactor.signals_wake``); stdlib's loop wakes
    every 0.5 s and notices then.
    """
    proc, port = spawn(impl, model, "--signals")  # type: ignore[operator]
    assert proc.stdin is not None and proc.stdout is not None
    assert request(port, b"before\n") == b"<before>\n"
    proc.stdin.write("interrupt-here\n")
    proc.stdin.flush()
    if not select.select([proc.stdout], [], [], WAIT)[0]:
        proc.send_signal(signal.SIGABRT)  # faulthandler: every stack, then death
        proc.wait(WAIT)
        pytest.fail(f"SIGINT on another thread did not end serve_forever():\n"
                    f"{proc.stderr.read()}")  # type: ignore[union-attr]
    assert proc.stdout.readline() == "closing\n"
    proc.wait(WAIT)
    assert proc.returncode == -signal.SIGINT


#: What a request in flight gets when SIGINT reaches the serving process:
#: stdlib's outcome for the models it has (the test checks ours and
#: stdlib's against it).  The sync handler runs on the main thread, so the
#: KeyboardInterrupt is raised inside it and the request is shut down
#: unanswered; threads, pool workers and children are left to finish
#: (server_close() waits for them, block_on_close); the multiplexing
#: model's server_close() ends its connections.
IN_FLIGHT_REPLY = {"sync": b"", "threading": b"<second>\n", "forking": b"<second>\n",
                   "multiplexing": b"", "threadpool": b"<second>\n"}


@pytest.mark.parametrize(("impl", "model"), CASES)
@pytest.mark.timeout(30)
def test_sigint_with_a_request_in_flight(impl: str, model: str, spawn: object) -> None:
    proc, port = spawn(impl, model)  # type: ignore[operator]
    assert proc.stdout is not None
    with connect(("127.0.0.1", port)) as client:
        client.sendall(b"first\n")
        assert recv_exactly(client, 8) == b"<first>\n"  # its handler is running
        client.sendall(b"sec")
        if model == "sync":
            wait_until_blocked_in_recv(proc.pid, client)
        else:
            # The loop accepted this one after it was done handing the first
            # to its thread, child or table; a SIGINT that lands while the
            # loop is still inside process_request() for a connection makes
            # it shut that connection down, even when a worker or a child
            # owns it already (stdlib too), and this test is not about that.
            assert request(port, b"sync\n") == b"<sync>\n"
        proc.send_signal(signal.SIGINT)
        if not select.select([proc.stdout], [], [], WAIT)[0]:
            proc.send_signal(signal.SIGABRT)  # faulthandler: every stack, then death
            proc.wait(WAIT)
            pytest.fail(f"SIGINT did not end serve_forever():\n{proc.stderr.read()}")
        assert proc.stdout.readline() == "closing\n"  # the with block is ending
        try:
            client.sendall(b"ond\n")
            client.shutdown(socket.SHUT_WR)
            got = recv_until_eof(client)
        except OSError:  # cut with unread input (RST): ECONNRESET, EPIPE, ENOTCONN
            got = b""
    assert got == IN_FLIGHT_REPLY[model]
    # Not communicate(): it reads the pipe under the buffer readline() filled.
    proc.wait(WAIT)
    assert proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == -signal.SIGINT
    assert err.strip().splitlines()[-1] == "KeyboardInterrupt", err
    assert "listener closed: True" in out


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
