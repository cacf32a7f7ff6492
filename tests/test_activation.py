"""Listeners the server did not bind (issue 12, item 3).

``from_socket()`` adopts a bound, listening socket on every model;
``listen_fds_with_names()`` takes them in systemd's protocol and ``notify()``
speaks its readiness protocol.  The protocol tests run real processes:
``systemd-socket-activate`` (the systemd package's tool for exactly this),
and the test itself as a supervisor that keeps a listener open while it
restarts the server under a stream of clients.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import (
    WAIT,
    Resources,
    connect,
    has_ipv6_loopback,
    open_fds,
    recv_until_eof,
    serving,
)

import minisocketserver as ours

TESTS = Path(__file__).parent
SERVER_SCRIPT = str(TESTS / "activation_server.py")
LAUNCHER = str(TESTS / "activation_launcher.py")


HAS_IPV6 = has_ipv6_loopback()


# -- from_socket() ----------------------------------------------------------


class SpySocket(socket.socket):
    """A socket that records bind() and listen(): the server must call neither."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[str] = []

    def bind(self, address: Any) -> None:
        self.calls.append("bind")
        super().bind(address)

    def listen(self, *backlog: int) -> None:
        self.calls.append("listen")
        super().listen(*backlog)


class StreamUpper(ours.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


class DatagramUpper(ours.DatagramRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.read().upper())


class LineUpper(ours.LineRequestHandler):
    def line_received(self, line: bytes) -> None:
        self.send(line.upper())
        self.close()


def _bound(kind: str, tmp_path: Path) -> SpySocket:
    """A socket of ``kind``, bound (and listening, for streams), its calls then forgotten."""
    family, type_, address = {
        "tcp": (socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0)),
        "tcp6": (socket.AF_INET6, socket.SOCK_STREAM, ("::1", 0)),
        "udp": (socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0)),
        "unix": (socket.AF_UNIX, socket.SOCK_STREAM, str(tmp_path / "s")),
        "unixdgram": (socket.AF_UNIX, socket.SOCK_DGRAM, str(tmp_path / "s")),
    }[kind]
    sock = SpySocket(family, type_)
    sock.bind(address)
    if type_ == socket.SOCK_STREAM:
        sock.listen()
    sock.calls.clear()
    return sock


def _exchange(kind: str, address: Any, tmp_path: Path) -> bytes:
    """Send one request to a server of ``kind``; return its reply."""
    if kind in ("tcp", "tcp6", "unix"):
        family = {"tcp": socket.AF_INET, "tcp6": socket.AF_INET6, "unix": socket.AF_UNIX}[kind]
        with connect(address, family) as client:
            client.sendall(b"adopted\n")
            return recv_until_eof(client)
    family = socket.AF_UNIX if kind == "unixdgram" else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as client:
        client.settimeout(WAIT)
        if family == socket.AF_UNIX:
            client.bind(str(tmp_path / "client"))  # so the reply has somewhere to go
        client.sendto(b"adopted\n", address)
        return client.recv(65536)


MODELS = [
    ("TCPServer", "tcp"),
    ("ThreadingTCPServer", "tcp"),
    ("ThreadPoolTCPServer", "tcp"),
    ("ForkingTCPServer", "tcp"),
    ("MultiplexingTCPServer", "tcp"),
    ("ThreadingTCPServer", "tcp6"),
    ("UDPServer", "udp"),
    ("ThreadingUDPServer", "udp"),
    ("ForkingUDPServer", "udp"),
    ("UnixStreamServer", "unix"),
    ("ThreadingUnixStreamServer", "unix"),
    ("ThreadPoolUnixStreamServer", "unix"),
    ("ForkingUnixStreamServer", "unix"),
    ("MultiplexingUnixStreamServer", "unix"),
    ("UnixDatagramServer", "unixdgram"),
    ("ThreadingUnixDatagramServer", "unixdgram"),
    ("ForkingUnixDatagramServer", "unixdgram"),
]


