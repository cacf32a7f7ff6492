"""TLS side by side: handshakes, round trips and the silent-client stall (issue 12, item 5).

Four TLS echo servers, each in its own subprocess so that none shares a GIL
with the load generator (this process) or with another server:

* ``mini-threading``: ``minisocketserver.tls.ThreadingTLSServer``, a line echo
  on ``StreamRequestHandler``;
* ``mini-multiplexing``: ``minisocketserver.tls.MultiplexingTLSServer``, a byte
  echo on ``MultiplexedRequestHandler`` (``data_received`` -> ``send``);
* ``stdlib-3.14-pattern``: stdlib's ``socketserver.ThreadingTCPServer`` whose
  ``server_activate()`` wraps the listening socket, as 3.14's ``HTTPSServer``
  does, with the same line echo built on stdlib's ``StreamRequestHandler``;
* ``asyncio``: ``asyncio.start_server(..., ssl=context)``, readline/write/drain;
* ``...+nodelay``: the three socketserver-style servers again, with
  ``TCP_NODELAY`` on each connection, as asyncio sets it on every TCP socket:
  the handler's ``disable_nagle_algorithm = True`` (the socketserver knob) for
  the stream handlers, and ``get_request`` for the multiplexing server, whose
  handler has no such knob.  Without it, the first echo on a new TLS
  connection leaves while the server's session tickets are not yet
  acknowledged, so Nagle holds it until the client's delayed ACK: these rows
  show what that costs a connection.

Three measurements, each against a freshly started server, the servers
interleaved in every repeat (A B C D, A B C D, ...) so that a change in the
machine's load hits them alike:

* **connections/s**: connect, TLS handshake, one 64-byte line echoed, close;
  one client at a time (``seq``) and 8 threads at once (``conc``).  The echo
  makes sure the server finished its side of the handshake (in TLS 1.3 the
  client's ``do_handshake()`` returns before the server has read its Finished).
* **round trips/s**: 16 TLS connections kept open, each thread ping-ponging
  64-byte lines.
* **the stall**: 200 plain TCP clients connect and send nothing, then one
  real TLS client connects and asks for its echo; the figure is the time to
  its reply, capped (past the cap it is reported as stalled).

The generator is Python: threads on blocking ``ssl`` sockets (OpenSSL
releases the GIL in its reads, writes and handshakes), each with
``TCP_NODELAY`` as asyncio's and curl's clients have.  Its CPU share (own
``getrusage``, as a share of one core) is printed beside every figure, with
the server's CPU time per operation from ``/proc/PID/stat``: when the
generator is near one core it may be the limit, and CPU per operation still
compares the servers.

Usage::

    python benchmarks/tls.py              # the full run, ~2 min; rewrites docs/tls-performance.md
    python benchmarks/tls.py --smoke --out /tmp/tls.md   # a few seconds, every code path
    python benchmarks/tls.py serve NAME CERT KEY         # one server; prints its port

Loopback only: every server binds 127.0.0.1 and every client connects there.
Every loop is bounded in time; servers are stopped by their own PIDs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import selectors
import socket
import socketserver as stdlib_socketserver
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"  # loopback only
REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "docs" / "tls-performance.md"
sys.path.insert(1, str(REPO))  # this working tree's minisocketserver, in `serve` too

SERVERS = [
    "mini-threading", "mini-multiplexing", "stdlib-3.14-pattern", "asyncio",
    "mini-threading+nodelay", "mini-multiplexing+nodelay", "stdlib-3.14-pattern+nodelay",
]
LINE = b"x" * 63 + b"\n"  # the 64-byte line every exchange sends
SILENT = 200  # silent clients in the stall measurement
CONCURRENT = 8  # threads opening connections at once
CONNECTIONS = 16  # connections kept open for round trips


# -- the servers (run in a subprocess by `serve`) -----------------------------


def serve(name: str, cert: str, key: str) -> None:
    """Run one server on 127.0.0.1, port 0; print the port; serve until killed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def announce(port: int) -> None:
        sys.stdout.write(f"{port}\n")
        sys.stdout.flush()

    if name == "asyncio":

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ssl.SSLError):
                while line := await reader.readline():
                    writer.write(line)
                    await writer.drain()
            writer.close()

        async def main() -> None:
            server = await asyncio.start_server(echo, HOST, 0, ssl=context)
            announce(server.sockets[0].getsockname()[1])
            await server.serve_forever()

        asyncio.run(main())
        return

    nodelay = name.endswith("+nodelay")

    if name.startswith("stdlib-3.14-pattern"):

        class StdlibEcho(stdlib_socketserver.StreamRequestHandler):
            disable_nagle_algorithm = nodelay

            def handle(self) -> None:
                for line in self.rfile:
                    self.wfile.write(line)

        class Wrapped(stdlib_socketserver.ThreadingTCPServer):
            daemon_threads = True

            def server_activate(self) -> None:
                super().server_activate()
                # What 3.14's HTTPSServer does: every accept() now runs the
                # handshake on the serving thread, with no timeout.
                self.socket = context.wrap_socket(self.socket, server_side=True)

        stdlib_server = Wrapped((HOST, 0), StdlibEcho)
        announce(stdlib_server.server_address[1])
        stdlib_server.serve_forever()
        return

    import minisocketserver as ours
    from minisocketserver.tls import MultiplexingTLSServer, ThreadingTLSServer

    class LineEcho(ours.StreamRequestHandler):
        disable_nagle_algorithm = nodelay

        def handle(self) -> None:
            for line in self.rfile:
                self.wfile.write(line)

    class ByteEcho(ours.MultiplexedRequestHandler):
        def data_received(self, data: bytes) -> None:
            self.send(data)

    class NoDelay:
        """Sets TCP_NODELAY on each accepted connection, as asyncio does on every TCP socket."""

        def get_request(self) -> tuple[Any, Any]:
            request, address = super().get_request()  # type: ignore[misc]
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return request, address

    class MultiplexingNoDelay(NoDelay, MultiplexingTLSServer):
        pass

    classes: dict[str, tuple[Any, Any]] = {
        "mini-threading": (ThreadingTLSServer, LineEcho),
        "mini-multiplexing": (MultiplexingTLSServer, ByteEcho),
        "mini-threading+nodelay": (ThreadingTLSServer, LineEcho),
        "mini-multiplexing+nodelay": (MultiplexingNoDelay, ByteEcho),
    }
    if name not in classes:
        raise SystemExit(f"unknown server {name!r}; one of {SERVERS}")
    cls, handler = classes[name]
    server = cls((HOST, 0), handler, context=context)
    server.daemon_threads = True
    announce(server.server_address[1])
    server.serve_forever()


