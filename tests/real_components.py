"""The real HAProxy and nginx, started by the tests as ordinary processes (issue 13, item 4).

Each component runs in the foreground from a configuration generated into
the test's temporary directory, is stopped by its pid (SIGTERM, a bounded
wait, then SIGKILL), and has its log kept in a file that failure messages
quote.  Nothing here touches a system service: no daemon mode, no pid file
or socket outside the temporary directory.

Ports.  The frontends listen on sockets the test binds itself (port 0 on
127.0.0.1, so the kernel picks a free port) and hands to the component:
HAProxy takes an inherited listener as ``bind fd@N``; nginx takes them from
its ``NGINX`` environment variable (the variable its own binary upgrade
uses).  So no port is chosen and then bound by someone else in between,
and a client may connect as soon as the component is started: the kernel
queues the connection in the listener's backlog until the component
accepts it.  nginx 1.22 crashes (SIGSEGV) when it inherits a socket with
``master_process off``, so it runs with a master and one worker; the worker
drops root for ``nobody``, which is harmless as it logs to the master's
stderr and writes nothing else.

Binaries.  When one is missing the test skips with the Debian package to
install, except under CI (``CI`` set, as .ci/run does), where a missing
binary is a failure: CI installs them.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support import WAIT

#: Where Debian puts nginx's dynamic modules (libnginx-mod-stream ships
#: ngx_stream_module.so there).
NGINX_MODULES = Path("/usr/lib/nginx/modules")


def need(program: str, package: str) -> str:
    """The path of ``program``; skip (fail under CI) when it is not installed."""
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        missing = f"{program} is not installed (Debian package: {package})"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: .ci/run installs it")
        pytest.skip(missing)
    return path


def loopback_listener() -> socket.socket:
    """A listening TCP socket on 127.0.0.1, on a port the kernel chose, inheritable."""
    sock = socket.create_server(("127.0.0.1", 0), backlog=128)
    sock.set_inheritable(True)
    return sock


def _children(pid: int) -> list[int]:
    """The pids of ``pid``'s children now (nginx's worker, for one)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
    return found


