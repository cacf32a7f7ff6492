"""Benchmark minisocketserver against stdlib socketserver, asyncio, uvloop and
a bare selectors loop, side by side in one run (issue 6).

    python benchmarks/run.py            # full run (~15 min), writes docs/performance.md
    python benchmarks/run.py --smoke    # seconds-long run of every code path, for CI

What it does, in order:
1. compiles benchmarks/loadgen.c with the machine's gcc into benchmarks/build/;
2. asks benchmarks/servers.py which servers can run here (minisocketserver's
   classes are looked up with getattr, uvloop and wrk are optional);
3. runs every scenario against every server, repeats interleaved
   (A B C, A B C, ...) so that drift in the machine's load hits all servers
   alike, each run against a freshly started server process;
4. writes the report (tables, ratios computed pair by pair, plots) with
   benchmarks/report.py, and the raw results as JSON beside it.

Safety: every server listens on 127.0.0.1 only; every load run is bounded in
time (and the generator in count); processes are stopped by their own PIDs.
Speed is never asserted: a run that fails is recorded as a note in the report.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BUILD = BENCH / "build"
LOADGEN_SRC = BENCH / "loadgen.c"
LOADGEN = BUILD / "loadgen"
SERVERS_PY = BENCH / "servers.py"

Result = dict[str, Any]


class BenchError(Exception):
    """A run that did not produce a figure; its message goes in the report."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sizes and durations of one benchmark run."""

    repeats: int
    pingpong_conns: tuple[int, ...]
    pingpong_seconds: float
    warmup_seconds: float
    connrate_conns: int
    connrate_seconds: float
    idle_conns: int
    idle_active: int
    idle_seconds: float
    shutdown_trials: int
    wakeup_seconds: float
    http_conns: tuple[int, ...]
    http_seconds: int  # wrk takes whole seconds
    #: connects in flight while opening a scenario's connections; below the
    #: stdlib's listen backlog of 5, so set-up never overflows it
    setup_inflight: int = 4
    #: how long the generator follows connections still in flight at the end
    grace_seconds: float = 8.0
    #: pause before each run, so one run's teardown does not overlap the next;
    #: the machine's load during it is recorded as background load
    settle_seconds: float = 0.3
    #: start a run only once the machine is at most this busy with other work
    #: (see wait_for_quiet), waiting at most quiet_wait_run for one run and
    #: quiet_wait_total over the whole benchmark
    quiet_below: float = 0.25
    quiet_wait_run: float = 5.0
    quiet_wait_total: float = 60.0


FULL = Settings(
    repeats=5,
    pingpong_conns=(1, 16, 64, 256),
    pingpong_seconds=1.5,
    warmup_seconds=0.3,
    connrate_conns=16,
    connrate_seconds=3.0,
    idle_conns=10_000,
    idle_active=100,
    idle_seconds=3.0,
    shutdown_trials=50,
    wakeup_seconds=3.0,
    http_conns=(16, 64),
    http_seconds=3,
)

SMOKE = Settings(
    repeats=1,
    pingpong_conns=(1, 16),
    pingpong_seconds=0.3,
    warmup_seconds=0.05,
    connrate_conns=16,
    connrate_seconds=0.3,
    idle_conns=200,
    idle_active=10,
    idle_seconds=0.3,
    shutdown_trials=3,
    wakeup_seconds=0.5,
    http_conns=(16,),
    http_seconds=1,
    grace_seconds=3.0,
    settle_seconds=0.05,
    quiet_wait_total=0.0,  # CI: never wait
)

FAMILIES = ("shutdown", "wakeups", "pingpong", "connrate", "idle", "http")


def plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Building the generator and finding the servers