@pytest.mark.parametrize(("name", "kind"), MODELS)
def test_from_socket_serves_the_socket_as_it_is_on_every_model(
    name: str, kind: str, tmp_path: Path, no_leaks: Resources
) -> None:
    if kind == "tcp6" and not HAS_IPV6:
        pytest.skip("this machine has no IPv6 loopback (::1)")
    cls = getattr(ours, name)
    handler = (
        LineUpper if name.startswith("Multiplexing")
        else DatagramUpper if kind in ("udp", "unixdgram")
        else StreamUpper
    )
    sock = _bound(kind, tmp_path)
    fds_before = open_fds()
    server = cls.from_socket(sock, handler)
    # No socket was opened (and none thrown away: the descriptor set is
    # the same), and the adopted one was neither bound nor put to listen.
    assert open_fds() == fds_before
    assert server.socket is sock
    assert sock.calls == []
    assert server.server_address == sock.getsockname()
    assert server.address_family == sock.family
    with serving(server):
        assert _exchange(kind, server.server_address, tmp_path) == b"ADOPTED\n"
    assert sock.fileno() == -1, "server_close() closes the adopted socket"


def test_from_socket_passes_keywords_to_a_subclass_constructor(no_leaks: Resources) -> None:
    class Tagged(ours.ThreadingTCPServer):
        def __init__(
            self, server_address: Any, handler: Any, bind_and_activate: bool = True, *, tag: str
        ) -> None:
            self.tag = tag
            super().__init__(server_address, handler, bind_and_activate)

    with socket.create_server(("127.0.0.1", 0)) as sock:
        server = Tagged.from_socket(sock, StreamUpper, tag="blue")
        assert server.tag == "blue"
        with serving(server):
            assert _exchange("tcp", server.server_address, Path()) == b"ADOPTED\n"


def test_from_socket_runs_the_server_bind_of_subclasses(no_leaks: Resources) -> None:
    """http.server and wsgiref learn their name and port in server_bind(): it still runs."""

    class Named(ours.TCPServer):
        def server_bind(self) -> None:
            super().server_bind()
            self.server_port = self.server_address[1]

    sock = socket.create_server(("127.0.0.1", 0))
    with Named.from_socket(sock, StreamUpper) as server:
        assert server.server_port == sock.getsockname()[1]


def test_an_ipv4_class_adopts_an_ipv6_socket_and_the_reverse(no_leaks: Resources) -> None:
    if not HAS_IPV6:
        pytest.skip("this machine has no IPv6 loopback (::1)")

    class Six(ours.TCPServer):
        address_family = socket.AF_INET6
        dualstack_ipv6 = True  # concerns sockets the server opens, not adopted ones

    six = socket.create_server(("::1", 0), family=socket.AF_INET6)
    with ours.TCPServer.from_socket(six, StreamUpper) as server:
        assert server.address_family == socket.AF_INET6
    four = socket.create_server(("127.0.0.1", 0))
    with Six.from_socket(four, StreamUpper) as server:
        assert server.address_family == socket.AF_INET
        assert ours.TCPServer.address_family == socket.AF_INET  # the class is untouched


def _unbound(family: int, type_: int) -> socket.socket:
    return socket.socket(family, type_)


