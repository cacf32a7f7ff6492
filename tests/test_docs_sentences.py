"""Sentences of the walkthrough that state how the kernel or stdlib behave, held by running them.

Each test is the command a page cites for one such sentence (issue 11, item 4):
``python -m pytest tests/test_docs_sentences.py -k NAME``.  All but the last check
the ground the docs stand on, not minisocketserver, so that a reader who doubts a
sentence can run it; the last shows where a select()-based loop of ours fails.
stdlib ``socketserver`` is used only as the behavioural oracle, as everywhere in the
tests.

Linux only where the sentence is about Linux (the backlog, SO_REUSEADDR over
TIME_WAIT, select()'s exceptional list on TCP sockets).
"""

from __future__ import annotations

import gc
import resource
import select
import shutil
import socket
import socketserver
import struct
import subprocess
import sys
import time
import warnings

import pytest
from support import WAIT

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="a sentence about Linux")


# -- chapter 3: stdlib and a raising verify_request ---------------------------


class _Quiet(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        pass


class _BrokenVerify(socketserver.TCPServer):
    def verify_request(self, request: object, client_address: object) -> bool:
        raise LookupError("the allow-list is unavailable")


def test_stdlib_verify_request_raising_leaves_the_socket_to_the_finalizer() -> None:
    """docs/03-baseserver.md: the accepted socket stays open while the exception lives,
    then CPython's finalizer closes it with a ResourceWarning (nothing else closes it)."""
    gc.disable()  # so that reference counting alone, not a collection, does it
    try:
        with (
            _BrokenVerify(("127.0.0.1", 0), _Quiet) as server,
            socket.create_connection(server.server_address, timeout=WAIT) as client,
        ):
            held: BaseException | None = None
            try:
                server.handle_request()
            except LookupError as exc:
                held = exc
            assert held is not None, "stdlib let verify_request's exception escape"
            client.settimeout(0.2)  # a bounded look: the connection must still be open
            with pytest.raises(TimeoutError):
                client.recv(1)
            client.settimeout(WAIT)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                held = None  # the traceback's frames held the accepted socket
            assert client.recv(1) == b"", "dropping the exception closed the connection"
            assert any(
                issubclass(w.category, ResourceWarning)
                and "unclosed <socket.socket" in str(w.message)
                for w in caught
            ), [str(w.message) for w in caught]
    finally:
        gc.enable()


# -- chapter 2: select()'s third list -----------------------------------------


def _accepted_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=WAIT)
        server_end, _ = listener.accept()
    # Blocking, without a timeout: each recv() below follows a select() that said
    # it will not block, and a socket timeout would make recv(MSG_OOB) wait for
    # *readable*, which urgent data is not.
    return client, server_end


def _ready(sock: socket.socket) -> tuple[bool, bool]:
    readable, _, exceptional = select.select([sock], [], [sock], WAIT)
    return bool(readable), bool(exceptional)


@linux_only
def test_select_exceptional_list_reports_urgent_data_not_a_closed_peer() -> None:
    """docs/02-select-loop.md: on a Linux TCP socket the "exceptional" list means
    out-of-band (urgent) data; a close or a reset is reported as *readable*."""
    client, conn = _accepted_pair()
    with client, conn:
        client.send(b"!", socket.MSG_OOB)
        assert _ready(conn) == (False, True)
        assert conn.recv(1, socket.MSG_OOB) == b"!"
        client.close()
        assert _ready(conn) == (True, False)
        assert conn.recv(10) == b""
    client, conn = _accepted_pair()
    with client, conn:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # SO_LINGER 0: an RST instead of a FIN
        assert _ready(conn) == (True, False)
        with pytest.raises(ConnectionResetError):
            conn.recv(10)


# -- chapters 2 and 10: what the seed dies of at the 1,021st client -----------

#: The seed's accept/select core, re-indented: the listener and every client in
#: one select(), the listener and the clients in the exceptional list too, no
#: try around accept().  It prints what it died of.
_SEED_CORE = r"""
import resource, select, socket, sys
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))
sk1 = socket.socket()
sk1.bind(("127.0.0.1", 0))
sk1.listen(2048)
print(sk1.getsockname()[1], flush=True)
inputs = [sk1]
try:
    while True:
        r_list, w_list, e_list = select.select(inputs, [], inputs, 1)
        for sk in r_list:
            if sk == sk1:
                conn, address = sk1.accept()
                inputs.append(conn)
except Exception as exc:
    print(type(exc).__name__, getattr(exc, "errno", None), len(inputs) - 1, flush=True)
"""


def _readline(process: subprocess.Popen[str]) -> str:
    """One line of the child's output, waiting at most WAIT seconds for it."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], WAIT)
    assert ready, "the child printed nothing"
    return process.stdout.readline()


def _seed_dies_of(soft_limit: int) -> tuple[str, str, int]:
    """Run the seed's core with this RLIMIT_NOFILE soft limit against 1,030 clients."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low for 1,030 clients")
    if soft < 2048:  # our 1,030 clients, beside what pytest holds open
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
    clients: list[socket.socket] = []
    command = [sys.executable, "-c", _SEED_CORE, str(soft_limit)]
    try:
        with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as server:
            try:
                port = int(_readline(server))
                for _ in range(1030):
                    try:
                        clients.append(socket.create_connection(("127.0.0.1", port), WAIT))
                    except ConnectionRefusedError:  # it died and closed its listener
                        break
                died, err, accepted = _readline(server).split()
                server.wait(WAIT)
            finally:
                if server.poll() is None:
                    server.kill()
                    server.wait(WAIT)
        return died, err, int(accepted)
    finally:
        for c in clients:
            c.close()
        if soft < 2048:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@linux_only