def build_loadgen() -> str:
    """Compile loadgen.c if the binary is missing or older; return gcc's version."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("gcc not found: the load generator is compiled with the machine's gcc")
    version = subprocess.run(
        [gcc, "--version"], capture_output=True, text=True
    ).stdout.splitlines()[0]
    BUILD.mkdir(exist_ok=True)
    if not LOADGEN.exists() or LOADGEN.stat().st_mtime < LOADGEN_SRC.stat().st_mtime:
        cmd = [gcc, "-O2", "-Wall", "-Wextra", "-o", str(LOADGEN), str(LOADGEN_SRC)]
        log("compiling: " + shlex.join(cmd))
        subprocess.run(cmd, check=True)
    return version


def server_env() -> dict[str, str]:
    """The servers import minisocketserver from this working tree first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    # A traceback in a server goes to its stderr file, unbuffered, so that a
    # crash is visible in the report even if the process is then killed.
    env["PYTHONUNBUFFERED"] = "1"
    return env


def list_servers() -> dict[str, dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, str(SERVERS_PY), "list"],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=60,
        check=True,
    )
    listing: dict[str, dict[str, Any]] = json.loads(out.stdout)
    return listing


# --------------------------------------------------------------------------
# Reading a process from /proc


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat (as loadgen.c does).

    Busy is everything but idle and iowait.  The machine's busy share shows a
    saturated box even when the kernel's network work ran in ksoftirqd and so
    belongs to neither the client nor the server.
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    total = sum(fields)
    return total - fields[3] - fields[4], total


def proc_context_switches(pid: int) -> tuple[int, int, int]:
    """(voluntary, involuntary, threads) summed over the process's threads.

    A thread that sleeps in poll()/epoll_wait()/a lock and is woken (by a
    timeout or an event) and goes back to sleep counts one voluntary switch.
    So for an idle server the voluntary count is its wake-up count, read
    without attaching anything to it (strace would itself interrupt and
    restart the blocked calls).
    """
    voluntary = involuntary = threads = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                text = f.read()
        except FileNotFoundError:  # the thread exited meanwhile
            continue
        threads += 1
        voluntary += int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
        involuntary += int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    return voluntary, involuntary, threads


# --------------------------------------------------------------------------
# Server processes