def _bound_not_listening(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.mark.parametrize(
    ("cls_name", "make", "message"),
    [
        ("UnixStreamServer", lambda p: socket.create_server(("127.0.0.1", 0)),
         "UnixStreamServer serves AF_UNIX sockets, not AF_INET"),
        ("TCPServer", lambda p: _bound("unix", p),
         "TCPServer serves AF_INET or AF_INET6 sockets, not AF_UNIX"),
        ("TCPServer", lambda p: _bound("udp", p),
         "TCPServer serves SOCK_STREAM sockets, not SOCK_DGRAM"),
        ("UDPServer", lambda p: socket.create_server(("127.0.0.1", 0)),
         "UDPServer serves SOCK_DGRAM sockets, not SOCK_STREAM"),
        ("UnixDatagramServer", lambda p: _bound("unix", p),
         "UnixDatagramServer serves SOCK_DGRAM sockets, not SOCK_STREAM"),
        ("TCPServer", _bound_not_listening, "the socket is not listening"),
        ("UDPServer", lambda p: _unbound(socket.AF_INET, socket.SOCK_DGRAM),
         "the socket is not bound"),
        ("UnixDatagramServer", lambda p: _unbound(socket.AF_UNIX, socket.SOCK_DGRAM),
         "the socket is not bound"),
    ],
)
def test_from_socket_refuses_a_socket_the_class_cannot_serve(
    cls_name: str, make: Any, message: str, tmp_path: Path, no_leaks: Resources
) -> None:
    with make(tmp_path) as sock:
        fds_before = open_fds()
        with pytest.raises(ValueError, match=message):
            getattr(ours, cls_name).from_socket(sock, StreamUpper)
        assert open_fds() == fds_before
        assert sock.fileno() != -1, "a refused socket is left to its owner, open"


def test_from_socket_refuses_a_closed_socket(no_leaks: Resources) -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.close()
    with pytest.raises(ValueError, match="the socket is closed"):
        ours.TCPServer.from_socket(sock, StreamUpper)


def test_a_failing_constructor_closes_the_adopted_socket(no_leaks: Resources) -> None:
    """Once the checks pass the server owns the socket, as it owns one it opened."""

    class Broken(ours.TCPServer):
        def server_bind(self) -> None:
            raise RuntimeError("no")

    sock = socket.create_server(("127.0.0.1", 0))
    with pytest.raises(RuntimeError):
        Broken.from_socket(sock, StreamUpper)
    assert sock.fileno() == -1


# -- listen_fds_with_names(): the environment side, in this process ----------


@pytest.fixture
def listen_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean slate: no LISTEN_* variable, whatever ran this test."""
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _listen_vars() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("LISTEN_")}


def test_nothing_is_inherited_without_the_variables(listen_env: pytest.MonkeyPatch) -> None:
    assert ours.listen_fds() == []
    assert ours.listen_fds_with_names() == []


@pytest.mark.parametrize("unset", [True, False])
def test_variables_for_another_process_are_not_ours(
    unset: bool, listen_env: pytest.MonkeyPatch
) -> None:
    """Inherited from an ancestor that did not take them: no sockets, whatever fd 3 is."""
    other = {"LISTEN_PID": str(os.getppid()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}
    for name, value in other.items():
        listen_env.setenv(name, value)
    assert ours.listen_fds_with_names(unset_environment=unset) == []
    assert _listen_vars() == ({} if unset else other)


def test_zero_descriptors(listen_env: pytest.MonkeyPatch) -> None:
    listen_env.setenv("LISTEN_PID", str(os.getpid()))
    listen_env.setenv("LISTEN_FDS", "0")
    assert ours.listen_fds() == []
    assert _listen_vars() == {}


@pytest.mark.parametrize(("pid", "count"), [("abc", "1"), ("{pid}", "-1"), ("{pid}", "two")])
def test_malformed_variables_are_a_value_error_and_are_removed(
    pid: str, count: str, listen_env: pytest.MonkeyPatch
) -> None:
    listen_env.setenv("LISTEN_PID", pid.format(pid=os.getpid()))
    listen_env.setenv("LISTEN_FDS", count)
    with pytest.raises(ValueError, match="malformed"):
        ours.listen_fds()
    assert _listen_vars() == {}


# -- listen_fds_with_names(): real descriptors, in a launched process --------

PROBE = """
import json, os, socket, sys
import minisocketserver
try:
    pairs = minisocketserver.listen_fds_with_names()
except ValueError as exc:
    env = sorted(k for k in os.environ if k.startswith("LISTEN_"))
    print(json.dumps({"error": str(exc), "env": env}))
    sys.exit(0)
print(json.dumps({
    "found": [[name, s.fileno(), s.family.name, s.type.name, os.get_inheritable(s.fileno())]
              for name, s in pairs],
    "addresses": [s.getsockname() for _, s in pairs],
    "env": sorted(k for k in os.environ if k.startswith("LISTEN_")),
    "again": len(minisocketserver.listen_fds()),
}))
"""


def _launch(fds: list[int], args: list[str], **env: str) -> subprocess.Popen[bytes]:
    """Run ``args`` with ``fds`` at 3, 4, ... and LISTEN_* set, as a service manager would."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    environ.update(env)
    return subprocess.Popen(
        [sys.executable, LAUNCHER, ",".join(map(str, fds)), *args],
        pass_fds=fds, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )


def _probe(fds: list[int], **env: str) -> dict[str, Any]:
    proc = _launch(fds, [sys.executable, "-c", PROBE], **env)
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err.decode()
    result: dict[str, Any] = json.loads(out)
    return result


def test_listen_fds_takes_every_family_and_type(tmp_path: Path, no_leaks: Resources) -> None:
    kinds = ["tcp", "udp", "unix", "unixdgram"] + (["tcp6"] if HAS_IPV6 else [])
    socks = []
    for index, kind in enumerate(kinds):
        (tmp_path / str(index)).mkdir()  # one directory per Unix socket path
        socks.append(_bound(kind, tmp_path / str(index)))
    addresses = [s.getsockname() for s in socks]
    with contextlib.ExitStack() as stack:
        for sock in socks:
            stack.enter_context(sock)
        # Fewer names than descriptors, and a name used twice.
        result = _probe([s.fileno() for s in socks], LISTEN_FDNAMES="web:web:admin")
    expected_names = ["web", "web", "admin"] + ["unknown"] * (len(kinds) - 3)
    assert result["found"] == [
        [name, 3 + i, s.family.name, s.type.name, False]
        for i, (name, s) in enumerate(zip(expected_names, socks, strict=True))
    ]
    assert [tuple(a) if isinstance(a, list) else a for a in result["addresses"]] == addresses
    assert result["env"] == [], "the variables must not reach the server's children"
    assert result["again"] == 0


def test_a_descriptor_that_is_not_a_socket_is_a_clear_error(no_leaks: Resources) -> None:
    read_end, write_end = os.pipe()
    try:
        result = _probe([read_end])
    finally:
        os.close(read_end)
        os.close(write_end)
    assert result == {"error": "LISTEN_FDS: descriptor 3 is not a socket", "env": []}


def test_fewer_descriptors_than_announced_is_a_clear_error(no_leaks: Resources) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        proc = _launch([sock.fileno()], [sys.executable, "-c", PROBE.replace(
            "import minisocketserver", "import minisocketserver; os.environ['LISTEN_FDS'] = '3'"
        )])
        out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 0, err.decode()
    assert json.loads(out) == {"error": "LISTEN_FDS=3, but descriptor 4 is not open", "env": []}


# -- notify() ---------------------------------------------------------------


def test_notify_does_nothing_without_a_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert ours.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert ours.notify("READY=1") is False


@pytest.mark.parametrize("namespace", ["path", "abstract"])
def test_notify_sends_one_datagram_per_state(
    namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_leaks: Resources
) -> None:
    if namespace == "abstract" and sys.platform != "linux":
        pytest.skip("the abstract namespace is Linux's")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        if namespace == "path":
            manager.bind(str(tmp_path / "notify"))
            monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        else:
            name = f"minisocketserver-test-{os.getpid()}-{random.getrandbits(64):x}"
            manager.bind("\0" + name)
            monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        manager.settimeout(WAIT)
        assert ours.notify("READY=1") is True
        assert ours.notify("STOPPING=1", unset_environment=True) is True
        assert "NOTIFY_SOCKET" not in os.environ
        assert ours.notify("READY=1") is False
        assert [manager.recv(4096), manager.recv(4096)] == [b"READY=1", b"STOPPING=1"]


def test_notify_to_a_manager_that_is_gone_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody"))
    with pytest.raises(OSError):
        ours.notify("READY=1")


# -- the real thing: systemd-socket-activate ----------------------------------

ACTIVATE = shutil.which("systemd-socket-activate")


def _need_activate() -> str:
    if ACTIVATE is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-socket-activate is missing: CI installs the systemd package")
        pytest.skip("systemd-socket-activate is not installed (Debian package: systemd)")
    return ACTIVATE


class LineReader:
    """Lines from a child's pipe, each read bounded by a deadline (no blocking readline)."""

    def __init__(self, stream: Any) -> None:
        self._fd = stream.fileno()
        self._buffer = b""
        self.seen: list[str] = []  # every line, for failure messages

    def line(self, deadline: float) -> str:
        with selectors.DefaultSelector() as selector:
            selector.register(self._fd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    raise AssertionError(f"no line before the deadline; so far: {self.seen}")
                chunk = os.read(self._fd, 65536)
                if not chunk:
                    raise AssertionError(f"the pipe closed; lines so far: {self.seen}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        self.seen.append(line.decode())
        return line.decode()


def _unused_port(families: list[int]) -> int:
    """A port free on 127.0.0.1 (and ::1) now, from below the kernel's ephemeral range.

    systemd-socket-activate takes no port 0, so the test names a port.  The
    kernel hands out ephemeral ports (port 0, outgoing connections) from
    ip_local_port_range (32768-60999 by default), which is where every other
    test and program on this machine gets its ports; a port below it can be
    taken between our check and the activator's bind() only by a process
    that names that very port.  Should that happen, the activator fails
    with EADDRINUSE and the test says so: it is not retried.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    hosts = {socket.AF_INET: "127.0.0.1", socket.AF_INET6: "::1"}
    for port in random.sample(range(20000, min(low, 32768)), 200):
        try:
            for family in families:
                with socket.socket(family, socket.SOCK_STREAM) as probe:
                    probe.bind((hosts[family], port))
        except OSError:
            continue
        return port
    raise AssertionError("no free port in 20000-32767 after 200 tries")


@contextlib.contextmanager
def _stopped_at_exit(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """SIGTERM to our child on the way out, then wait for it (bounded)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(WAIT)
            raise
        finally:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


def _ask_name(family: int, address: Any) -> str:
    with connect(address, family) as client:
        client.sendall(b"who?\n")
        return recv_until_eof(client).decode().strip()


def test_systemd_socket_activate_tcp_ipv6_and_unix(tmp_path: Path, no_leaks: Resources) -> None:
    activate = _need_activate()
    families = [socket.AF_INET] + ([socket.AF_INET6] if HAS_IPV6 else [])
    port = _unused_port(families)
    unix_path = str(tmp_path / "admin.sock")
    listeners = [(socket.AF_INET, ("127.0.0.1", port), f"127.0.0.1:{port}", "web")]
    if HAS_IPV6:
        listeners.append((socket.AF_INET6, ("::1", port), f"[::1]:{port}", "web"))
    listeners.append((socket.AF_UNIX, unix_path, unix_path, "admin"))
    args = [activate]
    for _, _, spec, _ in listeners:
        args += ["-l", spec]
    args += ["--fdname=" + ":".join(name for *_, name in listeners)]
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "NOTIFY_"))}
    proc = subprocess.Popen(
        [*args, sys.executable, SERVER_SCRIPT],
        env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    with _stopped_at_exit(proc):
        deadline = time.monotonic() + WAIT
        stderr, stdout = LineReader(proc.stderr), LineReader(proc.stdout)
        # The activator binds, listens and says so; it starts the server
        # only when the first client arrives (that client waits in the
        # backlog meanwhile).
        for _ in listeners:
            assert stderr.line(deadline).startswith("Listening on "), stderr.seen
        replies = [_ask_name(family, address) for family, address, _, _ in listeners]
        report = json.loads(stdout.line(deadline))
    assert proc.returncode == 0, stderr.seen
    # exec(): the server is the activator's process, so LISTEN_PID was its pid.
    assert replies == [f"{name} {proc.pid}" for *_, name in listeners]
    assert report["pid"] == proc.pid
    assert report["names"] == [name for *_, name in listeners]
    assert report["fds"] == [3 + i for i in range(len(listeners))]
    assert report["families"] == [socket.AddressFamily(f).name for f, *_ in listeners]
    assert report["new_sockets"] == [], "the server opened a socket of its own"
    assert report["inheritable"] == [False] * len(listeners)
    assert report["listen_vars_here"] == []
    assert report["listen_vars_in_child"] == []


# -- restarting under load: the listener outlives the server process ----------


def test_restarting_the_server_under_a_stream_of_clients_refuses_none(
    tmp_path: Path, no_leaks: Resources
) -> None:
    """The test plays the service manager: it holds the listener across three server processes.

    While a client connects in a loop, each generation is stopped (SIGTERM:
    it finishes what it accepted and exits) and the next one started from
    the same inherited socket.  Between the two no process accepts, but
    the socket stays open, so the kernel queues the connections instead of
    refusing them, and the next generation serves them.
    """
    generations, per_generation, max_requests = 3, 50, 3000
    served: list[int] = []  # pids, in reply order; appended by the client thread only
    failures: list[str] = []  # likewise
    progress = threading.Condition()
    stop = threading.Event()

    def clients(address: Any) -> None:
        for _ in range(max_requests):
            if stop.is_set():
                return
            try:
                _, pid = _ask_name(socket.AF_INET, address).split()
            except OSError as exc:  # ConnectionRefusedError is what must not happen
                with progress:
                    failures.append(repr(exc))
                    progress.notify_all()
                return
            with progress:
                served.append(int(pid))
                progress.notify_all()

    def wait_for(pid: int) -> None:
        with progress:
            ok = progress.wait_for(
                lambda: served.count(pid) >= per_generation or bool(failures), WAIT
            )
        assert ok and not failures, f"{served.count(pid)} replies from {pid}; {failures[:3]}"

    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        manager = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        manager.bind(str(tmp_path / "notify"))
        manager.settimeout(WAIT)
        client = threading.Thread(target=clients, args=(listener.getsockname(),))
        pids, reports, notes = [], [], []
        for generation in range(generations):
            proc = _launch(
                [listener.fileno()], [sys.executable, SERVER_SCRIPT],
                LISTEN_FDNAMES="web", NOTIFY_SOCKET=str(tmp_path / "notify"),
            )
            with _stopped_at_exit(proc):
                pids.append(proc.pid)
                if generation == 0:
                    client.start()
                wait_for(proc.pid)
                if generation == generations - 1:
                    # The last generation serves the request in flight; the
                    # client sees the flag before its next connect.
                    stop.set()
                    client.join(WAIT)
                    assert not client.is_alive()
                proc.send_signal(signal.SIGTERM)
                out, err = proc.communicate(timeout=WAIT)
            assert proc.returncode == 0, err.decode()
            reports.append(json.loads(out))
            notes += [manager.recv(4096), manager.recv(4096)]
    assert failures == []
    assert [pid for pid in pids if served.count(pid) >= per_generation] == pids
    assert set(served) == set(pids)
    assert [r["fds"] for r in reports] == [[3]] * generations
    assert all(r["new_sockets"] == [] for r in reports)
    assert notes == [b"READY=1", b"STOPPING=1"] * generations
