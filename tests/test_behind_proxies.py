"""Behind the real HAProxy 2.6 and nginx 1.22, and for curl (issue 13, item 4).

The PROXY protocol tests elsewhere check our parser against the spec; these
check it against the programs users deploy in front of it.  Each test starts
the real component (tests/real_components.py: generated configuration,
inherited loopback listener, stopped by pid) in front of a server of ours
and connects through it from sockets whose port the test knows, so "the
handler sees the client's real address" is compared port for port.

What the components send, checked on this machine (HAProxy 2.6.12, nginx
1.22.1, curl 7.88.1) by capturing their first bytes on a bare socket:
HAProxy's ``send-proxy`` and nginx's ``proxy_protocol on`` send a v1 line
with the client's endpoints; ``send-proxy-v2`` sends the v2 block; the
health checks of a server with ``check`` carry the header too (HAProxy's
configuration manual, ``check-send-proxy``: "the PROXY protocol is enabled
for health checks if it is already enabled for normal traffic"): with v2 it
is a ``LOCAL`` command with family UNSPEC, which the spec
(proxy-protocol.txt, section 2.2) says the receiver must accept, using the
connection's real endpoints; with v1 it is a ``PROXY TCP4`` line naming the
check connection's own endpoints.  Either way HAProxy ends the probe with a
reset right after the header.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prefork_load import Load
from real_components import curl, haproxy, loopback_listener, nginx
from support import WAIT, Resources, connect, recv_until_eof, serving

import minisocketserver as ours
from minisocketserver import ProxyProtocolMixIn

pytestmark = pytest.mark.timeout(60)

#: Clients per test, CLIENT_THREADS at a time: concurrent, so that a header
#: given to the wrong connection would show as a port mismatch.
CLIENTS, CLIENT_THREADS = 40, 8


@dataclass(frozen=True)
class Seen:
    """One connection as the handler saw it."""

    command: str  # the header's: "PROXY" or "LOCAL"
    version: int
    client_address: tuple[str, int]  # what the handler got
    peer: tuple[str, int]  # what accept() returned: the proxy's end of the connection
    header_source: Any
    header_destination: Any


class WhoAmI(ours.StreamRequestHandler):
    """Records the connection; answers a line with the client address it was given."""

    server: Recording

    def handle(self) -> None:
        header = self.server.proxy_header(self.request)
        assert header is not None, "ProxyProtocolMixIn let a connection through without a header"
        self.server.record(Seen(
            header.command, header.version, self.client_address,
            self.server.peer_at_accept(self.request), header.source, header.destination,
        ))
        if header.command == "LOCAL":
            return  # a health check: it sends nothing more and closes
        try:
            line = self.rfile.readline()
        except ConnectionResetError:
            # HAProxy ends each health check with a reset right after the
            # header (seen on 2.6.12); with v1 the probe looks like any client.
            return
        if line:
            host, port = self.client_address[:2]
            self.wfile.write(f"{host} {port}\n".encode())


class Recording(ProxyProtocolMixIn, ours.ThreadingTCPServer):
    """Keeps every connection its handler saw, and every error it would have printed."""

    daemon_threads = False  # server_close() joins the handlers: nothing runs after the test

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Written by the handler threads, read by the test: one lock for both lists.
        self.lock = threading.Condition()
        self.seen: list[Seen] = []
        self.errors: list[str] = []
        # The peer as accept() gave it, for the handler: a health check is
        # reset by HAProxy at once, after which getpeername() fails (ENOTCONN).
        self._peers: weakref.WeakKeyDictionary[Any, tuple[str, int]] = (
            weakref.WeakKeyDictionary()
        )
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[Any, Any]:
        request, peer = super().get_request()
        with self.lock:
            self._peers[request] = peer
        return request, peer

    def peer_at_accept(self, request: Any) -> tuple[str, int]:
        with self.lock:
            return self._peers[request]

    def record(self, seen: Seen) -> None:
        with self.lock:
            self.seen.append(seen)
            self.lock.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.errors.append(f"{client_address}: {traceback.format_exc()}")

    def wait_for(self, predicate: Any, what: str) -> None:
        with self.lock:
            ok = self.lock.wait_for(lambda: predicate(self.seen), WAIT)
            assert ok, f"{what} not seen within {WAIT} s; seen: {self.seen[-10:]}"


class WarningsKept(logging.Handler):
    """The package's log records at WARNING and above (a refused header logs at DEBUG)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []  # appended under the Handler's own lock (emit is locked)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))


