"""Pre-forked workers, measured (issue 13, item 6).

Four measurements of ``PreforkMixIn`` on this machine, side by side in one run:

1. **Throughput, 1 worker against 2**, with a handler that spends ~200 µs of
   pure-Python CPU on each request (a loop whose count is calibrated at
   start-up; the report gives the calibrated time).  The servers are
   ``class App(PreforkMixIn, ThreadingTCPServer)``: ``ThreadingTCPServer``
   because the generator keeps 16 connections open and ping-pongs 64-byte
   lines on them (the cheapest load a client can make, so that it takes as
   little as possible of the second core), and a ``TCPServer`` worker would
   serve one of those connections until it closes while its others wait.
   The load generator is ``loadgen.c`` (``run.py`` compiles it); it also runs
   pinned to CPU 1 with ``taskset``, and the worker processes' CPU time is
   read from ``/proc`` beside each figure, so that the report can say what
   limits the ratio on 2 cores when one of them also runs the generator.
   Plain ``ThreadingTCPServer`` (no master, no fork) is there for scale.
2. **Spread of connections across 2 workers**, for the shared listener and
   for ``reuse_port = True``: Python client threads connect, send 10 lines,
   read each reply (the handler answers with its pid) and close; the count of
   connections per pid gives the busiest / least busy ratio.  "16 at once"
   keeps both workers busy (even load); "1 at a time" is the light load
   where a shared listener can hand everything to the same worker.
3. **Failures during rolling restarts**: the same clients, one line per
   connection, while the master gets SIGHUP 5 times (each time after the
   previous restart finished: every old worker gone, the worker count back).
   Every failed connect and every connection that ends without its reply is
   counted, by kind.  For both listeners: ``reuse_port`` has a documented cost
   here (connections queued on a leaving worker's socket are reset).
4. **``serve --wsgi`` against gunicorn**: ``python -m minisocketserver serve
   --wsgi prefork:hello_app --workers 2``, with ``--model sync`` (one request
   at a time per worker, as gunicorn's sync workers) and with the default
   ``--model threading``, and ``gunicorn -k sync -w 2`` serve the same WSGI
   hello app (``hello_app`` below; ``prefork`` is this file, imported with
   ``benchmarks/`` on the path) on a listener this harness binds and passes
   on by descriptor; ``wrk -t1`` is the generator for all; servers
   interleaved, each ratio taken repeat by repeat.

Usage::

    python benchmarks/prefork.py                 # ~6 min; rewrites docs/prefork-performance.md
    python benchmarks/prefork.py --smoke --out /tmp/prefork.md   # seconds, every code path
    python benchmarks/prefork.py serve --workers 2 --loops N [--reuse-port | --single]

Loopback only: every server binds 127.0.0.1 and every client connects there.
Every load is bounded in time (and the clients and loadgen in count); every
process started here is stopped by its own PID (the workers too, if their
master did not take them down).  Speed is never asserted: a run that fails
is written in the report with its reason.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import importlib.util
import json
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"  # loopback only
BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_OUT = REPO / "docs" / "prefork-performance.md"
sys.path.insert(1, str(REPO))  # this working tree's minisocketserver, in `serve` too

LINE = b"x" * 63 + b"\n"  # what the generators send, and the size of every reply
TARGET_US = 200.0  # CPU per request the handler's loop is calibrated to
CONNECTIONS = 16  # persistent connections in the throughput runs
SPREAD_CLIENTS = 16  # client threads at once for the spread under even load
SPREAD_LINES = 10  # lines per connection in the spread runs
RESTART_CLIENTS = 8  # client threads at once during the rolling restarts
WORKERS = 2
QUIET_BELOW = 0.25  # the machine's busy share from other work a run waits to fall below
QUIET_WAIT_RUN = 5.0  # seconds, at most, that one run waits for it
HELLO = b"Hello, world!\n"


# -- the handler's CPU, and the WSGI app --------------------------------------


def burn(loops: int) -> int:
    """Pure-Python CPU: ``loops`` multiply-adds, no system call, the GIL held."""
    x = 0
    for i in range(loops):
        x = (x * 33 + i) & 0xFFFFFF
    return x


def calibrate(target_us: float) -> tuple[int, float]:
    """The loop count that takes ``target_us``, and its measured time in µs.

    The cost per iteration is the fastest of several timings: on a machine
    shared with other work, a slower timing measures the other work.
    """
    probe = 20_000
    fastest = min(_timed(burn, probe) for _ in range(15))
    loops = max(1, round(target_us * 1e-6 / (fastest / probe)))
    return loops, statistics.median(_timed(burn, loops) for _ in range(51)) * 1e6


def _timed(fn: Callable[[int], object], arg: int) -> float:
    t0 = time.perf_counter()
    fn(arg)
    return time.perf_counter() - t0


def hello_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The WSGI app both ``serve --wsgi`` and gunicorn serve: a fixed small body."""
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(HELLO)))])
    return [HELLO]


# -- our server (run in a subprocess by `serve`) --------------------------------


def serve(workers: int, loops: int, reuse_port: bool, single: bool) -> None:
    """Run one server on 127.0.0.1, port 0; print the port; serve until SIGTERM."""
    import minisocketserver as ours

    class CpuHandler(ours.StreamRequestHandler):
        """Each line costs ``loops`` of CPU; the reply is the worker's pid, padded to a line."""

        def handle(self) -> None:
            # The pid is read here, in the worker, after the fork.
            reply = str(os.getpid()).encode().ljust(len(LINE) - 1) + b"\n"
            for _line in self.rfile:
                burn(loops)
                self.wfile.write(reply)

    server: Any
    if single:

        class Single(ours.ThreadingTCPServer):
            daemon_threads = True
            request_queue_size = 1024

        server = Single((HOST, 0), CpuHandler)
    else:

        class App(ours.PreforkMixIn, ours.ThreadingTCPServer):  # type: ignore[name-defined,misc]
            daemon_threads = True
            # Connections arrive in bursts during a rolling restart; stdlib's
            # backlog of 5 would turn them into SYN retransmits (gunicorn: 2048).
            request_queue_size = 1024
            graceful_timeout = 5.0

        App.workers = workers
        App.reuse_port = reuse_port
        server = App((HOST, 0), CpuHandler)
    sys.stdout.write(f"{server.server_address[1]}\n")
    sys.stdout.flush()
    with server:
        server.serve_forever()