# -- running a server ---------------------------------------------------------


@dataclass
class Server:
    """A server subprocess: its process and its port."""

    proc: subprocess.Popen[bytes]
    port: int

    def cpu_seconds(self) -> float:
        """utime + stime of the server process, all its threads, from /proc."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running(name: str, cert: Path, key: Path) -> Iterator[Server]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p))
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve", name, str(cert), str(key)],
        stdout=subprocess.PIPE, env=env,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            if not sel.select(10.0):
                raise RuntimeError(f"{name} did not print its port within 10 s")
        yield Server(proc, int(proc.stdout.readline()))
    finally:
        proc.terminate()
        try:
            proc.wait(5.0)
        except subprocess.TimeoutExpired:
            proc.kill()  # the 3.14 pattern's serving thread may be stuck in a handshake
            proc.wait(5.0)
        if proc.stdout is not None:
            proc.stdout.close()


# -- the generator --------------------------------------------------------------


def tls_connect(port: int, context: ssl.SSLContext, timeout: float) -> ssl.SSLSocket:
    sock = socket.create_connection((HOST, port), timeout=timeout)
    # As asyncio and curl do for their connections: a client's small write
    # then never waits for the ACK of the one before (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return context.wrap_socket(sock, server_hostname="localhost")
    except BaseException:
        sock.close()
        raise


def echo_once(tls: ssl.SSLSocket) -> None:
    tls.sendall(LINE)
    got = b""
    while len(got) < len(LINE):
        chunk = tls.recv(len(LINE) - len(got))
        if not chunk:
            raise ConnectionError("EOF before the whole echo")
        got += chunk


@dataclass
class Figure:
    """One measurement: operations per second, or a latency, with the costs beside it."""

    rate: float = float("nan")  # operations/s, or seconds for the stall
    gen_cpu: float = float("nan")  # generator CPU share of one core
    server_us_per_op: float = float("nan")
    errors: int = 0
    note: str = ""


def measured(server: Server, threads: int, duration: float,
             worker: Callable[[Callable[[], bool]], int]) -> Figure:
    """Run ``worker(keep_going)`` in ``threads`` threads for ``duration``; sum their counts."""
    counts: list[int] = []
    errors: list[int] = []
    lock = threading.Lock()  # guards counts and errors, appended by the threads
    stop_at = time.monotonic() + duration

    def run() -> None:
        try:
            done = worker(lambda: time.monotonic() < stop_at)
        except (OSError, ssl.SSLError):
            with lock:
                errors.append(1)
            return
        with lock:
            counts.append(done)

    ru0, cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), server.cpu_seconds(), time.monotonic()
    pool = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(duration + 15.0)
    ru1, cpu1, t1 = resource.getrusage(resource.RUSAGE_SELF), server.cpu_seconds(), time.monotonic()
    total = sum(counts)
    gen = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / (t1 - t0)
    return Figure(
        rate=total / (t1 - t0), gen_cpu=gen,
        server_us_per_op=(cpu1 - cpu0) / total * 1e6 if total else float("nan"),
        errors=len(errors),
    )


def connections(server: Server, context: ssl.SSLContext, threads: int, duration: float) -> Figure:
    def worker(keep_going: Callable[[], bool]) -> int:
        done = 0
        while keep_going():
            with tls_connect(server.port, context, 5.0) as tls:
                echo_once(tls)
            done += 1
        return done

    return measured(server, threads, duration, worker)


def round_trips(server: Server, context: ssl.SSLContext, duration: float) -> Figure:
    # Open every connection first (one echo each), so that set-up is not timed.
    conns = [tls_connect(server.port, context, 5.0) for _ in range(CONNECTIONS)]
    try:
        for tls in conns:
            echo_once(tls)
        free = list(conns)
        free_lock = threading.Lock()  # each thread takes one connection from it

        def worker(keep_going: Callable[[], bool]) -> int:
            with free_lock:
                tls = free.pop()
            done = 0
            while keep_going():
                echo_once(tls)
                done += 1
            return done

        return measured(server, CONNECTIONS, duration, worker)
    finally:
        for tls in conns:
            tls.close()


def stall(server: Server, context: ssl.SSLContext, cap: float) -> Figure:
    """Seconds for one real TLS client to get its echo behind ``SILENT`` silent ones."""
    silent: list[socket.socket] = []
    try:
        # Non-blocking connects: a server that stopped accepting lets its
        # backlog fill, and a blocking connect() would then wait on SYN retries.
        with selectors.DefaultSelector() as sel:
            for _ in range(SILENT):
                s = socket.socket()
                silent.append(s)
                s.setblocking(False)
                s.connect_ex((HOST, server.port))
                sel.register(s, selectors.EVENT_WRITE)
            connected, deadline = 0, time.monotonic() + 2.0
            while connected < SILENT and (left := deadline - time.monotonic()) > 0:
                for key, _ in sel.select(left):
                    sel.unregister(key.fileobj)
                    connected += 1
        start = time.monotonic()
        try:
            with tls_connect(server.port, context, cap) as tls:
                tls.settimeout(max(0.01, cap - (time.monotonic() - start)))
                echo_once(tls)
        except TimeoutError:
            return Figure(rate=float("inf"), note=f"{connected} of {SILENT} silent connected")
        return Figure(rate=time.monotonic() - start,
                      note=f"{connected} of {SILENT} silent connected")
    finally:
        for s in silent:
            s.close()


# -- the run ------------------------------------------------------------------


@dataclass
class Results:
    """Every figure, by measurement then server, one entry per repeat."""

    figures: dict[str, dict[str, list[Figure]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, what: str, name: str, figure: Figure) -> None:
        self.figures.setdefault(what, {}).setdefault(name, []).append(figure)


MEASUREMENTS = {
    "conn-seq": "TLS connections/s, 1 at a time (handshake + one echo)",
    "conn-conc": f"TLS connections/s, {CONCURRENT} at once (handshake + one echo)",
    "rtt": f"TLS round trips/s, {CONNECTIONS} connections",
}


def make_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


def run(repeats: int, duration: float, cap: float) -> Results:
    results = Results()
    with tempfile.TemporaryDirectory(prefix="tlsbench-") as tmp:
        cert, key = make_certificate(Path(tmp))
        context = ssl.create_default_context(cafile=str(cert))
        for r in range(repeats):
            for name in SERVERS:
                print(f"repeat {r + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
                try:
                    with running(name, cert, key) as server:
                        results.add("conn-seq", name, connections(server, context, 1, duration))
                        results.add("conn-conc", name,
                                    connections(server, context, CONCURRENT, duration))
                        results.add("rtt", name, round_trips(server, context, duration))
                    # The stall last, on a fresh server: a stalled serving
                    # thread would spoil anything measured after it.
                    with running(name, cert, key) as server:
                        results.add("stall", name, stall(server, context, cap))
                except (OSError, ssl.SSLError, RuntimeError) as exc:
                    results.failures.append(f"repeat {r + 1}, {name}: {exc!r}")
    return results


# -- the report ---------------------------------------------------------------


def median_range(values: list[float], fmt: Callable[[float], str]) -> str:
    good = [v for v in values if v == v]  # drop NaN
    if not good:
        return "n/a"
    if len(good) == 1:
        return fmt(good[0])
    return f"{fmt(statistics.median(good))} ({fmt(min(good))}–{fmt(max(good))})"


def rate_fmt(v: float) -> str:
    return f"{v / 1000:.1f}k" if v >= 10_000 else f"{v:,.0f}"


def stall_fmt(cap: float) -> Callable[[float], str]:
    def fmt(v: float) -> str:
        return f"> {cap:g} s (stalled)" if v == float("inf") else f"{v * 1000:.1f} ms"
    return fmt


def ratios(results: Results, what: str, a: str, b: str) -> list[float]:
    """Repeat r of ``a`` over repeat r of ``b``: the two ran next to each other."""
    fa = results.figures.get(what, {}).get(a, [])
    fb = results.figures.get(what, {}).get(b, [])
    return [x.rate / y.rate for x, y in zip(fa, fb, strict=False) if y.rate > 0]


def machine_rows(load_before: tuple[float, ...], load_after: tuple[float, ...]) -> list[str]:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                            text=True, check=False).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True, check=False).stdout.strip()
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return [
        "| | |", "|---|---|",
        f"| commit | `{commit}`{' (with uncommitted changes)' if dirty else ''} |",
        f"| CPU | {cpu}, {os.cpu_count()} cores |",
        f"| kernel | {platform.release()} |",
        f"| Python | {platform.python_version()} |",
        f"| OpenSSL | {ssl.OPENSSL_VERSION} |",
        "| load average before (1, 5, 15 min) | " + ", ".join(f"{x:.2f}" for x in load_before)
        + " |",
        "| load average after (1, 5, 15 min) | " + ", ".join(f"{x:.2f}" for x in load_after)
        + " |",
    ]


def report(results: Results, command: str, repeats: int, duration: float, cap: float,
           load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    out = [
        "# TLS, measured",
        "",
        f"Generated by `{command}` on {when}. Do not edit by hand: every figure below was "
        "measured by that command, and running it again rewrites this page. How to run it "
        "and what it measures: [benchmarks/README.md](../benchmarks/README.md) and the "
        "docstring of `benchmarks/tls.py` (issue 12, item 5).",
        "",
        f"Each server ran in its own process; {repeats} interleaved repeat(s), each against a "
        f"freshly started server, {duration:g} s per figure. Cells are the median "
        "(min–max over the repeats). *gen CPU* is the load generator's CPU share of one "
        "core (it is Python, threads on blocking `ssl` sockets, in one process): near "
        "100% it may be the limit. *server µs/op* is the server process's CPU time per "
        "operation, which compares servers even when the generator is the limit. The "
        "`+nodelay` rows set `TCP_NODELAY` on each connection, as asyncio does "
        "(`disable_nagle_algorithm = True` on the stream handlers); the docstring of "
        "`benchmarks/tls.py` says why they are here.",
        "",
        "## The machine",
        "",
        *machine_rows(load_before, load_after),
        "",
    ]
    for what, title in MEASUREMENTS.items():
        out += [f"## {title}", "", "| server | per second | gen CPU | server µs/op | errors |",
                "|---|---|---|---|---|"]
        for name in SERVERS:
            figs = results.figures.get(what, {}).get(name, [])
            out.append(
                f"| {name} | {median_range([f.rate for f in figs], rate_fmt)} "
                f"| {median_range([f.gen_cpu * 100 for f in figs], lambda v: f'{v:.0f}%')} "
                f"| {median_range([f.server_us_per_op for f in figs], lambda v: f'{v:.0f}')} "
                f"| {sum(f.errors for f in figs)} |"
            )
        out.append("")
    out += [
        f"## The stall: one TLS client behind {SILENT} silent TCP clients",
        "",
        f"{SILENT} plain TCP clients connect (non-blocking, up to 2 s for them to be "
        "connected) and send nothing; then one TLS client connects and sends a line. The "
        f"time is from its connect to its echo, capped at {cap:g} s. The silent ones are "
        "closed afterwards. Stdlib's listen backlog is 5 (ours and asyncio's are larger): "
        "once the 3.14 pattern's serving thread sits in the first silent client's "
        "handshake, nothing more is accepted, and silent clients past the backlog may not "
        "even connect.",
        "",
        "| server | time to the reply, per repeat | silent clients connected |",
        "|---|---|---|",
    ]
    fmt = stall_fmt(cap)
    for name in SERVERS:
        figs = results.figures.get("stall", {}).get(name, [])
        out.append(f"| {name} | {', '.join(fmt(f.rate) for f in figs) or 'n/a'} "
                   f"| {', '.join(f.note for f in figs)} |")
    out.append("")

    def goal_row(goal: str, met: bool | None, evidence: str) -> str:
        verdict = "not measured" if met is None else ("met" if met else "not met")
        return f"| {goal} | {evidence} | {verdict} |"

    stalls = [f.rate for n in ("mini-threading", "mini-multiplexing")
              for f in results.figures.get("stall", {}).get(n, [])]
    theirs = [f.rate for f in results.figures.get("stall", {}).get("stdlib-3.14-pattern", [])]
    rtt = ratios(results, "rtt", "mini-multiplexing", "asyncio")
    rtt_nd = ratios(results, "rtt", "mini-multiplexing+nodelay", "asyncio")
    # The generator is Python and shares the machine: the server's CPU time
    # per round trip compares the servers even where the generator is the limit.
    cpu_rtt = [b.server_us_per_op / a.server_us_per_op for a, b in zip(
        results.figures.get("rtt", {}).get("mini-multiplexing", []),
        results.figures.get("rtt", {}).get("asyncio", []), strict=False)
        if a.server_us_per_op > 0]
    hs = {(n, base): ratios(results, "conn-conc", n, base)
          for n, base in (("mini-threading", "stdlib-3.14-pattern"),
                          ("mini-multiplexing", "stdlib-3.14-pattern"),
                          ("mini-threading+nodelay", "stdlib-3.14-pattern+nodelay"),
                          ("mini-multiplexing+nodelay", "stdlib-3.14-pattern+nodelay"))}
    ratio = lambda v: f"{v:.2f}×"  # noqa: E731
    out += [
        "## Issue 12's goals",
        "",
        "Ratios are taken repeat by repeat (the two servers ran next to each other), then "
        "the median (min–max).",
        "",
        "| goal | measured | verdict |",
        "|---|---|---|",
        goal_row("no stall (ours)", all(s != float("inf") for s in stalls) if stalls else None,
                 "ours: " + ", ".join(fmt(s) for s in stalls) + "; the 3.14 pattern: "
                 + ", ".join(fmt(s) for s in theirs)),
        goal_row("multiplexing TLS round trips ≥ 2× asyncio's",
                 statistics.median(rtt) >= 2 if rtt else None,
                 f"mini-multiplexing / asyncio: {median_range(rtt, ratio)}"),
        goal_row("the same in server CPU per round trip (asyncio's over ours)",
                 statistics.median(cpu_rtt) >= 2 if cpu_rtt else None,
                 f"asyncio / mini-multiplexing: {median_range(cpu_rtt, ratio)}"),
        goal_row("the same, both with TCP_NODELAY",
                 statistics.median(rtt_nd) >= 2 if rtt_nd else None,
                 f"mini-multiplexing+nodelay / asyncio: {median_range(rtt_nd, ratio)}"),
    ]
    for (n, base), values in hs.items():
        out.append(goal_row(
            f"handshake rate ≥ the stdlib pattern's ({n})",
            statistics.median(values) >= 1 if values else None,
            f"{n} / {base}, {CONCURRENT} at once: {median_range(values, ratio)}"))
    out.append("")
    if results.failures:
        out += ["## Runs that failed", "", *[f"- {f}" for f in results.failures], ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="cmd")
    s = sub.add_parser("serve", help="run one server (the harness does this)")
    s.add_argument("name", choices=SERVERS)
    s.add_argument("cert")
    s.add_argument("key")
    parser.add_argument("--smoke", action="store_true", help="a few seconds, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--duration", type=float, default=1.5, help="seconds per figure")
    parser.add_argument("--cap", type=float, default=5.0, help="the stall's cap, in seconds")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"report path (default {DEFAULT_OUT.relative_to(REPO)}; a smoke "
                             "run writes benchmarks/build/tls-smoke.md unless told)")
    args = parser.parse_args()
    if args.cmd == "serve":
        serve(args.name, args.cert, args.key)
        return
    if args.smoke:
        args.repeats, args.duration, args.cap = 1, 0.3, 1.0
    out: Path = args.out or (REPO / "benchmarks" / "build" / "tls-smoke.md"
                             if args.smoke else DEFAULT_OUT)
    command = "python benchmarks/tls.py" + " ".join(
        [""] + [a for a in sys.argv[1:] if not a.startswith("--out") and a != str(args.out)])
    load_before = os.getloadavg()
    results = run(args.repeats, args.duration, args.cap)
    load_after = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(results, command, args.repeats, args.duration, args.cap,
                          load_before, load_after))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