@pytest.fixture
def package_warnings() -> Iterator[WarningsKept]:
    kept = WarningsKept()
    logger = logging.getLogger("minisocketserver")
    logger.addHandler(kept)
    try:
        yield kept
    finally:
        logger.removeHandler(kept)


@contextlib.contextmanager
def recording_server(protocol: str) -> Iterator[Recording]:
    server = Recording(("127.0.0.1", 0), WhoAmI)
    server.proxy_protocol = protocol
    with serving(server, poll_interval=0.05):
        yield server


def ask_through(address: tuple[str, int]) -> tuple[int, str]:
    """One connection through the proxy: (our own port, the reply)."""
    with connect(address) as client:
        port = client.getsockname()[1]
        client.sendall(b"who am i?\n")
        return port, recv_until_eof(client).decode()


def clients_through(address: tuple[str, int], count: int = CLIENTS) -> list[tuple[int, str]]:
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        return list(pool.map(lambda _: ask_through(address), range(count)))


def assert_each_client_saw_itself(
    server: Recording, replies: list[tuple[int, str]], version: int, proxy: Any
) -> None:
    """Every reply names its own client's port, and the handler saw each client once."""
    wrong = [(port, reply) for port, reply in replies if reply != f"127.0.0.1 {port}\n"]
    assert not wrong, f"replies naming another address: {wrong[:5]}{proxy.describe()}"
    # The clients' headers name the proxy's frontend as their destination;
    # a v1 probe's names our server (a probe's port may equal a client's:
    # both are ephemeral ports on 127.0.0.1, to different destinations).
    with server.lock:
        clients = [s for s in server.seen if s.header_destination == tuple(proxy.address)]
        errors = list(server.errors)
    assert sorted(s.client_address[1] for s in clients) == sorted(port for port, _ in replies)
    assert {(s.command, s.version) for s in clients} == {("PROXY", version)}
    # The handler's address is the header's source, not what accept() said.
    assert all(tuple(s.client_address) == tuple(s.header_source) for s in clients), clients
    assert errors == [], errors
    # No header from the proxy was refused, its probes' included; each
    # header accepted reached the handler (the server is closed: all ran).
    stats = server.proxy_stats
    assert not any(stats.refused.values()), stats
    with server.lock:
        assert stats.accepted == len(server.seen), stats


# -- HAProxy --------------------------------------------------------------------


@pytest.mark.parametrize(("option", "version"), [("send-proxy", 1), ("send-proxy-v2", 2)])
def test_haproxy_tells_the_handler_each_clients_port(
    option: str, version: int, tmp_path: Path, no_leaks: Resources,
    package_warnings: WarningsKept,
) -> None:
    with recording_server(f"v{version}") as server, \
            haproxy(tmp_path, server.server_address, option) as proxy:
        replies = clients_through(proxy.address)
        proxy.assert_running()
    assert_each_client_saw_itself(server, replies, version, proxy)
    assert package_warnings.records == []