@dataclass
class Component:
    """One running program we started: its process, its configuration and its log."""

    name: str
    proc: subprocess.Popen[bytes]
    config: Path
    log: Path
    extra: dict[str, Path] = field(default_factory=dict)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def describe(self) -> str:
        """The configuration and the log, for an assertion message."""
        return (
            f"\n--- {self.name} configuration ({self.config}):\n{self.config.read_text()}"
            f"\n--- {self.name} log ({self.log}):\n{self.log_text()[-4000:]}"
        )

    def assert_running(self) -> None:
        code = self.proc.poll()
        assert code is None, f"{self.name} exited with {code}{self.describe()}"

    def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL to it and to the children it left.

        SIGTERM is a fast stop for both programs (HAProxy closes its
        connections, nginx's master stops its worker and waits for it).
        """
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(WAIT)
        except subprocess.TimeoutExpired as exc:
            # Only children of a process we started: nginx's worker would
            # otherwise outlive a master killed before it could stop it.
            for child in _children(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(WAIT)
            raise AssertionError(
                f"{self.name} ignored SIGTERM for {WAIT} s{self.describe()}"
            ) from exc


def _start(
    name: str, argv: list[str], config: Path, log: Path, inherited: list[socket.socket],
    env: dict[str, str] | None = None,
) -> Component:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            pass_fds=[s.fileno() for s in inherited], env=env,
        )
    return Component(name, proc, config, log)


def _wait_until(component: Component, ready: Callable[[], bool], what: str) -> None:
    """Poll ``ready()`` (a cheap check of a file or a socket) until true, bounded.

    The programs announce readiness only in their logs, whose wording is
    theirs to change; a file they create when initialised is sturdier.
    Between checks the loop waits on the process itself (``wait`` with a
    short timeout), so a program that dies is seen at once.
    """
    deadline = time.monotonic() + WAIT
    while not ready():
        component.assert_running()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{component.name}: no {what} after {WAIT} s{component.describe()}"
            )
        with contextlib.suppress(subprocess.TimeoutExpired):
            component.proc.wait(0.02)


# -- HAProxy -------------------------------------------------------------------

HAPROXY_CONFIG = """\
global
    log stderr format raw local0 info
    stats socket {stats} mode 600 level admin
    # The tests' servers are on loopback: no need for HAProxy's many threads.
    nbthread 1

defaults
    mode {mode}
    log global
    option {mode}log
    option log-health-checks
    timeout connect 2s
    timeout client {timeout}
    timeout server {timeout}
    # A connection refused by the server is retried once on the next attempt
    # by default; the tests count refusals, so none may be hidden.
    retries 0

frontend fe
    bind fd@{fd}
    default_backend be

backend be
    server s1 {server} {server_options}
"""


@dataclass
class HAProxy(Component):
    """A running HAProxy; ``address`` is its frontend's."""

    address: tuple[str, int] = ("", 0)

    def show(self, command: str) -> str:
        """One command on the stats socket (HAProxy's runtime API)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(WAIT)
            sock.connect(str(self.extra["stats"]))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_stat(self) -> dict[str, str]:
        """The ``show stat`` row of the backend's server s1 (status, check counters...)."""
        text = self.show("show stat").lstrip("# ")
        for row in csv.DictReader(text.splitlines()):
            if row["pxname"] == "be" and row["svname"] == "s1":
                return row
        raise AssertionError(f"no be/s1 row in show stat:\n{text}")

    def wait_server_up(self) -> dict[str, str]:
        """Until HAProxy's health checks have marked s1 UP (bounded); its stat row."""
        row: dict[str, str] = {}

        def up() -> bool:
            nonlocal row
            row = self.server_stat()
            return row["status"] == "UP"

        _wait_until(self, up, "server UP in show stat")
        return row


@contextlib.contextmanager
def haproxy(
    tmp_path: Path, server: tuple[str, int], server_options: str = "send-proxy",
    mode: str = "tcp", timeout: str = "10s",
) -> Iterator[HAProxy]:
    """HAProxy in front of ``server``, in the foreground (``-db``), for the block.

    ``server_options`` go on the ``server`` line as they are: ``send-proxy``,
    ``send-proxy-v2``, ``check inter 100ms``...  Yields once HAProxy has
    read its configuration and opened its stats socket.
    """
    binary = need("haproxy", "haproxy")
    directory = tmp_path / "haproxy"
    directory.mkdir(exist_ok=True)
    config, log, stats = directory / "haproxy.cfg", directory / "haproxy.log", directory / "stats"
    with loopback_listener() as frontend:
        config.write_text(HAPROXY_CONFIG.format(
            stats=stats, mode=mode, timeout=timeout, fd=frontend.fileno(),
            server=f"{server[0]}:{server[1]}", server_options=server_options,
        ))
        component = _start("haproxy", [binary, "-f", str(config), "-db"], config, log, [frontend])
        proxy = HAProxy(
            component.name, component.proc, config, log, {"stats": stats},
            address=frontend.getsockname(),
        )
    try:
        _wait_until(proxy, stats.exists, "stats socket")
        yield proxy
    finally:
        proxy.stop()


# -- nginx ---------------------------------------------------------------------

NGINX_CONFIG = """\
{load_module}
error_log stderr info;
pid {pid};
worker_processes 1;

events {{
    worker_connections 256;
}}

stream {{
    server {{
        listen {listen};
        proxy_pass {server};
        proxy_protocol on;
        proxy_connect_timeout 2s;
    }}
}}
"""


def _stream_module_line(binary: str) -> str:
    """The ``load_module`` line nginx needs for ``stream {}``, or "" when built in."""
    built = subprocess.run(
        [binary, "-V"], capture_output=True, text=True, timeout=WAIT, check=True
    ).stderr
    if "--with-stream=dynamic" not in built:
        if "--with-stream" in built:
            return ""
        pytest.fail(f"this nginx has no stream module at all:\n{built}")
    module = NGINX_MODULES / "ngx_stream_module.so"
    if not module.exists():
        missing = f"nginx's stream module is not installed ({module}; Debian package: " \
                  "libnginx-mod-stream)"
        if os.environ.get("CI"):
            pytest.fail(f"{missing}: .ci/run installs it")
        pytest.skip(missing)
    return f"load_module {module};"


@dataclass
class Nginx(Component):
    """A running nginx (master and one worker); ``address`` is its stream server's."""

    address: tuple[str, int] = ("", 0)


@contextlib.contextmanager
def nginx(tmp_path: Path, server: tuple[str, int]) -> Iterator[Nginx]:
    """nginx's ``stream`` proxy with ``proxy_protocol on`` in front of ``server``.

    Yields once the master has written its pid file, which it does after
    reading the configuration and taking the inherited listener.
    """
    binary = need("nginx", "nginx")
    load_module = _stream_module_line(binary)
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True, exist_ok=True)  # nginx -p expects it
    config, log, pid = prefix / "nginx.conf", prefix / "nginx.log", prefix / "nginx.pid"
    with loopback_listener() as frontend:
        host, port = frontend.getsockname()
        config.write_text(NGINX_CONFIG.format(
            load_module=load_module, pid=pid, listen=f"{host}:{port}",
            server=f"{server[0]}:{server[1]}",
        ))
        env = dict(os.environ, NGINX=f"{frontend.fileno()};")
        argv = [binary, "-c", str(config), "-p", str(prefix), "-g", "daemon off;"]
        component = _start("nginx", argv, config, log, [frontend], env)
        proxy = Nginx(component.name, component.proc, config, log, {}, address=(host, port))
    try:
        _wait_until(proxy, pid.exists, "pid file")
        yield proxy
    finally:
        proxy.stop()


# -- curl ----------------------------------------------------------------------


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    """curl with the test bound on the whole transfer; fails on an HTTP error status."""
    binary = need("curl", "curl")
    return subprocess.run(
        [binary, "--silent", "--show-error", "--fail", "--max-time", str(WAIT), *args],
        capture_output=True, text=True, timeout=WAIT + 5, check=False,
    )