def test_seed_at_the_common_1024_soft_limit_dies_in_accept_with_emfile() -> None:
    """docs/02 and 10: at RLIMIT_NOFILE 1024 the 1,021st client makes accept() fail."""
    assert _seed_dies_of(1024) == ("OSError", "24", 1020)  # 24: EMFILE


@linux_only
def test_seed_above_1024_descriptors_dies_in_select_on_descriptor_1024() -> None:
    """docs/02 and 10: with more descriptors allowed, the 1,021st client gets
    descriptor 1024 and select() raises ValueError."""
    assert _seed_dies_of(2048) == ("ValueError", "None", 1021)


# -- chapter 4: the listen backlog --------------------------------------------


def _completed_connects(backlog: int, attempts: int) -> int:
    """Non-blocking connects to a listener that never accepts; how many complete."""
    with socket.create_server(("127.0.0.1", 0), backlog=backlog) as listener:
        clients = []
        try:
            for _ in range(attempts):
                c = socket.socket()
                clients.append(c)
                c.setblocking(False)
                c.connect_ex(listener.getsockname())
            # A refused SYN is retried after 1 s; everything the backlog takes is
            # completed within the loopback round trip, long before that.
            waiting = list(clients)
            deadline = time.monotonic() + 0.5
            done = []
            while waiting and time.monotonic() < deadline:
                _, writable, _ = select.select([], waiting, [], 0.05)
                for c in writable:
                    waiting.remove(c)
                    done.append(c)
            return sum(1 for c in done if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
        finally:
            for c in clients:
                c.close()


@linux_only
@pytest.mark.parametrize("backlog", [0, 1, 5, 16])
def test_linux_queues_backlog_plus_one_connections(backlog: int) -> None:
    """docs/04-socket-servers.md: listen(N) lets N + 1 handshakes complete unaccepted."""
    assert _completed_connects(backlog, backlog + 10) == backlog + 1


@linux_only
@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2)")
def test_kernel_caps_the_backlog_at_somaxconn_silently() -> None:
    """docs/04-socket-servers.md: listen() with more than net.core.somaxconn succeeds,
    and the kernel uses somaxconn (``ss`` shows a listener's backlog as Send-Q)."""
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    with socket.create_server(("127.0.0.1", 0), backlog=somaxconn + 1000) as listener:
        port = listener.getsockname()[1]
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=WAIT
        ).stdout.split()
    assert int(out[2]) == somaxconn, out


# -- chapter 1 and the examples: SO_REUSEADDR over TIME_WAIT ------------------


def _rebind_after_time_wait(old_reuse: bool, new_reuse: bool) -> bool:
    old = socket.socket()
    with old:
        if old_reuse:
            old.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        old.bind(("127.0.0.1", 0))
        old.listen()
        port = old.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as client:
            conn, _ = old.accept()
            conn.close()  # the server closes first: its end of the connection waits in TIME_WAIT
            assert client.recv(1) == b""
    with socket.socket() as new:
        if new_reuse:
            new.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            new.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@linux_only
@pytest.mark.parametrize(
    ("old_reuse", "new_reuse", "binds"),
    [(False, False, False), (False, True, False), (True, False, False), (True, True, True)],
)
def test_so_reuseaddr_rebinds_over_time_wait_only_if_both_listeners_set_it(
    old_reuse: bool, new_reuse: bool, binds: bool
) -> None:
    """docs/examples/*_raw.py: on Linux the TIME_WAIT connection keeps the old
    listener's SO_REUSEADDR; a new listener binds over it only if both set it."""
    assert _rebind_after_time_wait(old_reuse, new_reuse) is binds


# -- chapter 10: where a SelectSelector loop fails past descriptor 1023 -------

#: A process that holds descriptors up to argv[1] first, then serves with
#: SelectSelector; prints the error and the functions it came through.
_SELECT_LOOP = r"""
import os, resource, selectors, sys, traceback
import minisocketserver as socketserver
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
while os.open(os.devnull, os.O_RDONLY) < int(sys.argv[1]):
    pass
class Server(socketserver.TCPServer):
    selector_class = selectors.SelectSelector
with Server(("127.0.0.1", 0), socketserver.BaseRequestHandler) as server:
    try:
        server.serve_forever()
    except ValueError as exc:
        names = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
        print(server.fileno(), " ".join(names), "|", exc)
"""


@linux_only
@pytest.mark.parametrize(
    ("held", "listener", "failed_in"),
    [
        (1030, 1031, "_attach watch check_watchable"),  # before any wait
        (1022, 1023, "serve_loop select select"),  # the wake-up channel: on the first wait
    ],
)
def test_select_selector_loop_past_1023_fails_in_attach_or_on_the_wake_channel(
    held: int, listener: int, failed_in: str
) -> None:
    """docs/10-select-poll-epoll.md: a listener numbered 1024 or more is refused by
    check_watchable when serve_forever() attaches it; the reactor's own wake-up
    channel is not checked, so with only that past 1023 the first wait raises."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is too low")
    out = subprocess.run(
        [sys.executable, "-c", _SELECT_LOOP, str(held)],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    ).stdout
    fd, rest = out.split(" ", 1)
    assert int(fd) == listener, out
    assert f" {failed_in} |" in rest, out