def test_haproxy_v2_health_checks_are_local_connections(
    tmp_path: Path, no_leaks: Resources, package_warnings: WarningsKept
) -> None:
    """``check`` with ``send-proxy-v2``: each probe is a LOCAL header, accepted with its real peer.

    HAProxy marks the server UP (its stats socket says so, with no failed
    check) and the clients' traffic flows between the probes.
    """
    checks = 3
    with recording_server("v2") as server, \
            haproxy(tmp_path, server.server_address, "send-proxy-v2 check inter 100ms") as proxy:
        server.wait_for(
            lambda seen: sum(s.command == "LOCAL" for s in seen) >= checks,
            f"{checks} LOCAL health checks",
        )
        stat = proxy.wait_server_up()
        replies = clients_through(proxy.address)
    assert stat["chkfail"] == "0", stat
    with server.lock:
        local = [s for s in server.seen if s.command == "LOCAL"]
    # LOCAL: the addresses are the connection's own (the spec's rule), so
    # the handler's client_address is HAProxy's end of the probe.
    assert all(s.client_address == s.peer for s in local), local
    assert all(s.version == 2 and s.header_source is None for s in local), local
    assert_each_client_saw_itself(server, replies, 2, proxy)
    assert package_warnings.records == []


def test_haproxy_v1_health_checks_name_their_own_endpoints(
    tmp_path: Path, no_leaks: Resources, package_warnings: WarningsKept
) -> None:
    """``check`` with ``send-proxy``: v1 has no LOCAL; the probe's line names the probe itself."""
    checks = 3
    with recording_server("v1") as server, \
            haproxy(tmp_path, server.server_address, "send-proxy check inter 100ms") as proxy:
        # A probe's header names the very connection it came on: its
        # destination is our server, where a client's is HAProxy's frontend.
        server.wait_for(
            lambda seen: sum(s.header_destination == server.server_address for s in seen)
            >= checks,
            f"{checks} v1 health checks",
        )
        stat = proxy.wait_server_up()
        replies = clients_through(proxy.address)
    assert stat["chkfail"] == "0", stat
    with server.lock:
        probes = [s for s in server.seen if s.header_destination == server.server_address]
    assert all(s.client_address == s.peer for s in probes), probes
    assert_each_client_saw_itself(server, replies, 1, proxy)
    assert package_warnings.records == []


# -- nginx ----------------------------------------------------------------------


def test_nginx_stream_proxy_protocol_tells_the_handler_each_clients_port(
    tmp_path: Path, no_leaks: Resources, package_warnings: WarningsKept
) -> None:
    with recording_server("v1") as server, nginx(tmp_path, server.server_address) as proxy:
        replies = clients_through(proxy.address)
        proxy.assert_running()
    assert_each_client_saw_itself(server, replies, 1, proxy)
    assert package_warnings.records == []


# -- curl -----------------------------------------------------------------------


