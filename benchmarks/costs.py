"""Where the time goes: the measurements behind docs/optimisations.md.

``run.py`` compares servers; this script takes them apart.  Every command
starts server processes on 127.0.0.1, drives them with the load generator
that ``run.py`` compiles into ``build/``, and prints one line per run:
requests per second, the server's CPU time per request (all its threads,
from /proc) and its context switches per request.

    # two servers side by side, interleaved (A B A B ...), with the ratio A/B
    python benchmarks/costs.py pairs mini-multiplexing selectors-loop --mode pingpong --conns 64
    # ThreadPoolTCPServer with different core_workers, 16 clients connecting
    python benchmarks/costs.py pool --core 1 2 4 6
    # where the loop thread of ThreadingTCPServer spends its CPU, per connection
    python benchmarks/costs.py phases
    # the Python cost of one event in the multiplexing model, in process
    python benchmarks/costs.py events

Nothing here is run by the tests or by CI: it is a tool for reading costs by
hand, like a profiler.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # run.py sits beside this file
    LOADGEN,
    ServerProcess,
    build_loadgen,
    proc_context_switches,
    server_env,
)

HOST = "127.0.0.1"  # loopback only


def drive(port: int, pid: int, mode: str, conns: int, seconds: float) -> dict[str, Any]:
    """Run the load generator against one server; return its JSON result."""
    cmd = [str(LOADGEN), "-m", mode, "-p", str(port), "-c", str(conns)]
    cmd += ["-d", str(seconds), "-w", "0.3", "-P", str(pid)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=True)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def line(label: str, result: dict[str, Any], switches: tuple[int, int, int]) -> str:
    ops = max(1, result["ops"])
    voluntary, involuntary, threads = switches
    cpu_us = result["server_cpu_s"] * 1e6 / ops
    return (
        f"{label:<28} {result['rate']:>9,.0f}/s  server CPU {cpu_us:6.1f} us/op  "
        f"switches/op {voluntary / ops:5.1f} + {involuntary / ops:4.1f} involuntary  "
        f"threads {threads}"
    )


# -- pairs -----------------------------------------------------------------


def pairs(args: argparse.Namespace) -> None:
    for repeat in range(args.repeats):
        rates = []
        for name in (args.a, args.b):
            with ServerProcess(name) as server:
                before = proc_context_switches(server.pid)
                result = drive(server.port, server.pid, args.mode, args.conns, args.seconds)
                after = proc_context_switches(server.pid)
            switches = (after[0] - before[0], after[1] - before[1], after[2])
            print(line(f"r{repeat + 1} {name}", result, switches), flush=True)
            rates.append(result["rate"])
        print(f"r{repeat + 1} ratio {args.a}/{args.b}: {rates[0] / rates[1]:.2f}", flush=True)


# -- children: servers this script builds itself ----------------------------


class Child:
    """``costs.py serve-...`` in a process of its own; it prints its port first."""

    def __init__(self, *argv: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *argv],
            stdout=subprocess.PIPE,
            env=server_env(),
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        self.port = int(self.proc.stdout.readline()) if ready else 0
        self.pid = self.proc.pid

    def stop(self) -> str:
        """SIGTERM it (by its own PID) and return what it printed after its port."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return out.decode()


def line_echo_handler(module: Any) -> type:
    class LineEcho(module.StreamRequestHandler):  # type: ignore[misc]
        def handle(self) -> None:
            for request_line in self.rfile:
                self.wfile.write(request_line)

    return LineEcho