class ServerProcess:
    """One server under test, in its own process, stopped by its own PID."""

    def __init__(self, name: str, start_timeout: float = 30.0) -> None:
        self.name = name
        # Kept open for the server's life (closed in __exit__), so its
        # traceback can be quoted in the report.
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVERS_PY), "serve", name],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=server_env(),
            start_new_session=True,  # no terminal signals from the harness's tty
        )
        self.pid = self.proc.pid
        self.port = self._read_port(start_timeout)

    def _read_port(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self.stop()
            raise BenchError(
                f"server {self.name} did not start: {self.stderr_tail() or 'no port printed'}"
            )
        return int(line)

    def stderr_tail(self, limit: int = 400) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip()
        return text[-limit:].replace("\n", " | ")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.stderr.close()


# --------------------------------------------------------------------------
# Load generator


def loadgen_args(
    mode: str, conns: int, seconds: float, s: Settings, active: int = 0, setup_timeout: float = 0
) -> list[str]:
    """Generator arguments without -p/-P (added per run); shown in the report."""
    args = ["-m", mode, "-c", str(conns), "-d", str(seconds), "-g", str(s.grace_seconds)]
    if mode == "pingpong":
        args += ["-w", str(s.warmup_seconds), "-k", str(s.setup_inflight)]
        if active:
            args += ["-a", str(active)]
        if setup_timeout:
            args += ["-s", str(setup_timeout)]
    return args


def loadgen_command(args: list[str]) -> str:
    rel = LOADGEN.relative_to(REPO)
    return shlex.join([str(rel), "-p", "PORT", "-P", "SERVER_PID", *args])


def run_loadgen(server: ServerProcess, args: list[str], budget: float) -> Result:
    cmd = [str(LOADGEN), "-p", str(server.port), "-P", str(server.pid), *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"load generator still running after {budget:.0f} s") from exc
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise BenchError(
            f"load generator printed nothing (exit {out.returncode}): {out.stderr.strip()[-300:]}"
        )
    data: Result = json.loads(lines[-1])
    if "error" in data:
        tail = server.stderr_tail()
        raise BenchError(data["error"] + (f"; server stderr: {tail}" if tail else ""))
    if data.get("ops", 0) == 0:
        tail = server.stderr_tail()
        raise BenchError(
            f"no operation completed ({data.get('errors', 0)} errors)"
            + (f"; server stderr: {tail}" if tail else "")
        )
    data["value"] = data["rate"]
    if data.get("server_cpu_s", -1) >= 0:
        data["server_cpu_us_per_op"] = data["server_cpu_s"] / data["ops"] * 1e6
    return data


# --------------------------------------------------------------------------
# Scenarios.  Each measure function runs one repeat for one server and
# returns a result dict whose "value" is the headline figure.


@dataclasses.dataclass
class Scenario:
    key: str
    family: str
    title: str
    unit: str  #: unit of "value"
    higher_is_better: bool
    servers: list[str]
    measure: Callable[[str], Result]
    commands: list[str]
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    repeats: int = 1


def echo_load_scenario(
    key: str,
    family: str,
    title: str,
    unit: str,
    servers: list[str],
    args: list[str],
    budget: float,
    s: Settings,
    params: dict[str, Any],
) -> Scenario:
    def measure(name: str) -> Result:
        with ServerProcess(name) as server:
            result = run_loadgen(server, args, budget)
            if not server.alive():
                raise BenchError(f"server exited during the run: {server.stderr_tail()}")
            return result

    commands = ["python benchmarks/servers.py serve SERVER", loadgen_command(args)]
    return Scenario(
        key, family, title, unit, True, servers, measure, commands, params, repeats=s.repeats
    )


def shutdown_scenario(servers: list[str], s: Settings) -> Scenario:
    chunks = max(1, s.repeats)
    per_chunk = max(1, -(-s.shutdown_trials // chunks))

    def measure(name: str) -> Result:
        # One process per chunk of trials; the chunks of each server are
        # interleaved with the others' like every other repeat.
        cmd = [sys.executable, str(SERVERS_PY), "shutdown", name, "--trials", str(per_chunk)]
        try:
            out = subprocess.run(
                cmd, capture_output=True, text=True, env=server_env(), timeout=per_chunk * 6 + 30
            )
        except subprocess.TimeoutExpired as exc:
            raise BenchError("shutdown trials did not finish in time") from exc
        if out.returncode != 0:
            raise BenchError(f"exit {out.returncode}: {out.stderr.strip()[-300:]}")
        latencies = json.loads(out.stdout.strip().splitlines()[-1])["latencies_s"]
        return {"value": statistics.median(latencies) * 1e3, "latencies_s": latencies}

    return Scenario(
        "shutdown",
        "shutdown",
        "shutdown() latency",
        "ms",
        False,
        servers,
        measure,
        [
            f"python benchmarks/servers.py shutdown SERVER --trials {per_chunk}"
            f"   # x{chunks}, interleaved"
        ],
        {"trials": per_chunk * chunks},
        repeats=chunks,
    )


def parse_strace_summary(text: str) -> dict[str, int]:
    """Calls per syscall from `strace -c` output."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) >= 5 and parts[0].replace(".", "", 1).isdigit() and parts[-1] != "total":
            calls[parts[-1]] = int(parts[3])
    return calls


def wakeups_scenario(servers: list[str], s: Settings) -> Scenario:
    strace = shutil.which("strace")

    def measure(name: str) -> Result:
        with ServerProcess(name) as server:
            time.sleep(max(0.2, s.settle_seconds))  # let start-up finish
            v0, n0, _ = proc_context_switches(server.pid)
            t0 = time.monotonic()
            time.sleep(s.wakeup_seconds)
            v1, n1, threads = proc_context_switches(server.pid)
            elapsed = time.monotonic() - t0
            result: Result = {
                "value": (v1 - v0) / elapsed,
                "wakeups": v1 - v0,
                "involuntary": n1 - n0,
                "threads": threads,
                "seconds": elapsed,
            }
            if strace:
                result.update(strace_syscalls(server.pid, s.wakeup_seconds, strace))
            return result

    commands = [
        "python benchmarks/servers.py serve SERVER   # no client connects",
        "grep ctxt_switches /proc/SERVER_PID/task/*/status   # before and after "
        f"{s.wakeup_seconds} s",
    ]
    if strace:
        commands.append(f"strace -f -c -p SERVER_PID   # for {s.wakeup_seconds} s, then SIGINT")
    notes = (
        []
        if strace
        else ["strace not found: only context switches are counted (apt-get install strace)"]
    )
    return Scenario(
        "wakeups",
        "wakeups",
        "idle wake-ups per second",
        "/s",
        False,
        servers,
        measure,
        commands,
        {"seconds": s.wakeup_seconds},
        notes,
        repeats=1,
    )


def strace_syscalls(pid: int, seconds: float, strace: str) -> Result:
    """System calls an idle process makes, counted by `strace -c`.

    A second opinion on the context-switch count, done after it so that the
    attach does not disturb it.  Attaching interrupts each thread's blocked
    call, which the kernel restarts: expect one extra call per thread.
    """
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        proc = subprocess.Popen(
            [strace, "-f", "-c", "-o", out.name, "-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(seconds)
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"strace_error": "strace did not detach"}
        summary = out.read()
        calls = parse_strace_summary(summary)
        # strace writes an empty summary when it attached and saw no call.
        attached = b"attached" in err or "% time" in summary
        if not calls and not attached:
            message = " ".join(err.decode(errors="replace").split())
            return {"strace_error": message[-200:] or "strace printed no summary"}
    return {
        "syscalls": sum(calls.values()),
        "syscalls_per_s": sum(calls.values()) / seconds,
        "syscall_breakdown": calls,
    }


def parse_wrk(text: str) -> Result:
    def to_us(value: str) -> float:
        number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
        return float(number) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[unit]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if rps is None:
        raise BenchError("wrk printed no Requests/sec: " + text.strip()[-300:])
    result: Result = {"value": float(rps.group(1)), "rate": float(rps.group(1))}
    for pct, key in (("50", "lat_p50_us"), ("99", "lat_p99_us")):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        if m:
            result[key] = to_us(m.group(1))
    total = re.search(r"(\d+) requests in", text)
    result["ops"] = int(total.group(1)) if total else 0
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    result["errors"] = sum(int(x) for x in errors.groups()) if errors else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    result["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    return result


def http_scenario(conns: int, servers: list[str], s: Settings, wrk: str) -> Scenario:
    args = ["-t1", f"-c{conns}", f"-d{s.http_seconds}s", "--latency"]

    def measure(name: str) -> Result:
        with ServerProcess(name) as server:
            cmd = [wrk, *args, f"http://127.0.0.1:{server.port}/"]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu0 = proc_cpu_seconds(server.pid)
            busy0, total0 = machine_jiffies()
            try:
                out = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=s.http_seconds + 30
                )
            except subprocess.TimeoutExpired as exc:
                raise BenchError("wrk did not finish in time") from exc
            cpu1 = proc_cpu_seconds(server.pid)
            busy1, total1 = machine_jiffies()
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            result = parse_wrk(out.stdout)
            # wrk does not report its own CPU: it is the only child reaped
            # between the two getrusage calls.
            wrk_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            result["cpu_share"] = wrk_cpu / s.http_seconds
            result["server_cpu_share"] = (cpu1 - cpu0) / s.http_seconds
            if total1 > total0:
                result["machine_busy_share"] = (busy1 - busy0) / (total1 - total0)
            if result["ops"]:
                result["server_cpu_us_per_op"] = (cpu1 - cpu0) / result["ops"] * 1e6
            if result["non_2xx"] or result["errors"]:
                result["note"] = f"{result['errors']} socket errors, {result['non_2xx']} non-2xx"
            return result

    return Scenario(
        f"http-c{conns}",
        "http",
        f"http.server under wrk, {plural(conns, 'connection')}",
        "requests/s",
        True,
        servers,
        measure,
        [
            "python benchmarks/servers.py serve SERVER",
            shlex.join(["wrk", *args, "http://127.0.0.1:PORT/"]),
        ],
        {"conns": conns, "seconds": s.http_seconds},
        repeats=s.repeats,
    )


def build_scenarios(
    s: Settings,
    listing: dict[str, dict[str, Any]],
    families: set[str],
    only_servers: set[str] | None,
) -> tuple[list[Scenario], list[str]]:
    """The scenarios to run, and notes on what is skipped and why."""
    notes: list[str] = []
    usable = [
        n
        for n, info in listing.items()
        if not info["unavailable"] and (only_servers is None or n in only_servers)
    ]
    echo = [n for n in usable if listing[n]["kind"] == "echo"]
    http = [n for n in usable if listing[n]["kind"] == "http"]

    def holding(servers: list[str], conns: int) -> list[str]:
        """The servers that can serve ``conns`` persistent connections at once."""
        able = []
        for name in servers:
            bound = listing[name].get("max_persistent")
            if bound is not None and bound < conns:
                notes.append(
                    f"{name} not run with {conns:,} persistent connections: it serves "
                    f"at most {bound} at once (one worker per connection), by design"
                )
            else:
                able.append(name)
        return able

    with_shutdown = [n for n in usable if listing[n]["shutdown"]]
    scenarios: list[Scenario] = []
    if "shutdown" in families:
        scenarios.append(shutdown_scenario(with_shutdown, s))
    if "wakeups" in families:
        scenarios.append(wakeups_scenario(echo, s))
    if "pingpong" in families:
        for conns in s.pingpong_conns:
            args = loadgen_args("pingpong", conns, s.pingpong_seconds, s)
            budget = 60 + s.pingpong_seconds + s.warmup_seconds + s.grace_seconds + 30
            scenarios.append(
                echo_load_scenario(
                    f"pingpong-c{conns}",
                    "pingpong",
                    f"ping-pong line echo, {plural(conns, 'connection')}",
                    "round trips/s",
                    holding(echo, conns),
                    args,
                    budget,
                    s,
                    {"conns": conns, "seconds": s.pingpong_seconds},
                )
            )
    if "connrate" in families:
        c = s.connrate_conns
        args = loadgen_args("connrate", c, s.connrate_seconds, s)
        scenarios.append(
            echo_load_scenario(
                f"connrate-c{c}",
                "connrate",
                f"connection rate, {c} concurrent",
                "connections/s",
                echo,
                args,
                s.connrate_seconds + s.grace_seconds + 30,
                s,
                {"conns": c, "seconds": s.connrate_seconds},
            )
        )
    if "idle" in families:
        n = s.idle_conns
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard < n + 256:
            notes.append(
                f"idle scenario skipped: RLIMIT_NOFILE hard limit {hard} < {n} connections"
            )
        else:
            # Opening 10,000 connections one thread each takes the stdlib
            # tens of seconds (its thread list is pruned on every accept, so
            # set-up grows with the square of the count): allow it.
            args = loadgen_args(
                "pingpong", n, s.idle_seconds, s, active=s.idle_active, setup_timeout=150
            )
            scenarios.append(
                echo_load_scenario(
                    f"idle-{n}",
                    "idle",
                    f"{n:,} mostly idle connections, {s.idle_active} active",
                    "round trips/s",
                    holding(echo, n),
                    args,
                    150 + s.idle_seconds + s.warmup_seconds + s.grace_seconds + 30,
                    s,
                    {"conns": n, "active": s.idle_active, "seconds": s.idle_seconds},
                )
            )
    if "http" in families:
        wrk = shutil.which("wrk")
        if wrk is None:
            notes.append(
                "http.server scenario skipped: wrk not installed (Debian: apt-get install wrk)"
            )
        else:
            for conns in s.http_conns:
                scenarios.append(http_scenario(conns, http, s, wrk))
    return scenarios, notes


# --------------------------------------------------------------------------
# Running


def wait_for_quiet(s: Settings, budget: list[float]) -> float | None:
    """Pause before a run; return the machine's busy share during the pause.

    Nothing of the benchmark runs during the pause, so what keeps the machine
    busy then is other work sharing it (on a shared machine: other people's
    test suites).  If it is busier than `quiet_below`, keep waiting in short
    steps, up to `quiet_wait_run` for this run and within what is left of
    `budget` (shared by all the runs), so that runs start in the quiet
    gaps; every wait is bounded, and the share is recorded either way.
    """
    busy0, total0 = machine_jiffies()
    time.sleep(s.settle_seconds)
    busy1, total1 = machine_jiffies()
    share = (busy1 - busy0) / (total1 - total0) if total1 > total0 else None
    waited = 0.0
    while (
        share is not None and share > s.quiet_below and waited < s.quiet_wait_run and budget[0] > 0
    ):
        busy0, total0 = busy1, total1
        time.sleep(0.25)
        waited += 0.25
        budget[0] -= 0.25
        busy1, total1 = machine_jiffies()
        share = (busy1 - busy0) / (total1 - total0) if total1 > total0 else None
    return share


def run_scenario(
    sc: Scenario, s: Settings, progress: list[int], quiet_budget: list[float]
) -> dict[str, Any]:
    """Repeats interleaved across servers: r1: A B C, r2: A B C, ..."""
    runs: dict[str, list[Result]] = {name: [] for name in sc.servers}
    failed: set[str] = set()
    for repeat in range(sc.repeats):
        for name in sc.servers:
            progress[0] += 1
            where = f"[{progress[0]}/{progress[1]}] {sc.key} {name} r{repeat + 1}"
            if name in failed:
                # A server that failed a repeat (e.g. cannot hold 10,000
                # connections) would fail again: do not spend the time.
                runs[name].append({"ok": False, "error": "skipped after an earlier failure"})
                log(f"{where}: skipped after an earlier failure")
                continue
            # Pause before each run so one run's teardown does not overlap the
            # next, and measure how busy the machine is meanwhile: nothing of
            # the benchmark runs then, so that is other work sharing the box.
            background = wait_for_quiet(s, quiet_budget)
            t0 = time.monotonic()
            try:
                result = sc.measure(name)
                result["ok"] = True
                result["background_busy_share"] = background
                share = result.get("cpu_share")
                log(
                    f"{where}: {result['value']:.1f} {sc.unit}"
                    + (f" (generator {share:.0%} of a core)" if share is not None else "")
                    + f" in {time.monotonic() - t0:.1f} s"
                )
            except BenchError as exc:
                result = {"ok": False, "error": str(exc)}
                failed.add(name)
                log(f"{where}: FAILED: {exc}")
            runs[name].append(result)
    return {
        "key": sc.key,
        "family": sc.family,
        "title": sc.title,
        "unit": sc.unit,
        "higher_is_better": sc.higher_is_better,
        "commands": sc.commands,
        "params": sc.params,
        "notes": sc.notes,
        "servers": sc.servers,
        "runs": runs,
    }


def read_first_line(path: str, prefix: str = "") -> str:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip() if prefix else line.strip()
    except OSError:
        pass
    return "unknown"


def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def module_version(name: str) -> str:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import {name}; print(getattr({name}, '__version__', 'installed'))",
        ],
        capture_output=True,
        text=True,
        env=server_env(),
        timeout=60,
    )
    return out.stdout.strip() if out.returncode == 0 else "not installed"


def machine_info(gcc_version: str) -> dict[str, Any]:
    git = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "minisocketserver"],
        capture_output=True,
        text=True,
    )
    return {
        "cpu": read_first_line("/proc/cpuinfo", "model name"),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version()
        + f" ({platform.python_implementation()}, {sys.executable})",
        "gcc": gcc_version,
        "wrk": tool_version(["wrk", "-v"]),
        "strace": tool_version(["strace", "-V"]),
        "uvloop": module_version("uvloop"),
        "matplotlib": module_version("matplotlib"),
        "somaxconn": read_first_line("/proc/sys/net/core/somaxconn"),
        "tcp_tw_reuse": read_first_line("/proc/sys/net/ipv4/tcp_tw_reuse"),
        "nofile": "{}/{}".format(*resource.getrlimit(resource.RLIMIT_NOFILE)),
        "memory": read_first_line("/proc/meminfo", "MemTotal"),
        "git": (git.stdout.strip() or "no commit")
        + (" (minisocketserver/ modified)" if dirty.stdout.strip() else ""),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="seconds-long run of every path (for CI)"
    )
    parser.add_argument("--repeats", type=int, help="interleaved repeats (default 5, smoke 1)")
    parser.add_argument("--scenarios", help=f"comma-separated subset of: {','.join(FAMILIES)}")
    parser.add_argument("--servers", help="comma-separated subset of servers (see servers.py list)")
    parser.add_argument(
        "--out",
        type=Path,
        help="report path (default: docs/performance.md for a full run; "
        "benchmarks/build/smoke/ or build/partial/ for --smoke or a subset)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 if any run failed (never because of a speed)",
    )
    parser.add_argument(
        "--report-only",
        type=Path,
        metavar="RESULTS_JSON",
        help="rewrite the report from a saved results file, measuring nothing",
    )
    args = parser.parse_args(argv)

    import report  # benchmarks/report.py, beside this file

    # docs/performance.md holds one full run: a smoke or partial run writes
    # beside the build instead, unless --out says otherwise.
    partial = args.smoke or args.repeats or args.scenarios or args.servers
    if args.out:
        out = args.out
    elif args.report_only or not partial:
        out = REPO / "docs" / "performance.md"
    else:
        out = BUILD / ("smoke" if args.smoke else "partial") / "performance.md"
    if args.report_only:
        results = json.loads(args.report_only.read_text())
        report.write_report(results, out)
        log(f"wrote {out}")
        return 0

    settings = SMOKE if args.smoke else FULL
    if args.repeats:
        settings = dataclasses.replace(settings, repeats=max(1, args.repeats))
    families = set(args.scenarios.split(",")) if args.scenarios else set(FAMILIES)
    unknown = families - set(FAMILIES)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    only = set(args.servers.split(",")) if args.servers else None

    # The generator holds 10,000 sockets; so will the servers (they raise
    # their own soft limit): raise ours so that children inherit it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    started = time.monotonic()
    gcc_version = build_loadgen()
    listing = list_servers()
    scenarios, notes = build_scenarios(settings, listing, families, only)
    command = "python benchmarks/run.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "")
    results: dict[str, Any] = {
        "meta": {
            "command": command,
            "smoke": args.smoke,
            "settings": dataclasses.asdict(settings),
            "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "loadavg_start": read_first_line("/proc/loadavg"),
            "machine": machine_info(gcc_version),
        },
        "servers": listing,
        "notes": notes,
        "scenarios": {},
    }
    for note in notes:
        log("note: " + note)
    quiet_budget = [settings.quiet_wait_total]  # seconds, shared by all runs
    progress = [0, sum(sc.repeats * len(sc.servers) for sc in scenarios)]
    for sc in scenarios:
        results["scenarios"][sc.key] = run_scenario(sc, settings, progress, quiet_budget)
    results["meta"]["loadavg_end"] = read_first_line("/proc/loadavg")
    results["meta"]["duration_s"] = round(time.monotonic() - started, 1)

    out.parent.mkdir(parents=True, exist_ok=True)
    raw = BUILD / ("smoke-results.json" if args.smoke else "results.json")
    raw.write_text(json.dumps(results, indent=1))
    report.write_report(results, out)
    log(f"wrote {out} and {raw} in {results['meta']['duration_s']} s")
    failed = [
        f"{key} {name}"
        for key, sc in results["scenarios"].items()
        for name, runs in sc["runs"].items()
        if any(not r.get("ok") for r in runs)
    ]
    if failed:
        log("runs that failed (reasons in the report): " + ", ".join(failed))
    # Speed is never asserted; --strict only turns a failed run into a failed
    # exit status, for a CI that wants to notice a server that broke.
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.path.insert(0, str(BENCH))
    sys.exit(main())