class Echo(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the client address it was given."""

    def do_GET(self) -> None:
        body = f"{self.client_address[0]} {self.client_address[1]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the test reads the replies, not stderr


class ProxiedHTTP(ProxyProtocolMixIn, ours.ThreadingTCPServer):
    daemon_threads = False


def test_curl_haproxy_protocol_directly(no_leaks: Resources) -> None:
    """curl's ``--haproxy-protocol`` (v1) names its own connection: the handler sees curl's port."""
    with serving(ProxiedHTTP(("127.0.0.1", 0), Echo), poll_interval=0.05) as server:
        host, port = server.server_address
        done = curl("--haproxy-protocol", "-w", " %{local_port}", f"http://{host}:{port}/")
    assert done.returncode == 0, done.stderr
    seen_host, seen_port, curl_port = done.stdout.split()
    assert (seen_host, seen_port) == ("127.0.0.1", curl_port)


def test_curl_through_haproxy_http_mode(tmp_path: Path, no_leaks: Resources) -> None:
    """HAProxy in ``mode http`` with ``send-proxy``: the HTTP handler sees curl's port."""
    with serving(ProxiedHTTP(("127.0.0.1", 0), Echo), poll_interval=0.05) as server, \
            haproxy(tmp_path, server.server_address, "send-proxy", mode="http") as proxy:
        host, port = proxy.address
        done = curl("-w", " %{local_port}", f"http://{host}:{port}/")
    assert done.returncode == 0, f"{done.stderr}{proxy.describe()}"
    seen_host, seen_port, curl_port = done.stdout.split()
    assert (seen_host, seen_port) == ("127.0.0.1", curl_port)


# -- pre-forked, behind HAProxy: `serve --workers 2` -------------------------------
#
# The master runs as its own program (it must own a process's main thread),
# started by the test on a listener the test bound: ``--bind fd:N``.  Its
# stderr is read by a thread into ``MasterLog``, line by line, so the test
# waits on the lines PreforkMixIn logs ("prefork: worker N started",
# "prefork: worker N exited ...") instead of sleeping, and the pipe never
# fills however much it logs.

TESTS = Path(__file__).parent
STARTED = re.compile(r"prefork: worker (\d+) started")
EXITED = re.compile(r"prefork: worker (\d+) exited")
RESTART_DONE = "prefork: rolling restart done"


class MasterLog:
    """The lines the master group writes on stderr; ``lock`` guards ``lines``."""

    def __init__(self, stream: Any) -> None:
        self.lock = threading.Condition()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(stream,), name="master-log")
        self._reader.start()

    def _read(self, stream: Any) -> None:
        # EOF once every process holding the pipe (masters, workers) is gone.
        with stream:
            for raw in stream:
                with self.lock:
                    self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                    self.lock.notify_all()

    def join(self) -> None:
        self._reader.join(WAIT)
        assert not self._reader.is_alive(), f"a process still holds the log pipe:{self.tail()}"

    def tail(self, count: int = 40) -> str:
        with self.lock:
            return "\n" + "\n".join(self.lines[-count:])

    def started(self) -> list[int]:
        with self.lock:
            return [int(m[1]) for line in self.lines if (m := STARTED.search(line))]

    def exited(self) -> list[int]:
        with self.lock:
            return [int(m[1]) for line in self.lines if (m := EXITED.search(line))]

    def count(self, text: str) -> int:
        with self.lock:
            return sum(text in line for line in self.lines)

    def live(self) -> list[int]:
        """The workers started and not yet logged as exited, oldest first."""
        gone = set(self.exited())
        return [pid for pid in self.started() if pid not in gone]

    def wait_for(self, predicate: Any, what: str, timeout: float = WAIT) -> None:
        with self.lock:
            ok = self.lock.wait_for(predicate, timeout)
        assert ok, f"{what}: not logged within {timeout} s{self.tail()}"


def _parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def still_running(pids: list[int], timeout: float) -> list[int]:
    """Which of ``pids`` have not exited after ``timeout`` seconds (waited on pidfds).

    A pidfd becomes readable when its process exits, whoever its parent is
    (the workers of a killed master belong to init, not to us), so this
    waits on events, not by polling /proc.
    """
    fds: dict[int, int] = {}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            fds[os.pidfd_open(pid)] = pid
    try:
        deadline = time.monotonic() + timeout
        pending = set(fds)
        while pending:
            remaining = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select(list(pending), [], [], remaining)
            if not ready:
                break
            pending -= set(ready)
        return sorted(fds[fd] for fd in pending)
    finally:
        for fd in fds:
            os.close(fd)


class Group:
    """A ``serve --workers N`` process group started by the test, and everything it logged."""

    def __init__(self, proc: subprocess.Popen[bytes], workers: int) -> None:
        self.proc = proc
        self.workers = workers
        self.log = MasterLog(proc.stderr)
        self.masters = [proc.pid]  # the current master last (SIGUSR2 makes a new one)

    @property
    def master(self) -> int:
        return self.masters[-1]

    def wait_serving(self, exclude: Collection[int] = ()) -> list[int]:
        """Until ``workers`` workers not in ``exclude`` are live and the old ones gone; them."""
        def settled() -> bool:
            live = self.log.live()
            return len(live) == self.workers and set(live).isdisjoint(exclude)

        self.log.wait_for(settled, f"{self.workers} new workers serving")
        return self.log.live()

    def stop(self) -> None:
        """SIGTERM to every master still there, then every worker ever started must be gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        # A master made by SIGUSR2 is not our child: signalled by the pid
        # read from /proc while it ran (still_running() below waits for it).
        for master in self.masters[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(master, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(WAIT)
        everyone = self.masters + self.log.started()
        left = still_running(everyone, WAIT)
        for pid in left:  # processes this test started, transitively
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        self.log.join()
        assert left == [], f"still running {WAIT} s after SIGTERM: {left}{self.log.tail()}"


@contextlib.contextmanager
def prefork_group(listener: socket.socket, *options: str, workers: int = 2) -> Iterator[Group]:
    """``python -m minisocketserver serve prefork_load:WhoAmI`` on ``listener``, for the block."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
    ))
    env = {k: v for k, v in env.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "minisocketserver", "serve", "prefork_load:WhoAmI",
         "--model", "threading", "--bind", f"fd:{listener.fileno()}",
         "--workers", str(workers), *options],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        pass_fds=[listener.fileno()], env=env,
    )
    group = Group(proc, workers)
    try:
        yield group
    finally:
        group.stop()