def serve_pool(core: int, most: int) -> None:
    import minisocketserver

    class Pool(minisocketserver.ThreadPoolTCPServer):
        core_workers = core
        max_workers = most
        daemon_threads = True

    server = Pool((HOST, 0), line_echo_handler(minisocketserver))
    print(server.server_address[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve_forever()


def pool(args: argparse.Namespace) -> None:
    for repeat in range(args.repeats):
        for core in args.core:
            child = Child("serve-pool", str(core), str(args.max))
            before = proc_context_switches(child.pid)
            result = drive(child.port, child.pid, "connrate", args.conns, args.seconds)
            after = proc_context_switches(child.pid)
            child.stop()
            switches = (after[0] - before[0], after[1] - before[1], after[2])
            print(line(f"r{repeat + 1} core_workers={core}", result, switches), flush=True)


def bare_thread_per_connection() -> None:
    """The floor of thread-per-connection: accept(), then a new Thread, nothing else.

    The handler does what the LineEcho handler does through
    StreamRequestHandler: a buffered reader for lines, a send per line,
    then SHUT_WR and close.
    """

    def handle(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as rfile:
            for request_line in rfile:
                conn.sendall(request_line)
            conn.shutdown(socket.SHUT_WR)

    listener = socket.create_server((HOST, 0), backlog=socket.SOMAXCONN)
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


def serve_phases(which: str) -> None:
    """A thread-per-connection server whose loop thread times each step of a connection."""
    spent = {"accept": 0.0, "Thread()": 0.0, "start()": 0.0}
    count = [0]
    original_init = threading.Thread.__init__
    original_start = threading.Thread.start

    def timed_init(self: threading.Thread, *a: Any, **k: Any) -> None:
        begun = time.thread_time()
        original_init(self, *a, **k)
        spent["Thread()"] += time.thread_time() - begun

    def timed_start(self: threading.Thread) -> None:
        begun = time.thread_time()
        original_start(self)
        spent["start()"] += time.thread_time() - begun
        count[0] += 1

    threading.Thread.__init__ = timed_init  # type: ignore[method-assign]
    threading.Thread.start = timed_start  # type: ignore[method-assign]
    original_accept = socket.socket.accept

    def timed_accept(self: socket.socket) -> tuple[socket.socket, Any]:
        begun = time.thread_time()
        request = original_accept(self)
        spent["accept"] += time.thread_time() - begun
        return request

    socket.socket.accept = timed_accept  # type: ignore[method-assign]

    def report(*_: Any) -> None:
        # The handler runs on the main thread, which is the loop's thread.
        total = time.thread_time()
        n = max(1, count[0])
        phases = {k: v / n * 1e6 for k, v in spent.items()}
        phases["the rest of the loop"] = total / n * 1e6 - sum(phases.values())
        result = {"connections": count[0], "loop_thread_us": total / n * 1e6, "phases_us": phases}
        print(json.dumps(result), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, report)
    if which == "bare":
        bare_thread_per_connection()  # serves until SIGTERM
        return
    if which == "stdlib":
        import socketserver as module
    else:
        import minisocketserver as module  # type: ignore[no-redef]

    class Server(module.ThreadingTCPServer):
        daemon_threads = True

    server = Server((HOST, 0), line_echo_handler(module))
    print(server.server_address[1], flush=True)
    server.serve_forever()


def phases(args: argparse.Namespace) -> None:
    for repeat in range(args.repeats):
        for which in ("stdlib", "mini", "bare"):
            child = Child("serve-phases", which)
            result = drive(child.port, child.pid, "connrate", args.conns, args.seconds)
            report = json.loads(child.stop())
            parts = "  ".join(f"{k} {v:5.1f}" for k, v in report["phases_us"].items())
            ops = max(1, result["ops"])
            print(
                f"r{repeat + 1} {which:<6} {result['rate']:>7,.0f} conn/s  process CPU "
                f"{result['server_cpu_s'] * 1e6 / ops:5.1f} us/conn  loop thread "
                f"{report['loop_thread_us']:5.1f} us/conn: {parts}",
                flush=True,
            )


# -- events: the Python cost of one event, in process -----------------------


def events(args: argparse.Namespace) -> None:
    """Time one readiness event end to end, in this process: ours against a bare loop.

    ``--conns`` socketpairs; each round writes a 64-byte line into every
    client end, then times the server side until every line has been read
    and echoed (one recv() and one send() per event, the same system calls
    on both sides), then drains the replies outside the timing.  What
    differs is only the Python around the calls.  Repeats alternate the two.
    """
    import minisocketserver
    from minisocketserver.reactor import Reactor

    line_out = b"x" * 63 + b"\n"
    pairs = [socket.socketpair() for _ in range(args.conns)]
    for server_end, _ in pairs:
        server_end.setblocking(False)

    class Echo(minisocketserver.MultiplexedRequestHandler):
        def data_received(self, data: bytes) -> None:
            self.send(data)

    class Owner:  # what a handler needs of its server in this loop
        def handle_error(self, request: Any, client_address: Any) -> None:
            raise RuntimeError("an echo handler failed")

        def _forget(self, handler: Any) -> None:
            pass

        def shutdown_request(self, request: Any) -> None:
            pass

    def rounds(serve_round: Any) -> float:
        spent = 0.0
        for _ in range(args.rounds):
            for _, client in pairs:
                client.send(line_out)
            begun = time.perf_counter()
            serve_round()
            spent += time.perf_counter() - begun
            for _, client in pairs:
                client.recv(4096)
        rounds_run: int = args.rounds
        return spent / (rounds_run * len(pairs)) * 1e6

    def ours() -> float:
        with Reactor(selectors.DefaultSelector) as reactor:
            handlers = [Echo(server_end, None, Owner()) for server_end, _ in pairs]
            for handler in handlers:
                handler._attach(reactor)

            def serve_round() -> None:
                done = 0
                while done < len(pairs):
                    ready = reactor.select(None)
                    for function, argument in ready:
                        function(argument)
                    done += len(ready)

            per_event = rounds(serve_round)
            for handler in handlers:
                handler._detach()
        return per_event

    def bare() -> float:
        with selectors.DefaultSelector() as selector:
            for server_end, _ in pairs:
                selector.register(server_end, selectors.EVENT_READ)

            def serve_round() -> None:
                done = 0
                while done < len(pairs):
                    ready = selector.select()
                    for key, mask in ready:
                        sock = key.fileobj
                        assert isinstance(sock, socket.socket)
                        if mask & selectors.EVENT_READ:
                            data = sock.recv(65536)
                            if data and sock.send(data) < len(data):
                                raise RuntimeError("a 64-byte send was cut short")
                    done += len(ready)

            return rounds(serve_round)

    results: dict[str, list[float]] = {"minisocketserver": [], "bare selectors loop": []}
    for _ in range(args.repeats):
        results["bare selectors loop"].append(bare())
        results["minisocketserver"].append(ours())
    for name, figures in results.items():
        shown = " ".join(f"{x:.2f}" for x in figures)
        print(
            f"{name:<20} us per event: min {min(figures):.2f}  median "
            f"{sorted(figures)[len(figures) // 2]:.2f}  ({shown})"
        )
    for server_end, client in pairs:
        server_end.close()
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pairs", help="two servers of servers.py, interleaved")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--mode", choices=["pingpong", "connrate"], default="pingpong")
    p.add_argument("--conns", type=int, default=64)
    p = sub.add_parser("pool", help="ThreadPoolTCPServer at several core_workers, connrate")
    p.add_argument("--core", type=int, nargs="+", default=[1, 2, 4, 6])
    p.add_argument("--max", type=int, default=64)
    p.add_argument("--conns", type=int, default=16)
    p = sub.add_parser("phases", help="ThreadingTCPServer's loop thread, step by step")
    p.add_argument("--conns", type=int, default=1)
    p = sub.add_parser("events", help="the Python cost of one event: ours vs a bare loop")
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=12)
    for name in ("pairs", "pool", "phases"):
        p = sub.choices[name]
        p.add_argument("--repeats", type=int, default=3)
        p.add_argument("--seconds", type=float, default=3.0)
    p = sub.add_parser("serve-pool")
    p.add_argument("core", type=int)
    p.add_argument("max", type=int)
    p = sub.add_parser("serve-phases")
    p.add_argument("which", choices=["stdlib", "mini", "bare"])
    args = parser.parse_args()
    if args.command == "serve-pool":
        serve_pool(args.core, args.max)
    elif args.command == "serve-phases":
        serve_phases(args.which)
    elif args.command == "events":
        events(args)
    else:
        build_loadgen()
        {"pairs": pairs, "pool": pool, "phases": phases}[args.command](args)


if __name__ == "__main__":
    main()