# -- processes, from /proc -------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (the command name may hold spaces), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def children(pid: int) -> list[int]:
    """The live (not zombie) child processes of ``pid``, lowest pid first."""
    kids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None and fields[1] == str(pid) and fields[0] != "Z":
                kids.append(int(entry.name))
    return sorted(kids)


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads); NaN once it is gone."""
    fields = _stat(pid)
    if fields is None:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads(pid: int) -> int:
    """How many threads the process runs now (0 once it is gone)."""
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks: with the pid, who it is."""
    fields = _stat(pid)
    return None if fields is None else fields[19]


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat (as loadgen.c reads them)."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:9]]
    return sum(values) - values[3] - values[4], sum(values)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# -- running a server ------------------------------------------------------------


class Unavailable(Exception):
    """A server that cannot run here (a missing class, command or package)."""


class Failed(Exception):
    """A run that gave no figure; its message goes in the report."""


@dataclass
class Server:
    """A server subprocess: the master (or the only process), its port and its workers."""

    proc: subprocess.Popen[bytes]
    port: int
    workers: int  # how many worker processes it should have; 0: it serves itself
    stderr: IO[bytes]
    #: every worker seen, pid -> start time, so that a worker left behind by a
    #: dead master is killed by pid, and only if that pid is still the same process
    seen: dict[int, str | None] = field(default_factory=dict)

    def worker_pids(self) -> list[int]:
        if self.workers == 0:
            return [self.proc.pid]
        pids = children(self.proc.pid)
        for pid in pids:
            self.seen.setdefault(pid, start_time(pid))
        return pids

    def stderr_tail(self, limit: int = 300) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace").strip()[-limit:].replace("\n", " | ")

    def wait_for_workers(self, timeout: float) -> None:
        """Until exactly ``workers`` workers run (bounded); polling /proc."""
        deadline = time.monotonic() + timeout
        while self.workers and len(self.worker_pids()) != self.workers:
            if self.proc.poll() is not None:
                raise Failed(f"server exited ({self.proc.returncode}): {self.stderr_tail()}")
            if time.monotonic() > deadline:
                raise Failed(f"{len(self.worker_pids())} of {self.workers} workers after "
                             f"{timeout:g} s: {self.stderr_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        self.worker_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # graceful for every master here
            try:
                self.proc.wait(15.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5.0)
        for pid, started in self.seen.items():
            if started is not None and start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()


def env_with_paths(*paths: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join(
        [str(p) for p in paths] + [p for p in [os.environ.get("PYTHONPATH", "")] if p]))


def probe(server: Server, timeout: float) -> None:
    """Until the server's port accepts a connection (bounded), or the server exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((HOST, server.port), timeout=1.0).close()
            return
        except OSError as exc:
            if server.proc.poll() is not None:
                raise Failed(f"exited ({server.proc.returncode}): {server.stderr_tail()}") from exc
            if time.monotonic() > deadline:
                raise Failed(f"port {server.port} not accepting after {timeout:g} s: "
                             f"{exc!r}; {server.stderr_tail()}") from exc
            time.sleep(0.05)


@contextlib.contextmanager
def running(argv: list[str], workers: int, listener: socket.socket | None = None,
            cwd: Path | None = None) -> Iterator[Server]:
    """Start ``argv``; it serves ``listener`` (passed on), or prints its port first."""
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- closed by Server.stop
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, cwd=cwd,
                            env=env_with_paths(REPO, BENCH), start_new_session=True,
                            pass_fds=() if listener is None else (listener.fileno(),))
    server = Server(proc, 0, workers, stderr)
    try:
        if listener is not None:
            server.port = listener.getsockname()[1]
            # Only the server holds it now: a server that dies refuses connections.
            listener.close()
        else:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 20.0)
            line = proc.stdout.readline() if ready else b""
            if not line.strip().isdigit():
                raise Failed(f"no port printed: {server.stderr_tail()}")
            server.port = int(line)
        probe(server, 20.0)
        server.wait_for_workers(20.0)
        yield server
    finally:
        server.stop()


def our_server(loops: int, workers: int, *, reuse_port: bool = False,
               single: bool = False) -> list[str]:
    argv = [sys.executable, str(Path(__file__)), "serve", "--workers", str(workers),
            "--loops", str(loops)]
    return argv + (["--reuse-port"] if reuse_port else []) + (["--single"] if single else [])


def shown(argv: list[str]) -> str:
    """A command as the report prints it: relative paths, `python`, placeholders kept."""
    out = []
    for a in argv:
        if a == sys.executable:
            a = "python"
        elif a.startswith(str(REPO) + os.sep):
            a = a[len(str(REPO)) + 1:]
        out.append(a)
    return shlex.join(out).replace("'", "")


def inherited_listener() -> socket.socket:
    """A listener for a server that takes its socket from us (gunicorn, ``serve``).

    Bound here to port 0 and passed on by descriptor (``fd://N``, ``fd:N``):
    no port is picked and then raced for with other programs' ephemeral
    ports, and both servers get the same socket, backlog 2048 (gunicorn's).
    """
    listener = socket.socket()
    try:
        listener.bind((HOST, 0))
        listener.listen(2048)
    except OSError:
        listener.close()
        raise
    return listener


def prefork_reason() -> str:
    """Why PreforkMixIn cannot run here, or ""."""
    probe_code = "import minisocketserver as m; m.PreforkMixIn"
    done = subprocess.run([sys.executable, "-c", probe_code], capture_output=True, text=True,
                          env=env_with_paths(REPO), timeout=60, check=False)
    if done.returncode:
        return ("minisocketserver has no PreforkMixIn in this working tree "
                "(issue 13, item 1 not merged)")
    return ""


def serve_wsgi_reason() -> str:
    done = subprocess.run([sys.executable, "-m", "minisocketserver", "serve", "--help"],
                          capture_output=True, text=True, env=env_with_paths(REPO),
                          timeout=60, check=False)
    if done.returncode or "--wsgi" not in done.stdout:
        return ("`python -m minisocketserver serve --wsgi` is not in this working tree "
                "(issue 13, item 3 not merged)")
    return ""


def gunicorn_reason() -> str:
    if importlib.util.find_spec("gunicorn") is None:
        return "gunicorn is not installed (pip install -r benchmarks/requirements.txt)"
    return ""


# -- 1. throughput -----------------------------------------------------------------


@dataclass
class Figure:
    """One run: a rate, with what the generator, the workers and the machine used."""

    rate: float = float("nan")
    gen_cpu: float = float("nan")  # share of one core
    workers_cpu: list[float] = field(default_factory=list)  # share of one core, each
    machine: float = float("nan")  # busy share of all cores
    server_us: float = float("nan")  # worker CPU per operation
    errors: int = 0
    background: float = float("nan")  # busy share of all cores just before, from other work
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Config:
    """A server set-up in the throughput measurement."""

    name: str
    workers: int  # 0: plain ThreadingTCPServer, no master
    reuse_port: bool = False
    pinned: bool = False  # the generator pinned to CPU 1


THROUGHPUT = [
    Config("ThreadingTCPServer, no fork", 0),
    Config("prefork, 1 worker", 1),
    Config("prefork, 2 workers", 2),
    Config("prefork, 2 workers, reuse_port", 2, reuse_port=True),
    Config("prefork, 1 worker, generator on CPU 1", 1, pinned=True),
    Config("prefork, 2 workers, generator on CPU 1", 2, pinned=True),
]


def loadgen_args(duration: float, warmup: float) -> list[str]:
    return ["-m", "pingpong", "-c", str(CONNECTIONS), "-d", f"{duration:g}", "-w",
            f"{warmup:g}", "-k", "4", "-g", "3", "-n", "5000000"]


def cpu_of(pids: Iterable[int]) -> dict[int, float]:
    return {pid: cpu_seconds(pid) for pid in pids}


def throughput(server: Server, loadgen: Path, pinned: bool, duration: float,
               warmup: float) -> Figure:
    cmd = [str(loadgen), "-p", str(server.port), *loadgen_args(duration, warmup)]
    if pinned:
        cmd = ["taskset", "-c", "1", *cmd]
    pids = server.worker_pids()
    idle_threads = {pid: threads(pid) for pid in pids}
    cpu0, t0 = cpu_of(pids), time.monotonic()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as gen:
        # Halfway through the window, each worker's thread count, less its
        # count before the load, is its share of the connections: a
        # ThreadingTCPServer runs one thread per connection.  Which worker
        # got which connection is decided once, at set-up, for the whole run.
        time.sleep(warmup + duration / 2)
        conns = [threads(pid) - idle_threads[pid] for pid in pids]
        try:
            stdout, stderr = gen.communicate(timeout=duration + 60)
        except subprocess.TimeoutExpired as exc:
            gen.kill()
            gen.communicate()
            raise Failed("loadgen still running after its time-out") from exc
    cpu1, t1 = cpu_of(pids), time.monotonic()
    lines = stdout.strip().splitlines()
    if not lines:
        raise Failed(f"loadgen printed nothing (exit {gen.returncode}): {stderr[-300:]}")
    data = json.loads(lines[-1])
    if "error" in data or not data.get("ops"):
        raise Failed(f"loadgen: {data.get('error', 'no operation completed')}; "
                     f"server: {server.stderr_tail()}")
    if server.worker_pids() != pids:
        raise Failed(f"the workers changed during the run: {pids} -> {server.worker_pids()}")
    # The workers' CPU over the whole generator run (set-up and the drain take
    # milliseconds; the warm-up is the same load as the window): their share of
    # a core, and, divided by the rate, their CPU per request.
    shares = [(cpu1[p] - cpu0[p]) / (t1 - t0) for p in pids]
    # Busiest first, each worker's connections beside its CPU.
    ordered = sorted(zip(shares, conns, strict=True), reverse=True)
    return Figure(rate=data["rate"], gen_cpu=data["cpu_share"],
                  workers_cpu=[share for share, _ in ordered],
                  machine=data["machine_busy_share"],
                  server_us=sum(shares) / data["rate"] * 1e6, errors=data.get("errors", 0),
                  extra={"connections": [n for _, n in ordered]})


# -- 2 and 3: a Python client that reads the pid in each reply ----------------------


@dataclass
class Tally:
    """What the client threads saw; one lock guards it (every thread adds to it)."""

    connections: int = 0
    by_pid: collections.Counter[int] = field(default_factory=collections.Counter)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    elapsed: float = 0.0
    gen_cpu: float = float("nan")
    lock: threading.Lock = field(default_factory=threading.Lock)


def failure_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, EOFError):
        return "closed before the reply"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def one_connection(port: int, lines: int) -> int:
    """Connect, send ``lines`` lines, read each reply; the pid that answered."""
    with socket.create_connection((HOST, port), timeout=5.0) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reply = b""
        for _ in range(lines):
            sock.sendall(LINE)
            reply = b""
            while len(reply) < len(LINE):
                chunk = sock.recv(len(LINE) - len(reply))
                if not chunk:
                    raise EOFError
                reply += chunk
        return int(reply)


@contextlib.contextmanager
def clients(port: int, threads: int, lines: int, limit_s: float,
            max_connections: int) -> Iterator[Tally]:
    """Client threads loop on ``one_connection`` while the block runs.

    Bounded in time (``limit_s``, whatever the block does) and in count
    (``max_connections``); on leaving the block they finish the connection
    they are in and stop.
    """
    tally = Tally()
    stop = threading.Event()
    deadline = time.monotonic() + limit_s

    def run() -> None:
        while not stop.is_set() and time.monotonic() < deadline:
            with tally.lock:
                if tally.connections + sum(tally.failures.values()) >= max_connections:
                    return
            try:
                pid = one_connection(port, lines)
            except (OSError, EOFError, ValueError) as exc:
                with tally.lock:
                    tally.failures[failure_kind(exc)] += 1
                continue
            with tally.lock:
                tally.connections += 1
                tally.by_pid[pid] += 1

    pool = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    for t in pool:
        t.start()
    try:
        yield tally
    finally:
        stop.set()
        for t in pool:
            t.join(max(0.0, deadline - time.monotonic()) + 10.0)
        ru1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        tally.elapsed = t1 - t0
        tally.gen_cpu = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / (t1 - t0)


def spread_row(reuse_port: bool, threads: int) -> str:
    load = "1 at a time" if threads == 1 else f"{threads} at once"
    return f"{'reuse_port' if reuse_port else 'shared listener'}, {load}"


def spread(server: Server, threads: int, duration: float) -> Figure:
    with clients(server.port, threads, SPREAD_LINES, duration + 30, 10_000_000) as tally:
        time.sleep(duration)  # the load runs for this long, in the client threads
    counts = [tally.by_pid.get(pid, 0) for pid in server.worker_pids()]
    stray = tally.connections - sum(counts)
    if stray:
        raise Failed(f"{stray} connections served by a pid that is not a current worker")
    return Figure(rate=tally.connections / tally.elapsed, gen_cpu=tally.gen_cpu,
                  errors=sum(tally.failures.values()),
                  extra={"counts": counts, "failures": dict(tally.failures)})


def rolling_restarts(server: Server, restarts: int, settle: float) -> Figure:
    """SIGHUP ``restarts`` times under load, each ``settle`` s after the previous one finished."""
    times: list[float] = []
    budget = 5.0 + 20.0  # graceful_timeout + starting a worker, per restart
    with clients(server.port, RESTART_CLIENTS, 1, restarts * (budget + settle) + settle + 30,
                 1_000_000) as tally:
        time.sleep(settle)  # the load is on before the first restart
        for _ in range(restarts):
            old = set(server.worker_pids())
            t0 = time.monotonic()
            os.kill(server.proc.pid, signal.SIGHUP)
            while True:
                now = set(server.worker_pids())
                if not now & old and len(now) == server.workers:
                    break
                if server.proc.poll() is not None:
                    raise Failed(f"the master exited: {server.stderr_tail()}")
                if time.monotonic() - t0 > budget:
                    raise Failed(f"restart not done in {budget:g} s: workers {sorted(now)}, "
                                 f"old {sorted(old)}")
                time.sleep(0.01)
            times.append(time.monotonic() - t0)
            time.sleep(settle)  # the new workers serve the load before the next restart
    return Figure(rate=tally.connections / tally.elapsed, gen_cpu=tally.gen_cpu,
                  errors=sum(tally.failures.values()),
                  extra={"times": times, "failures": dict(tally.failures),
                         "connections": tally.connections, "pids": len(tally.by_pid)})


# -- 4. serve --wsgi against gunicorn --------------------------------------------------


#: The WSGI servers: ``serve`` in its sync model (the like of gunicorn's sync
#: workers) and in its default threading model, and gunicorn's sync workers.
WSGI_SERVERS = ["serve --wsgi, sync", "serve --wsgi, threading", "gunicorn, sync"]


def wsgi_argv(name: str, fd: int | str) -> list[str]:
    if name.startswith("serve"):
        return [sys.executable, "-m", "minisocketserver", "serve", "--wsgi",
                "prefork:hello_app", "--model", name.rsplit(" ", 1)[1], "--workers",
                str(WORKERS), "--bind", f"fd:{fd}"]
    return [sys.executable, "-m", "gunicorn", "-k", "sync", "-w", str(WORKERS),
            "-b", f"fd://{fd}", "--log-level", "warning", "prefork:hello_app"]


def wrk_args(conns: int, seconds: int) -> list[str]:
    return ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--timeout", "5s"]


def wrk(server: Server, conns: int, seconds: int) -> Figure:
    cmd = [*wrk_args(conns, seconds), f"http://{HOST}:{server.port}/"]
    pids = [server.proc.pid, *server.worker_pids()]
    # wrk is a child of this process: its CPU time is in RUSAGE_CHILDREN once
    # it has been waited for (nothing else is reaped in between).
    ru0, cpu0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_of(pids), time.monotonic()
    b0, j0 = machine_jiffies()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise Failed("wrk still running after its time-out") from exc
    ru1, cpu1, t1 = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_of(pids), time.monotonic()
    b1, j1 = machine_jiffies()
    m = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    if done.returncode or m is None:
        raise Failed(f"wrk (exit {done.returncode}): {(done.stdout + done.stderr)[-300:]}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)",
                                             done.stdout))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    rate = float(m.group(1))
    server_cpu = sum(cpu1[p] - cpu0[p] for p in pids if cpu1[p] == cpu1[p])
    return Figure(rate=rate,
                  gen_cpu=(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / (t1 - t0),
                  machine=(b1 - b0) / (j1 - j0) if j1 > j0 else float("nan"),
                  server_us=server_cpu / (rate * (t1 - t0)) * 1e6 if rate else float("nan"),
                  errors=errors + (int(bad.group(1)) if bad else 0))


# -- the run ---------------------------------------------------------------------------


@dataclass
class Settings:
    repeats: int
    duration: float  # seconds per throughput or spread figure
    warmup: float
    restarts: int
    wrk_seconds: int
    wrk_conns: int = 16
    pause: float = 0.5  # before each run, measuring the machine's other work
    quiet_budget: float = 90.0  # seconds spent waiting for a quieter machine, at most

    @property
    def settle(self) -> float:
        """Seconds of load before the first restart, between restarts, after the last."""
        return max(0.2, self.duration / 3)


FULL = Settings(repeats=5, duration=3.0, warmup=0.5, restarts=5, wrk_seconds=3)
SMOKE = Settings(repeats=1, duration=0.4, warmup=0.1, restarts=1, wrk_seconds=1, pause=0.05,
                 quiet_budget=0.0)


@dataclass
class Results:
    """Every figure by section then row, one per repeat; the notes beside them."""

    figures: dict[str, dict[str, list[Figure]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    quiet_spent: float = 0.0  # seconds wait_for_quiet waited, over the whole run
    loads: dict[str, tuple[str, str]] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)

    def add(self, section: str, row: str, figure: Figure) -> None:
        self.figures.setdefault(section, {}).setdefault(row, []).append(figure)

    def get(self, section: str, row: str) -> list[Figure]:
        return self.figures.get(section, {}).get(row, [])


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def busy_share(pause: float) -> float:
    """How busy the machine (both cores) is over ``pause`` seconds, from /proc/stat."""
    b0, t0 = machine_jiffies()
    time.sleep(pause)
    b1, t1 = machine_jiffies()
    return (b1 - b0) / (t1 - t0) if t1 > t0 else float("nan")


def wait_for_quiet(s: Settings, results: Results) -> float:
    """Pause before a run; return how busy the machine was meanwhile.

    Nothing of the benchmark runs during the pause (the previous server is
    stopped, the next not started), so what keeps the machine busy then is
    other work sharing it.  Above ``QUIET_BELOW``, keep waiting in short
    steps, at most ``QUIET_WAIT_RUN`` for this run and within what is left
    of ``s.quiet_budget`` for the whole benchmark, so that runs start in the
    quiet gaps; the share is recorded either way, and printed beside the
    figures.
    """
    share, waited = busy_share(s.pause), 0.0
    while (share > QUIET_BELOW and waited < QUIET_WAIT_RUN
           and results.quiet_spent < s.quiet_budget):
        share = busy_share(0.25)
        waited += 0.25
        results.quiet_spent += 0.25
    return share


def attempt(results: Results, s: Settings, where: str, fn: Callable[[], Figure],
            section: str, row: str) -> None:
    background = wait_for_quiet(s, results)
    log(f"{where} (machine {background:.0%} busy before it)")
    try:
        figure = fn()
    except Failed as exc:
        results.failures.append(f"{where}: {exc}")
        log(f"  FAILED: {exc}")
        return
    figure.background = background
    results.add(section, row, figure)


def build_loadgen() -> tuple[Path, str]:
    sys.path.insert(0, str(BENCH))
    import run as bench_run  # benchmarks/run.py: compiles loadgen.c into build/

    return bench_run.LOADGEN, bench_run.build_loadgen()


def run_all(s: Settings, loops: int, loadgen: Path, results: Results) -> None:
    prefork_missing = prefork_reason()
    if prefork_missing:
        for section in ("throughput", "spread", "restarts"):
            results.unavailable[section] = prefork_missing

    # 1. Throughput.
    section, load0 = "throughput", loadavg()
    results.commands[section] = [
        shown(our_server(loops, WORKERS)) + "   # --workers 1; --reuse-port; --single",
        shown([str(loadgen), "-p", "PORT", *loadgen_args(s.duration, s.warmup)])
        + "   # also under taskset -c 1",
    ]
    if shutil.which("taskset") is None:
        results.unavailable["throughput:pinned"] = (
            "the generator-on-CPU-1 rows: taskset is not installed (Debian: util-linux)")
    for r in range(s.repeats):
        for c in THROUGHPUT:
            if (c.workers and prefork_missing) or (
                    c.pinned and "throughput:pinned" in results.unavailable):
                continue

            def one(c: Config = c) -> Figure:
                argv = our_server(loops, max(c.workers, 1), reuse_port=c.reuse_port,
                                  single=c.workers == 0)
                with running(argv, c.workers) as server:
                    return throughput(server, loadgen, c.pinned, s.duration, s.warmup)

            attempt(results, s, f"throughput r{r + 1}: {c.name}", one, section, c.name)
    results.loads[section] = (load0, loadavg())

    # 2. Spread and 3. rolling restarts.
    if not prefork_missing:
        section, load0 = "spread", loadavg()
        results.commands[section] = [
            shown(our_server(loops, WORKERS)) + "   # and --reuse-port",
            f"{SPREAD_CLIENTS} (or 1) Python client threads: connect, {SPREAD_LINES} lines, "
            f"read each reply (the worker's pid), close; for {s.duration:g} s",
        ]
        for r in range(s.repeats):
            for reuse in (False, True):
                for threads in (SPREAD_CLIENTS, 1):
                    row = spread_row(reuse, threads)

                    def one_spread(reuse: bool = reuse, threads: int = threads) -> Figure:
                        with running(our_server(loops, WORKERS, reuse_port=reuse),
                                     WORKERS) as server:
                            return spread(server, threads, s.duration)

                    attempt(results, s, f"spread r{r + 1}: {row}", one_spread, section, row)
        results.loads[section] = (load0, loadavg())

        section, load0 = "restarts", loadavg()
        results.commands[section] = [
            shown(our_server(loops, WORKERS)) + "   # and --reuse-port",
            f"{RESTART_CLIENTS} Python client threads: connect, 1 line, read the reply, close",
            f"kill -HUP MASTER_PID   # x{s.restarts}, each once the previous restart is done",
        ]
        for reuse in (False, True):
            row = "reuse_port" if reuse else "shared listener"

            def one_restart(reuse: bool = reuse) -> Figure:
                with running(our_server(loops, WORKERS, reuse_port=reuse), WORKERS) as server:
                    return rolling_restarts(server, s.restarts, s.settle)

            attempt(results, s, f"restarts: {row}", one_restart, section, row)
        results.loads[section] = (load0, loadavg())

    # 4. serve --wsgi against gunicorn.
    section, load0 = "wsgi", loadavg()
    results.commands[section] = [
        shown(wsgi_argv(name, "N")) + "   # cwd benchmarks/" for name in WSGI_SERVERS[1:]
    ] + [
        "# and serve with --model sync; fd N: a listener on 127.0.0.1, port 0, backlog 2048,",
        "# bound by the harness and passed on",
        shlex.join([*wrk_args(s.wrk_conns, s.wrk_seconds), f"http://{HOST}:PORT/"])
        + "   # after a 1 s warm-up run",
    ]
    serve_missing, gunicorn_missing = serve_wsgi_reason(), gunicorn_reason()
    reasons = {name: gunicorn_missing if name.startswith("gunicorn") else serve_missing
               for name in WSGI_SERVERS}
    if shutil.which("wrk") is None:
        results.unavailable[section] = "wrk is not installed (Debian: apt-get install wrk)"
        reasons = dict.fromkeys(reasons, "no wrk")
    else:
        for what, reason in (("serve --wsgi", serve_missing), ("gunicorn", gunicorn_missing)):
            if reason:
                results.unavailable[f"{section}:{what}"] = f"{what}: {reason}"
    for r in range(s.repeats):
        for name in WSGI_SERVERS:
            if reasons[name]:
                continue

            def one_wsgi(name: str = name) -> Figure:
                listener = inherited_listener()
                with running(wsgi_argv(name, listener.fileno()), WORKERS, listener=listener,
                             cwd=BENCH) as server:
                    wrk(server, s.wrk_conns, 1)  # warm-up, not kept
                    return wrk(server, s.wrk_conns, s.wrk_seconds)

            attempt(results, s, f"wsgi r{r + 1}: {name}", one_wsgi, section, name)
    results.loads[section] = (load0, loadavg())


# -- the report --------------------------------------------------------------------------


def median_range(values: Iterable[float], fmt: Callable[[float], str]) -> str:
    good = [v for v in values if v == v]  # drop NaN
    if not good:
        return "n/a"
    if len(good) == 1:
        return fmt(good[0])
    return f"{fmt(statistics.median(good))} ({fmt(min(good))}–{fmt(max(good))})"


def rate_fmt(v: float) -> str:
    return f"{v:,.0f}"


def pct(v: float) -> str:
    return f"{v * 100:.0f}%"


def ratio_fmt(v: float) -> str:
    return "∞" if v == float("inf") else f"{v:.2f}×"


def ratios(a: list[Figure], b: list[Figure]) -> list[float]:
    """Repeat r of ``a`` over repeat r of ``b``: the two ran next to each other."""
    return [x.rate / y.rate for x, y in zip(a, b, strict=False) if y.rate > 0]


def background(figs: list[Figure]) -> str:
    return median_range([f.background for f in figs], pct)


def spread_ratio(counts: list[int]) -> float:
    if not counts:
        return float("nan")
    return float("inf") if min(counts) == 0 else max(counts) / min(counts)


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not installed"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text and done.returncode in (0, 1) else "not installed"


def machine_rows(loops: int, calibrated_us: float, load_before: str, load_after: str,
                 gcc: str) -> list[str]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True, check=False).stdout.strip()
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gunicorn = tool_version([sys.executable, "-m", "gunicorn", "--version"])
    return [
        "| | |", "|---|---|",
        f"| commit | `{commit or 'unknown'}`{' (with uncommitted changes)' if dirty else ''} |",
        f"| CPU | {cpu}, {os.cpu_count()} cores |",
        f"| kernel | {platform.release()} |",
        f"| Python | {platform.python_version()} |",
        f"| gcc (loadgen.c) | {gcc} |",
        f"| wrk | {tool_version(['wrk', '-v'])} |",
        f"| gunicorn | {gunicorn} |",
        f"| the handler's CPU | {loops:,} loop iterations, calibrated to {calibrated_us:.0f} µs "
        f"(median of 51 timings in this process, the target {TARGET_US:.0f} µs) |",
        f"| load average at the start (1, 5, 15 min) | {load_before} |",
        f"| load average at the end | {load_after} |",
    ]


def section_head(results: Results, key: str, title: str, text: str) -> list[str]:
    out = [f"## {title}", "", text, ""]
    if key in results.commands:
        out += ["Commands:", "", "```sh", *results.commands[key], "```", ""]
    if key in results.loads:
        before, after = results.loads[key]
        out += [f"Load average (1, 5, 15 min) before: {before}; after: {after}.", ""]
    for what, reason in results.unavailable.items():
        if what == key or what.startswith(key + ":"):
            out += [f"Not measured: {reason}.", ""]
    return out


def report(results: Results, s: Settings, command: str, loops: int, calibrated_us: float,
           load_before: str, load_after: str, gcc: str) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out = [
        "# Pre-forked workers, measured",
        "",
        f"Generated by `{command}` on {when}. Do not edit by hand: every figure below was "
        "measured by that command, and running it again rewrites this page. How to run it "
        "and what it measures: [benchmarks/README.md](../benchmarks/README.md) and the "
        "docstring of `benchmarks/prefork.py` (issue 13, item 6).",
        "",
        f"{s.repeats} interleaved repeat(s), each against a freshly started server; cells are "
        "the median (min–max over the repeats). This machine has 2 cores, and the load "
        "generator runs on them too: *gen CPU* is its share of one core (its own "
        "`getrusage`), *machine* the busy share of both cores (`/proc/stat`) while it ran. "
        "Near 100% machine busy, the box is the limit, not the server. *background* is how "
        "busy the machine was with other work in a pause just before the run, when nothing "
        f"of the benchmark ran (the machine is shared); a run waits for it to fall below "
        f"{QUIET_BELOW:.0%}, at most {QUIET_WAIT_RUN:g} s per run and {s.quiet_budget:g} s in all "
        f"(this run waited {results.quiet_spent:.1f} s): well above 0%, the figures beside "
        "it are disturbed.",
        "",
        "## The machine",
        "",
        *machine_rows(loops, calibrated_us, load_before, load_after, gcc),
        "",
    ]
    out += throughput_section(results, s)
    out += spread_section(results, s)
    out += restarts_section(results, s)
    out += wsgi_section(results, s)
    out += goals(results, s)
    if results.failures:
        out += ["## Runs that failed", "", *[f"- {f}" for f in results.failures], ""]
    return "\n".join(out)


def throughput_section(results: Results, s: Settings) -> list[str]:
    out = section_head(
        results, "throughput",
        f"1. Throughput: ~{TARGET_US:.0f} µs of Python CPU per request, 1 worker and 2",
        f"`loadgen.c` keeps {CONNECTIONS} connections open and ping-pongs 64-byte lines "
        f"({s.duration:g} s measured after a {s.warmup:g} s warm-up); each line costs the "
        "handler the calibrated loop, and the reply is the worker's pid padded to 64 bytes. "
        "The servers are `class App(PreforkMixIn, ThreadingTCPServer)` (persistent "
        "connections: a `TCPServer` worker would serve one of them until it closes). *workers "
        "CPU* is each worker process's CPU share of one core over the generator's run, from "
        "`/proc/PID/stat`, busiest first; *connections per worker* (same order, per repeat) "
        "is each worker's thread count halfway through the run less its count before it "
        "(one thread per connection); *µs/request* is the workers' CPU per request. "
        "\"Generator on CPU 1\": the generator runs under `taskset -c 1` (the workers are "
        "not pinned).")
    out += ["| server | requests/s | gen CPU | workers CPU | connections per worker "
            "| machine | µs/request | errors | background |",
            "|---|---|---|---|---|---|---|---|---|"]
    for c in THROUGHPUT:
        figs = results.get("throughput", c.name)
        if not figs:
            continue
        n = max(len(f.workers_cpu) for f in figs)
        per_worker = " + ".join(
            median_range([sorted(f.workers_cpu, reverse=True)[i] for f in figs
                          if len(f.workers_cpu) > i], pct) for i in range(n))
        conns = "; ".join(" / ".join(str(n) for n in f.extra["connections"]) for f in figs)
        out.append(
            f"| {c.name} | {median_range([f.rate for f in figs], rate_fmt)} "
            f"| {median_range([f.gen_cpu for f in figs], pct)} | {per_worker} | {conns} "
            f"| {median_range([f.machine for f in figs], pct)} "
            f"| {median_range([f.server_us for f in figs], lambda v: f'{v:.0f}')} "
            f"| {sum(f.errors for f in figs)} | {background(figs)} |")
    limits = [*what_limits(results, "prefork, 1 worker", "prefork, 2 workers"),
              *what_limits(results, "prefork, 1 worker, generator on CPU 1",
                           "prefork, 2 workers, generator on CPU 1"),
              *what_limits(results, "prefork, 1 worker", "prefork, 2 workers, reuse_port")]
    if limits:
        limits = ["Requests/s is the cores the workers get divided by their CPU per request. "
                  "With one worker, that worker is the limit (one core, one GIL); with two, "
                  "the second core is shared with the generator, the kernel's loopback TCP "
                  "work (counted in neither process) and whatever else runs on the machine "
                  "(*background*):", "", *limits]
    return [*out, "", *assignment(results), *limits, ""]


def assignment(results: Results) -> list[str]:
    """How the 16 connections fell on the workers, for the 2-worker rows.

    They are dealt once, at set-up, when the generator opens them a few at a
    time: a light load, where the shared listener's EPOLLEXCLUSIVE wake-up
    goes to the first worker waiting, usually the same one (part 2's "1 at a
    time" row shows it), while reuse_port deals them by a hash of the
    addresses.  A worker with no connection adds nothing for the whole run.
    """
    out = []
    for c in THROUGHPUT:
        figs = results.get("throughput", c.name)
        if c.workers != 2 or not figs:
            continue
        split = [f.extra["connections"] for f in figs]
        idle = sum(1 for n in split if min(n) <= 0)
        busier = median_range([max(n) for n in split], lambda v: f"{v:.0f}")
        out.append(f"- *{c.name}*: the busier worker held {busier} of the {CONNECTIONS} "
                   f"connections; in {idle} of {len(split)} repeat(s) one worker held none.")
    if out:
        out = ["The connections are dealt to the workers once, at set-up, when the generator "
               "opens them four at a time: a light load, where the shared listener wakes the "
               "first worker waiting in `epoll_wait` (`EPOLLEXCLUSIVE`), often the same one, "
               "while `reuse_port` deals them by a hash of the addresses. A worker that holds "
               "no connection adds nothing to the run.", "", *out, ""]
    return out


def what_limits(results: Results, one: str, two: str) -> list[str]:
    """A sentence on what bounds the 2-worker figure: the cores the workers got, their cost.

    requests/s = cores used / CPU per request, so the ratio of two runs is the
    ratio of the cores the workers got times the inverse ratio of their CPU
    per request: the figures say which of the two fell short of twice one worker.
    """
    a, b = results.get("throughput", one), results.get("throughput", two)
    if not a or not b:
        return []
    cores = [sum(f.workers_cpu) for f in b]
    cores1 = [sum(f.workers_cpu) for f in a]
    # What the machine spent that was neither the workers' nor the generator's:
    # the kernel's loopback work outside both, the master, other programs.
    ncpu = os.cpu_count() or 2
    rest = [f.machine * ncpu - sum(f.workers_cpu) - f.gen_cpu for f in b]
    return [
        f"- *{two}*: the workers got {median_range(cores, lambda v: f'{v:.2f}')} cores of 2 "
        f"(*{one}*: {median_range(cores1, lambda v: f'{v:.2f}')}), the generator "
        f"{median_range([f.gen_cpu for f in b], pct)} of a core, the machine was "
        f"{median_range([f.machine for f in b], pct)} busy, so "
        f"{median_range(rest, lambda v: f'{v:.2f}')} cores went to neither (background "
        f"before the runs {background(b)}); CPU per request "
        f"{median_range([f.server_us for f in b], lambda v: f'{v:.0f}')} µs against "
        f"{median_range([f.server_us for f in a], lambda v: f'{v:.0f}')} µs.",
    ]


def spread_section(results: Results, s: Settings) -> list[str]:
    out = section_head(
        results, "spread", "2. Spread of connections across 2 workers",
        f"Each connection sends {SPREAD_LINES} lines (each ~{TARGET_US:.0f} µs of handler CPU) "
        "and reads the worker's pid in the replies; the count of connections per worker "
        f"pid, per repeat. \"{SPREAD_CLIENTS} at once\" keeps both workers busy (the even load "
        "of the goal); "
        "\"1 at a time\" is a light load: one connection in flight, so a worker is always "
        "idle and waiting when the next one arrives.")
    out += ["| listener, clients | connections per worker, per repeat | busiest / least busy "
            "| connections/s | gen CPU | failed | background |", "|---|---|---|---|---|---|---|"]
    for row, figs in results.figures.get("spread", {}).items():
        out.append(
            f"| {row} | {'; '.join(' / '.join(str(c) for c in f.extra['counts']) for f in figs)} "
            f"| {median_range([spread_ratio(f.extra['counts']) for f in figs], ratio_fmt)} "
            f"| {median_range([f.rate for f in figs], rate_fmt)} "
            f"| {median_range([f.gen_cpu for f in figs], pct)} "
            f"| {sum(f.errors for f in figs)} | {background(figs)} |")
    out.append("")
    return out


def restarts_section(results: Results, s: Settings) -> list[str]:
    out = section_head(
        results, "restarts", f"3. Requests failed during {s.restarts} rolling restarts",
        f"{RESTART_CLIENTS} client threads open connections back to back (one line, its "
        f"reply, close) from {s.settle:g} s before the first SIGHUP to {s.settle:g} s "
        "after the last restart finished, and for as long "
        "between restarts; a "
        "restart counts as finished when none of the workers it started with is left and "
        f"the master has {WORKERS} again. A failure is a refused or reset connection, one "
        "closed before its reply, or a time-out (5 s).")
    out += ["| listener | restarts (seconds each) | connections served | failed | worker pids "
            "seen | gen CPU | background |", "|---|---|---|---|---|---|---|"]
    for row, figs in results.figures.get("restarts", {}).items():
        for f in figs:
            failed = ", ".join(f"{n} {k}" for k, n in sorted(f.extra["failures"].items()))
            times = ", ".join(f"{t:.2f}" for t in f.extra["times"])
            out.append(f"| {row} | {len(f.extra['times'])} ({times}) | "
                       f"{f.extra['connections']:,} | {f.errors}{f' ({failed})' if failed else ''} "
                       f"| {f.extra['pids']} | {pct(f.gen_cpu)} | {background([f])} |")
    out.append("")
    return out


def wsgi_section(results: Results, s: Settings) -> list[str]:
    out = section_head(
        results, "wsgi", "4. `serve --wsgi` against gunicorn",
        f"The same WSGI app (`hello_app` in `benchmarks/prefork.py`, a {len(HELLO)}-byte "
        f"body), {WORKERS} workers each, all on one listener the harness bound and passed "
        f"on; `wrk` with one thread and {s.wrk_conns} "
        "connections; the servers interleaved, each started afresh and warmed for 1 s. "
        "*server µs/request* is the CPU of the master and its workers per request; *gen "
        "CPU* is wrk's share of one core (`RUSAGE_CHILDREN`).")
    out += ["| server | requests/s | gen CPU | machine | server µs/request | errors "
            "| background |", "|---|---|---|---|---|---|---|"]
    for row, figs in results.figures.get("wsgi", {}).items():
        out.append(
            f"| {row} | {median_range([f.rate for f in figs], rate_fmt)} "
            f"| {median_range([f.gen_cpu for f in figs], pct)} "
            f"| {median_range([f.machine for f in figs], pct)} "
            f"| {median_range([f.server_us for f in figs], lambda v: f'{v:.0f}')} "
            f"| {sum(f.errors for f in figs)} | {background(figs)} |")
    out.append("")
    for ours in WSGI_SERVERS[:2]:
        over = ratios(results.get("wsgi", ours), results.get("wsgi", WSGI_SERVERS[2]))
        out += [f"*{ours}* / *{WSGI_SERVERS[2]}*, repeat by repeat: "
                + (f"{median_range(over, ratio_fmt)}." if over else "n/a."), ""]
    return out


def goals(results: Results, s: Settings) -> list[str]:
    def row(goal: str, met: bool | None, evidence: str) -> str:
        verdict = "not measured" if met is None else ("met" if met else "not met")
        return f"| {goal} | {evidence} | {verdict} |"

    out = ["## Issue 13's goals", "",
           "Ratios are taken repeat by repeat (the two ran next to each other), then the "
           "median (min–max).", "", "| goal | measured | verdict |", "|---|---|---|"]
    for how, one, two in (
            ("shared listener", "prefork, 1 worker", "prefork, 2 workers"),
            ("generator on CPU 1", "prefork, 1 worker, generator on CPU 1",
             "prefork, 2 workers, generator on CPU 1"),
            ("reuse_port", "prefork, 1 worker", "prefork, 2 workers, reuse_port")):
        r = ratios(results.get("throughput", two), results.get("throughput", one))
        out.append(row(f"2 workers ≥ 1.6× one worker ({how})",
                       statistics.median(r) >= 1.6 if r else None,
                       f"{two} / {one}: {median_range(r, ratio_fmt)}"))
    for listener in ("shared listener", "reuse_port"):
        figs = results.get("spread", spread_row(listener == "reuse_port", SPREAD_CLIENTS))
        spreads = [spread_ratio(f.extra["counts"]) for f in figs]
        out.append(row(f"busiest / least busy ≤ 1.5 under even load ({listener})",
                       max(spreads) <= 1.5 if spreads else None,
                       f"{SPREAD_CLIENTS} at once: {median_range(spreads, ratio_fmt)}"))
    for listener in ("shared listener", "reuse_port"):
        figs = results.get("restarts", listener)
        out.append(row(f"0 failed requests during {s.restarts} rolling restarts ({listener})",
                       all(f.errors == 0 for f in figs) if figs else None,
                       ", ".join(f"{f.errors} failed of {f.extra['connections'] + f.errors:,}"
                                 for f in figs) or "n/a"))
    for ours in WSGI_SERVERS[:2]:
        wsgi = ratios(results.get("wsgi", ours), results.get("wsgi", WSGI_SERVERS[2]))
        out.append(row(f"`{ours}` against gunicorn's sync workers, reported as a ratio",
                       True if wsgi else None,
                       f"{ours} / {WSGI_SERVERS[2]}: {median_range(wsgi, ratio_fmt)}"))
    out.append("")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="cmd")
    sv = sub.add_parser("serve", help="run one of our servers (the harness does this)")
    sv.add_argument("--workers", type=int, default=WORKERS)
    sv.add_argument("--loops", type=int, required=True)
    sv.add_argument("--reuse-port", action="store_true")
    sv.add_argument("--single", action="store_true",
                    help="plain ThreadingTCPServer, no PreforkMixIn")
    parser.add_argument("--smoke", action="store_true", help="seconds, 1 repeat, 1 restart")
    parser.add_argument("--repeats", type=int, help=f"interleaved repeats (default {FULL.repeats})")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"report path (default {DEFAULT_OUT.relative_to(REPO)}; a smoke "
                             "run writes benchmarks/build/prefork-smoke.md unless told)")
    args = parser.parse_args()
    if args.cmd == "serve":
        serve(args.workers, args.loops, args.reuse_port, args.single)
        return
    s = SMOKE if args.smoke else FULL
    if args.repeats:
        s = Settings(**{**s.__dict__, "repeats": max(1, args.repeats)})
    out: Path = args.out or (BENCH / "build" / "prefork-smoke.md" if args.smoke else DEFAULT_OUT)
    command = "python benchmarks/prefork.py" + "".join(
        f" {a}" for a in sys.argv[1:] if not a.startswith("--out") and a != str(args.out))
    load_before = loadavg()
    loops, calibrated_us = calibrate(TARGET_US)
    log(f"handler loop: {loops:,} iterations = {calibrated_us:.0f} µs; load {load_before}")
    loadgen, gcc = build_loadgen()
    results = Results()
    run_all(s, loops, loadgen, results)
    load_after = loadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(results, s, command, loops, calibrated_us, load_before, load_after,
                          gcc))
    log(f"wrote {out}; load {load_before} -> {load_after}")


if __name__ == "__main__":
    main()