@pytest.mark.parametrize("front", ["haproxy send-proxy", "haproxy send-proxy-v2", "nginx"])
def test_prefork_behind_a_proxy_sees_each_clients_port(
    front: str, tmp_path: Path, no_leaks: Resources
) -> None:
    """Two pre-forked workers behind each proxy: every reply names its own client's port.

    HAProxy also probes the server (``check``): v2's LOCAL probes and v1's
    lines must not upset the workers (nothing above INFO in their log, no
    traceback) and HAProxy must see the server UP with no failed check.
    """
    requests = 200
    kind, _, option = front.partition(" ")
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(loopback_listener())
        version = "v2" if option.endswith("v2") else "v1"
        group = stack.enter_context(prefork_group(listener, "--proxy-protocol", version))
        workers = group.wait_serving()
        if kind == "haproxy":
            proxy: Any = stack.enter_context(haproxy(
                tmp_path, listener.getsockname(), f"{option} check inter 100ms"
            ))
        else:
            proxy = stack.enter_context(nginx(tmp_path, listener.getsockname()))
        load = Load(proxy.address, threads=CLIENT_THREADS, max_requests=requests)
        load.start()
        try:
            assert load.wait_for_requests(requests, WAIT), load.figures()
        finally:
            load.stop()
        if kind == "haproxy":
            stat = proxy.wait_server_up()
            assert stat["chkfail"] == "0", f"{stat}{proxy.describe()}"
        figures = load.figures()
        assert load.failed == [] and figures["refused"] == 0, \
            f"{figures} {load.failed[:5]}{proxy.describe()}{group.log.tail()}"
        assert figures["ok"] == requests
        assert set(figures["served_by"]) <= set(workers)
    with group.log.lock:
        loud = [line for line in group.log.lines if " INFO " not in line]
    assert loud == [], "\n".join(loud)


def test_prefork_behind_haproxy_restarts_under_load_refusing_nothing(
    tmp_path: Path, no_leaks: Resources
) -> None:
    """5 SIGHUPs and 1 SIGUSR2 to the master while requests flow through HAProxy: none lost.

    Each signal is sent once the log says the previous restart finished (all
    the workers replaced) and the new workers have answered PER_GENERATION
    requests, so the load runs through every restart.  HAProxy's
    ``retries 0`` makes a connection the server refuses or drops a failed
    request instead of a silent retry, and its stats count them on its side
    too (``econ``: connect errors, ``eresp``: dropped responses).
    """
    hups, per_generation, at_least = 5, 100, 2000
    with loopback_listener() as listener, \
            prefork_group(listener, "--proxy-protocol", "v2", "--graceful-timeout", "5") as group, \
            haproxy(tmp_path, listener.getsockname(),
                    "send-proxy-v2 check inter 200ms") as proxy:
        generations = [group.wait_serving()]
        load = Load(proxy.address, threads=2, max_requests=20_000, max_seconds=40.0)
        load.start()
        began = time.monotonic()
        try:
            for hup in range(1, hups + 2):
                assert load.wait_for_replies_from(set(generations[-1]), per_generation, WAIT), \
                    f"{load.figures()}{group.log.tail()}"
                if hup <= hups:
                    os.kill(group.master, signal.SIGHUP)
                    # Finished: the master says so, and every old worker has exited.
                    group.log.wait_for(lambda: group.log.count(RESTART_DONE) >= hup,  # noqa: B023
                                       f"restart {hup} done")
                    generations.append(group.wait_serving(exclude=set(generations[-1])))
            old_master = group.master
            os.kill(old_master, signal.SIGUSR2)
            group.proc.wait(WAIT)  # the old master leaves once the new one serves
            generations.append(group.wait_serving(exclude=set(generations[-1])))
            group.masters.append(_parent_of(generations[-1][0]))
            assert group.master != old_master
            restarts = time.monotonic() - began
            assert load.wait_for_replies_from(set(generations[-1]), per_generation, WAIT), \
                f"{load.figures()}{group.log.tail()}"
            assert load.wait_for_requests(at_least, WAIT), load.figures()
        finally:
            load.stop()
        stat = proxy.server_stat()
    figures = load.figures()
    print(f"\nrestart under load: {hups} SIGHUP + 1 SIGUSR2 in {restarts:.2f} s; {figures};"
          f" HAProxy econ={stat['econ']} eresp={stat['eresp']} chkfail={stat['chkfail']}")
    ports = [f.split(":")[0].removeprefix("port ") for f in load.failed]
    seen_by_haproxy = [
        line for line in proxy.log_text().splitlines()
        if any(f"127.0.0.1:{port} " in line for port in ports)
    ]
    assert load.failed == [], f"{load.failed[:10]}\nHAProxy's log: {seen_by_haproxy[:10]}" \
        f"{group.log.tail(80)}"
    assert figures["refused"] == 0
    assert (stat["econ"], stat["eresp"], stat["chkfail"]) == ("0", "0", "0"), stat
    assert len(generations) == hups + 2
    everyone = [pid for generation in generations for pid in generation]
    assert len(set(everyone)) == len(everyone), f"a pid served in two generations: {generations}"
    assert all(figures["served_by"].get(pid, 0) > 0 for pid in everyone), figures
    assert sum(figures["served_by"].values()) == figures["ok"] == figures["requests"]
    with group.log.lock:
        loud = [line for line in group.log.lines if " INFO " not in line]
    assert loud == [], "\n".join(loud)


def test_a_stopped_worker_is_replaced_within_worker_timeout(no_leaks: Resources) -> None:
    """``kill -STOP`` on a worker: its heartbeat stops, the master kills and replaces it."""
    timeout = 2.0
    with loopback_listener() as listener, \
            prefork_group(listener, "--proxy-protocol", "v2", "--timeout", str(timeout)) as group:
        victim, survivor = group.wait_serving()
        stopped = time.monotonic()
        os.kill(victim, signal.SIGSTOP)
        group.log.wait_for(lambda: victim in group.log.exited() and len(group.log.live()) == 2,
                           f"worker {victim} replaced", timeout + WAIT)
        replaced = time.monotonic() - stopped
        live = group.log.live()
    print(f"\nSIGSTOP worker replaced after {replaced:.2f} s (worker_timeout {timeout} s)")
    assert survivor in live and victim not in live
    with group.log.lock:
        how = [line for line in group.log.lines if f"worker {victim} exited" in line]
    assert len(how) == 1 and "(signal 9)" in how[0], how
    # The master checks the heartbeats on its supervision tick: allow it one.
    assert replaced < timeout + 1.0, f"{replaced:.2f} s{group.log.tail()}"


def test_killing_the_master_leaves_no_worker_behind(no_leaks: Resources) -> None:
    with loopback_listener() as listener, \
            prefork_group(listener, "--proxy-protocol", "v2") as group:
        workers = group.wait_serving()
        killed = time.monotonic()
        group.proc.kill()
        group.proc.wait(WAIT)
        left = still_running(workers, WAIT)
        gone_after = time.monotonic() - killed
    print(f"\nworkers gone {gone_after:.2f} s after SIGKILL of the master")
    assert left == [], f"workers {left} outlived their master{group.log.tail()}"
