#!/usr/bin/env python3
"""select vs poll vs epoll, measured: the cost of one wait with N registered descriptors.

The seed blog post (and most introductions to I/O multiplexing) makes three claims:

1. ``select`` loops over every descriptor and tops out at 1024 of them;
2. ``poll`` also loops over every descriptor, but has no such limit;
3. ``epoll`` does not loop: it is told which descriptors became ready.

This script checks those claims with numbers instead of repeating them.  For each
N in ``SIZES`` it registers N idle descriptors (socket ends that nothing was written
to) with every backend and times *one wait call with a zero timeout*: the cost of
asking "is anything ready?", which is what a server pays on every turn of its loop.
It then makes exactly one of the N descriptors readable and times the same call
again, because a busy server's wait usually does return something.

Time is the thread's CPU time (see ``CLOCK``), so that other work on this shared
2-core machine does not land in the figures; a wall-clock comparison is recorded too.

Backends: ``select.select``, ``select.poll``, ``select.epoll`` (the raw calls), and the
``selectors`` classes built on them (``SelectSelector``, ``PollSelector``,
``EpollSelector``), which is what ``socketserver`` and minisocketserver actually call.

Outputs (full run, from the repository root)::

    python benchmarks/select_poll_epoll.py          # measures (~1 min), then writes:
    docs/data/select-poll-epoll.json                # the raw figures
    docs/select-poll-epoll.md                       # the walkthrough section, from the JSON
    docs/img/select-poll-epoll.svg                  # the plot, from the JSON (needs matplotlib)

    python benchmarks/select_poll_epoll.py --quick --json -   # tiny run for tests, writes nothing
    python benchmarks/select_poll_epoll.py --render           # re-render md + svg from the JSON
    python benchmarks/select_poll_epoll.py --check            # exit 1 if md/svg are stale

The Markdown is rendered *only* from the JSON, so every sentence in it quotes a figure
that is in the table, and ``--check`` (run by the tests) proves the committed text still
matches the committed numbers.
"""

from __future__ import annotations

import argparse
import fcntl
import functools
import gc
import itertools
import json
import os
import platform
import random
import resource
import select
import selectors
import shlex
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
JSON_PATH = REPO / "docs" / "data" / "select-poll-epoll.json"
MD_PATH = REPO / "docs" / "select-poll-epoll.md"
SVG_PATH = REPO / "docs" / "img" / "select-poll-epoll.svg"

#: Numbers of registered descriptors.  1023 is there on purpose: it is below 1024, yet
#: select() refuses it, because descriptors 0-2 are stdin/out/err and so the 1023rd
#: registered descriptor is number 1025.  The limit is on descriptor *numbers*.
SIZES: tuple[int, ...] = (10, 100, 500, 1000, 1023, 2000, 5000, 10000)
QUICK_SIZES: tuple[int, ...] = (10, 100)

#: Batches per measurement.  Each batch runs the call k times (k chosen so a batch takes
#: about TARGET_BATCH_S) and yields one per-call time; we report the median and the
#: 10th-90th percentiles over batches.  61 batches give medians that move by a few
#: percent between runs on this 2-core machine, and the full run stays well under a minute.
REPEATS = 61
QUICK_REPEATS = 5
TARGET_BATCH_S = 0.004
QUICK_TARGET_BATCH_S = 0.0005

#: select()'s limit as CPython enforces it: a descriptor number must be < FD_SETSIZE,
#: which glibc fixes at 1024 (the fd_set is a 1024-bit array).  Used only to label
#: figures; the error itself is captured from a real call, never assumed.
FD_SETSIZE = 1024

#: The probe needs descriptor 1024 to exist; with a soft RLIMIT_NOFILE at or below that
#: it cannot, and the probe reports "skipped" instead of guessing.
PROBE_MIN_NOFILE = 1100

#: Descriptors the process holds besides the measured ones (stdio, the probe, imports).
FD_HEADROOM = 64

Json = dict[str, Any]

#: Typography for the generated Markdown, spelled as escapes so linters do not mistake
#: them for look-alike ASCII.
DASH = "\u2013"  # en dash, for ranges: p10-p90
TIMES = "\u00d7"  # multiplication sign, for ratios


# --------------------------------------------------------------------------------------
# Descriptors
# --------------------------------------------------------------------------------------


class DescriptorPool:
    """Idle socket descriptors, numbered as low and as densely as the process allows.

    Both ends of each ``socketpair`` are registered: an end is readable only when its
    peer has written to it, so N registered descriptors cost N open files, not 2N
    (which matters when the hard RLIMIT_NOFILE is 20000 and N is 10000).  To make exactly
    one descriptor ready we write one byte into its peer; the peer itself stays unready
    because nothing was written *to* it.

    Resource handling: the pool owns every socket; ``close()`` closes them all.
    """

    def __init__(self, count: int) -> None:
        self._socks: list[socket.socket] = []
        self._own: dict[int, socket.socket] = {}
        self._peer: dict[int, socket.socket] = {}
        try:
            while len(self._socks) < count:
                a, b = socket.socketpair()
                self._socks += [a, b]
                self._own[a.fileno()], self._own[b.fileno()] = a, b
                self._peer[a.fileno()] = b
                self._peer[b.fileno()] = a
        except BaseException:
            self.close()
            raise
        # socketpair() takes the two lowest free numbers, so sorting gives 3, 4, 5, ...
        self.fds: list[int] = sorted(s.fileno() for s in self._socks)

    def first(self, n: int) -> list[int]:
        """The n lowest-numbered descriptors: what a server with n connections holds."""
        return self.fds[:n]

    @contextmanager
    def one_ready(self, fd: int) -> Iterator[None]:
        """Make exactly ``fd`` readable (one byte waiting) for the duration of the block."""
        self._peer[fd].send(b"!")
        try:
            yield
        finally:
            # Drain the byte so the next measurement starts idle again.
            self._own[fd].recv(1)

    def close(self) -> None:
        for s in self._socks:
            s.close()
        self._socks.clear()
        self._own.clear()
        self._peer.clear()


def raise_nofile(needed: int) -> Json:
    """Raise the soft RLIMIT_NOFILE to ``needed`` if the hard limit allows it.

    An unprivileged process may raise its soft limit up to the hard limit, no further,
    so we never touch the hard limit.  Returns what we found and what we set.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    info: Json = {"soft_before": soft, "hard": hard, "needed": needed}
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    info["soft"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return info


def _error(exc: BaseException) -> Json:
    return {"type": type(exc).__name__, "message": str(exc)}


def probe_limits() -> Json:
    """Ask each backend, with real calls, what it does with descriptor 1023 and 1024.

    We dup a socket onto the lowest free number >= 1023 and >= 1024 (F_DUPFD), which is
    exactly 1023 and 1024 in a fresh process, and record the outcome of each call,
    including the exact exception type and message.
    """
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < PROBE_MIN_NOFILE:
        return {"skipped": f"RLIMIT_NOFILE soft limit is {soft}, below {PROBE_MIN_NOFILE}"}

    out: Json = {}
    a, b = socket.socketpair()
    dups: list[int] = []
    try:
        fd_low = fcntl.fcntl(a.fileno(), fcntl.F_DUPFD, FD_SETSIZE - 1)
        fd_high = fcntl.fcntl(a.fileno(), fcntl.F_DUPFD, FD_SETSIZE)
        dups += [fd_low, fd_high]

        def attempt(label: str, call: Callable[[], object]) -> None:
            try:
                call()
            except (ValueError, OSError) as exc:
                out[label] = {"ok": False, **_error(exc)}
            else:
                out[label] = {"ok": True}

        out["fd_low"], out["fd_high"] = fd_low, fd_high
        attempt("select_low", lambda: select.select([fd_low], [], [], 0))
        attempt("select_high", lambda: select.select([fd_high], [], [], 0))

        # SelectSelector keeps a Python set and only calls select() in .select(), so
        # registering descriptor 1024 succeeds and the failure comes later, on a wait.
        sel = selectors.SelectSelector()
        attempt("selectselector_register_high", lambda: sel.register(fd_high, selectors.EVENT_READ))
        attempt("selectselector_select_high", lambda: sel.select(0))
        sel.close()

        p = select.poll()
        p.register(fd_high, select.POLLIN)
        attempt("poll_high", lambda: p.poll(0))
        ep = select.epoll()
        try:
            ep.register(fd_high, select.EPOLLIN)
            attempt("epoll_high", lambda: ep.poll(0))
        finally:
            ep.close()

        # The other limit: more than FD_SETSIZE *entries* in one list, even if they are
        # all the same low descriptor.  The seed's echo server hits exactly this (its
        # `outputs` list collects duplicates; see docs/examples/select_echo_raw.py).
        attempt("select_1025_entries", lambda: select.select([a.fileno()] * 1025, [], [], 0))
    finally:
        for fd in dups:
            os.close(fd)
        a.close()
        b.close()
    return out


# --------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str  # shown in tables and the plot legend
    family: str  # "select", "poll" or "epoll": the kernel mechanism underneath
    api: str  # "raw" (module select) or "selectors"


BACKENDS: tuple[Backend, ...] = (
    Backend("select.select", "select", "raw"),
    Backend("select.poll", "poll", "raw"),
    Backend("select.epoll", "epoll", "raw"),
    Backend("SelectSelector", "select", "selectors"),
    Backend("PollSelector", "poll", "selectors"),
    Backend("EpollSelector", "epoll", "selectors"),
)

Waiter = Callable[[], Sequence[object]]


@contextmanager
def make_waiter(backend: Backend, fds: list[int]) -> Iterator[Waiter]:
    """Register ``fds`` for reading with ``backend``; yield a zero-timeout wait call.

    Registration happens once, outside the timing, as in a server: a server registers
    a connection once and then waits many times.  The yielded callable is what we time.
    """
    if backend.name == "select.select":
        rlist = list(fds)  # select() takes the whole list again on every call
        yield functools.partial(_select_readable, rlist)
    elif backend.name == "select.poll":
        p = select.poll()
        for fd in fds:
            p.register(fd, select.POLLIN)
        yield functools.partial(p.poll, 0)
    elif backend.name == "select.epoll":
        ep = select.epoll()
        try:
            for fd in fds:
                ep.register(fd, select.EPOLLIN)
            yield functools.partial(ep.poll, 0)
        finally:
            ep.close()
    else:
        cls = dict(SELECTOR_CLASSES)[backend.name]
        sel = cls()
        try:
            for fd in fds:
                sel.register(fd, selectors.EVENT_READ)
            yield functools.partial(sel.select, 0)
        finally:
            sel.close()


def _select_readable(rlist: list[int]) -> list[Any]:
    return select.select(rlist, [], [], 0)[0]


def _noop() -> list[Any]:
    return []


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


#: The clock for every figure: this thread's CPU time (user + system), from
#: CLOCK_THREAD_CPUTIME_ID.  A zero-timeout wait never sleeps, so on an idle machine it
#: agrees with wall time; on a shared one it leaves out the moments the scheduler gave
#: our core to another process, which would otherwise land in random batches.  The
#: wall-clock comparison recorded under "clock_check" shows how much that matters.
CLOCK: Callable[[], float] = time.thread_time
CLOCK_NAME = "time.thread_time() (CLOCK_THREAD_CPUTIME_ID)"


def _batch(call: Waiter, k: int, clock: Callable[[], float] = CLOCK) -> float:
    """Seconds per call, averaged over k back-to-back calls."""
    t0 = clock()
    for _ in range(k):
        call()
    return (clock() - t0) / k


def calibrate(call: Waiter, target_s: float) -> int:
    """Calls per batch so that one batch takes about ``target_s`` (timeit's approach)."""
    k = 1
    while k < 1_000_000:
        if _batch(call, k) * k >= target_s:
            return k
        k *= 2
    return k


def summarize(per_call_s: list[float]) -> Json:
    us = sorted(x * 1e6 for x in per_call_s)
    deciles = statistics.quantiles(us, n=10, method="inclusive")
    return {
        "median_us": round(statistics.median(us), 4),
        "p10_us": round(deciles[0], 4),
        "p90_us": round(deciles[-1], 4),
        "batches": len(us),
    }


def measure_size(
    pool: DescriptorPool, n: int, repeats: int, target_s: float, rng: random.Random
) -> list[Json]:
    """Time every backend at one N, idle and with one descriptor ready.

    Backends are timed round-robin, in a fresh random order each round, so slow drifts
    on the machine (frequency changes, a neighbour's burst) spread over all backends
    instead of landing on whichever happened to run last.
    """
    fds = pool.first(n)
    rows: list[Json] = []
    # The ready descriptor is the highest-numbered one: the worst case for a scan that
    # walks upward and stops at the last ready entry (CPython's poll result loop does).
    ready_fd = fds[-1]
    for scenario in ("idle", "one_ready"):
        waiters: dict[str, Waiter] = {}
        cells: dict[str, Json] = {}
        with _registered_all(fds) as registered:
            ctx = pool.one_ready(ready_fd) if scenario == "one_ready" else _nothing()
            with ctx:
                for backend in BACKENDS:
                    cell: Json = {
                        "backend": backend.name,
                        "family": backend.family,
                        "api": backend.api,
                        "scenario": scenario,
                        "n": n,
                        "min_fd": fds[0],
                        "max_fd": fds[-1],
                    }
                    cells[backend.name] = cell
                    call = registered[backend.name]
                    try:
                        got = call()
                    except (ValueError, OSError) as exc:
                        cell.update(status="error", error=_error(exc))
                        continue
                    # Sanity check: the scenario is what we say it is.
                    expected = 0 if scenario == "idle" else 1
                    if len(got) != expected:
                        raise RuntimeError(f"{backend.name} N={n} {scenario}: got {got!r}")
                    waiters[backend.name] = call
                gc.disable()  # a collection inside a batch would be charged to one backend
                try:
                    ks = {name: calibrate(call, target_s) for name, call in waiters.items()}
                    samples: dict[str, list[float]] = {name: [] for name in waiters}
                    order = list(waiters)
                    for _ in range(repeats):
                        rng.shuffle(order)
                        for name in order:
                            samples[name].append(_batch(waiters[name], ks[name]))
                finally:
                    gc.enable()
                for name in waiters:
                    cells[name].update(status="ok", calls_per_batch=ks[name])
                    cells[name].update(summarize(samples[name]))
        rows += [cells[b.name] for b in BACKENDS]
    return rows


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _registered_all(fds: list[int]) -> Iterator[dict[str, Waiter]]:
    """Every backend registered with the same descriptors at once."""
    with ExitStack() as stack:
        yield {b.name: stack.enter_context(make_waiter(b, fds)) for b in BACKENDS}


SELECTOR_CLASSES: tuple[tuple[str, type[selectors.BaseSelector]], ...] = (
    ("SelectSelector", selectors.SelectSelector),
    ("PollSelector", selectors.PollSelector),
    ("EpollSelector", selectors.EpollSelector),
)


def measure_one_shot(repeats: int, target_s: float, rng: random.Random) -> list[Json]:
    """A fresh selector per wait: create, register one socket, select(0), close.

    This is what stdlib ``socketserver.BaseServer.handle_request()`` does on every call
    (``serve_forever()`` instead keeps one selector for the whole loop).  For epoll it
    costs a descriptor and extra system calls (epoll_create1, epoll_ctl, close), which
    is the price the N-scaling tables above do not show.
    """
    a, b = socket.socketpair()
    fd = a.fileno()

    def one_shot(cls: type[selectors.BaseSelector]) -> list[Any]:
        with cls() as sel:
            sel.register(fd, selectors.EVENT_READ)
            return sel.select(0)

    try:
        calls: dict[str, Waiter] = {
            name: functools.partial(one_shot, cls) for name, cls in SELECTOR_CLASSES
        }
        gc.disable()
        try:
            ks = {name: calibrate(call, target_s) for name, call in calls.items()}
            samples: dict[str, list[float]] = {name: [] for name in calls}
            order = list(calls)
            for _ in range(repeats):
                rng.shuffle(order)
                for name in order:
                    samples[name].append(_batch(calls[name], ks[name]))
        finally:
            gc.enable()
    finally:
        a.close()
        b.close()
    return [{"backend": name, **summarize(samples[name])} for name in calls]


def compare_clocks(pool: DescriptorPool, repeats: int, target_s: float) -> Json:
    """One cell (idle poll at N = 500, or the largest N below) on both clocks, alternating.

    The figures use thread CPU time; this records what wall time said at the same
    moment, so a reader can see how busy the machine was and what CLOCK filtered out.
    """
    n = max((x for x in (500, 100, 10) if x <= len(pool.fds)), default=len(pool.fds))
    with make_waiter(Backend("select.poll", "poll", "raw"), pool.first(n)) as call:
        k = calibrate(call, target_s)
        cpu: list[float] = []
        wall: list[float] = []
        gc.disable()
        try:
            for _ in range(repeats):
                cpu.append(_batch(call, k, time.thread_time))
                wall.append(_batch(call, k, time.perf_counter))
        finally:
            gc.enable()
    return {
        "backend": "select.poll",
        "scenario": "idle",
        "n": n,
        "thread_time": summarize(cpu),
        "perf_counter": summarize(wall),
    }


def measure_floor(repeats: int, target_s: float) -> Json:
    """The same timing loop around a Python function that does nothing.

    Every figure includes this much loop-and-call overhead; it bounds how small a
    difference between backends can mean anything.
    """
    call: Waiter = _noop
    k = calibrate(call, target_s)
    return summarize([_batch(call, k) for _ in range(repeats)])


# --------------------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> Json:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "loadavg_1min_before": round(os.getloadavg()[0], 2),
    }


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------


def run(sizes: Sequence[int], repeats: int, target_s: float, argv: Sequence[str]) -> Json:
    t0 = time.monotonic()
    needed = max(max(sizes), PROBE_MIN_NOFILE) + FD_HEADROOM
    rlimit = raise_nofile(needed)
    data: Json = {
        "schema": 1,
        "machine": machine_info(),
        "command": shlex.join([sys.executable, "benchmarks/select_poll_epoll.py", *argv]),
        "settings": {
            "sizes": list(sizes),
            "repeats": repeats,
            "target_batch_s": target_s,
            "clock": CLOCK_NAME,
        },
        "rlimit_nofile": rlimit,
        # Probe first, in a fresh process, so F_DUPFD lands on exactly 1023 and 1024.
        "limits": probe_limits(),
    }
    soft = rlimit["soft"]
    fits = [n for n in sizes if soft == resource.RLIM_INFINITY or n + FD_HEADROOM <= soft]
    data["skipped_sizes"] = [n for n in sizes if n not in fits]
    rng = random.Random(1024)  # fixed seed: the same interleaving on every run
    data["floor"] = measure_floor(repeats, target_s)
    data["one_shot"] = measure_one_shot(repeats, target_s, rng)
    rows: list[Json] = []
    if fits:
        pool = DescriptorPool(max(fits))
        try:
            for n in fits:
                rows += measure_size(pool, n, repeats, target_s, rng)
                print(f"N={n:>6} done ({time.monotonic() - t0:5.1f} s)", file=sys.stderr)
            data["clock_check"] = compare_clocks(pool, repeats, target_s)
        finally:
            pool.close()
    data["results"] = rows
    data["machine"]["loadavg_1min_after"] = round(os.getloadavg()[0], 2)
    data["elapsed_s"] = round(time.monotonic() - t0, 1)
    return data


# --------------------------------------------------------------------------------------
# Rendering: Markdown and SVG, from the JSON only
# --------------------------------------------------------------------------------------


def _cell(data: Json, backend: str, scenario: str, n: int) -> Json | None:
    for row in data["results"]:
        if row["backend"] == backend and row["scenario"] == scenario and row["n"] == n:
            return dict(row)
    return None


def _med(data: Json, backend: str, scenario: str, n: int) -> float | None:
    row = _cell(data, backend, scenario, n)
    if row is None or row["status"] != "ok":
        return None
    return float(row["median_us"])


def _lowest_fd(data: Json) -> int:
    return min((int(r["min_fd"]) for r in data["results"]), default=3)


def _ok_sizes(data: Json, backend: str, scenario: str) -> list[int]:
    return [
        r["n"]
        for r in data["results"]
        if r["backend"] == backend and r["scenario"] == scenario and r["status"] == "ok"
    ]


def _fmt_us(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _ns_per_fd(
    data: Json, backend: str, scenario: str, up_to: int | None = None
) -> tuple[float, int, int] | None:
    """Least-squares slope of median time against N, in ns per registered descriptor.

    Over every N the backend worked at, or only those up to ``up_to``: slopes of
    two backends compare only when fitted over the same N, since poll's cost per
    descriptor grows with N and select stops at 1024.
    """
    ns = [n for n in _ok_sizes(data, backend, scenario) if up_to is None or n <= up_to]
    if len(ns) < 2:
        return None
    ys = [_med(data, backend, scenario, n) for n in ns]
    xs = [float(n) for n in ns]
    fy = [float(y) for y in ys if y is not None]
    mx, my = statistics.fmean(xs), statistics.fmean(fy)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope_us = sum((x - mx) * (y - my) for x, y in zip(xs, fy, strict=True)) / sxx
    return slope_us * 1000.0, ns[0], ns[-1]


def _per_fd_steps(data: Json, backend: str) -> str:
    """Cost per added descriptor between successive decades of N, when it changes much."""
    ns = _ok_sizes(data, backend, "idle")
    marks = [n for n in (100, 1000, 10000) if n in ns]
    if len(marks) < 3:
        return ""
    t = {n: _med(data, backend, "idle", n) for n in marks}
    assert None not in t.values()
    steps = [
        ((t[hi] or 0.0) - (t[lo] or 0.0)) * 1000.0 / (hi - lo)
        for lo, hi in itertools.pairwise(marks)
    ]
    if steps[-1] < 1.3 * steps[0]:
        return ""
    return (
        f" Each added descriptor costs more at large N: {steps[0]:.0f} ns between"
        f" N = {marks[0]} and {marks[1]}, {steps[1]:.0f} ns between N = {marks[1]} and"
        f" {marks[2]} (probably because {marks[2]} sockets' kernel state no longer fits in"
        " the CPU caches; this run did not measure cache misses)."
    )


def _select_against_poll(data: Json) -> str:
    """Compare select and poll over the N where both worked (their slopes above differ in range)."""
    both = [
        n
        for n in _ok_sizes(data, "select.select", "idle")
        if n in _ok_sizes(data, "select.poll", "idle")
    ]
    if len(both) < 2:
        return ""
    poll_ns = _ok_sizes(data, "select.poll", "idle")
    s_slope = _ns_per_fd(data, "select.select", "idle", both[-1])
    p_slope = _ns_per_fd(data, "select.poll", "idle", both[-1])
    assert s_slope is not None and p_slope is not None
    cheaper = [
        n
        for n in both
        if (_med(data, "select.poll", "idle", n) or 0.0)
        < (_med(data, "select.select", "idle", n) or 0.0)
    ]
    sm, pm = (
        _med(data, "select.select", "idle", both[-1]),
        _med(data, "select.poll", "idle", both[-1]),
    )
    assert sm is not None and pm is not None
    if len(cheaper) == len(both):
        verdict = "poll was the cheaper of the two at every N measured with both"
    else:
        verdict = f"poll was the cheaper at N = {', '.join(map(str, cheaper)) or 'none'} of those"
    return (
        f"* **Where both work, compare them over the same N.** The two slopes above are"
        f" fitted over different ranges: select's stops at N = {both[-1]} (at the next N,"
        f" `select()` raised ValueError), poll's runs on to N = {poll_ns[-1]}, where each"
        f" descriptor costs poll more. Over N = {both[0]} to {both[-1]} for both, `select.poll`"
        f" rises {p_slope[0]:.0f} ns per descriptor against `select.select`'s {s_slope[0]:.0f},"
        f" and {verdict} ({_fmt_us(pm)} against {_fmt_us(sm)} µs at N = {both[-1]})."
    )


def _table(data: Json, scenario: str) -> list[str]:
    sizes = sorted({r["n"] for r in data["results"]})
    names = [b.name for b in BACKENDS]
    lines = [
        "| N | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---:|" + "---:|" * len(names),
    ]
    for n in sizes:
        cells = []
        for name in names:
            row = _cell(data, name, scenario, n)
            if row is None:
                cells.append("")
            elif row["status"] == "ok":
                cells.append(
                    f"{_fmt_us(row['median_us'])} "
                    f"({_fmt_us(row['p10_us'])}{DASH}{_fmt_us(row['p90_us'])})"
                )
            else:
                cells.append(f"**{row['error']['type']}**")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def _ratio_phrase(a: float, b: float) -> str:
    return f"{TIMES}{b / a:.1f}" if b >= a else f"{TIMES}{b / a:.2f}"


def render_markdown(data: Json) -> str:
    m = data["machine"]
    s = data["settings"]
    limits = data["limits"]
    sizes = sorted({r["n"] for r in data["results"]})
    lo, hi = sizes[0], sizes[-1]
    out: list[str] = []
    w = out.append

    w("# select vs poll vs epoll, measured")
    w("")
    w(
        "<!-- Generated by benchmarks/select_poll_epoll.py from docs/data/select-poll-epoll.json."
        " Do not edit: re-run the script (or `--render`), and `--check` in the tests keeps"
        " this file, the plot and the JSON in step. -->"
    )
    w("")
    w(
        "The seed post sums up the three mechanisms in three lines: *select* loops over"
        " every descriptor and stops at 1024 of them; *poll* loops too but has no limit;"
        " *epoll* does not loop. Every serve loop in this project (and in stdlib"
        " `socketserver`) waits through one of them, via `selectors`, once per turn. This"
        " section measures what one such wait costs, so that the claims rest on figures."
    )
    w("")
    w("## What was timed")
    w("")
    w(
        "N descriptors are registered for reading: both ends of N/2 `socketpair()`s,"
        f" the lowest free numbers (from {_lowest_fd(data)} up), as a server holding N quiet"
        " connections would have them. Then one call with a **zero timeout** is timed:"
        " `select.select(fds, [], [], 0)`, `poll.poll(0)`, `epoll.poll(0)`, or"
        " `Selector.select(0)`. A zero timeout"
        ' measures the cost of *asking* ("is anything ready?"), which a server pays on'
        " every turn, without ever sleeping. Two scenarios:"
    )
    w("")
    w("* **idle**: nothing is readable; the call returns an empty list.")
    w(
        "* **one ready**: one byte waits on the highest-numbered descriptor; the call"
        " returns exactly that one (the script checks both results before timing)."
    )
    w("")
    w(
        f"Each figure is the median over {s['repeats']} batches of back-to-back calls"
        f" (each batch about {s['target_batch_s'] * 1000:g} ms), in microseconds per call,"
        f" with the 10th{DASH}90th percentile range in brackets. Backends are timed round-robin"
        " in a shuffled order, so a slow moment on the machine hits all of them alike. The"
        " same loop around a Python function that does nothing costs"
        f" {_fmt_us(data['floor']['median_us'])} µs per call; every figure includes that"
        " much loop overhead."
    )
    w("")
    cc = data.get("clock_check")
    if cc:
        cpu, wall = cc["thread_time"], cc["perf_counter"]
        w(
            "The clock is this thread's CPU time (`time.thread_time()`, that is"
            " `CLOCK_THREAD_CPUTIME_ID`: user plus system time), not wall time. A"
            " zero-timeout wait never sleeps, so on a quiet machine the two agree; on a"
            " shared one, CPU time leaves out the moments the scheduler ran another process"
            f" on our core. During this run, idle `poll` at N = {cc['n']} measured"
            f" {_fmt_us(cpu['median_us'])} µs ({_fmt_us(cpu['p10_us'])}{DASH}"
            f"{_fmt_us(cpu['p90_us'])}) in CPU time and {_fmt_us(wall['median_us'])} µs"
            f" ({_fmt_us(wall['p10_us'])}{DASH}{_fmt_us(wall['p90_us'])}) in wall time,"
            " batch for batch."
        )
        w("")
    else:
        # Recordings made before the CPU-time clock (schema 1 without "clock").
        w(
            "The clock is wall time (`time.perf_counter()`). A zero-timeout wait never"
            " sleeps, so that is the call's cost as long as nothing else runs on our core;"
            " the load average below says how true that was during the run."
        )
        w("")
    w("## The machine")
    w("")
    w(f"* CPU: {m['cpu']}, {m['cores']} cores")
    w(f"* Kernel: {m['kernel']}")
    w(f"* Python: {m['python']}")
    w(
        f"* Load average (1 min) before / after the run: {m['loadavg_1min_before']} /"
        f" {m['loadavg_1min_after']}"
    )
    rl = data["rlimit_nofile"]
    if rl["soft"] != rl["soft_before"]:
        w(f"* RLIMIT_NOFILE: soft limit raised from {rl['soft_before']} to {rl['soft']}")
    else:
        w(f"* RLIMIT_NOFILE: soft limit {rl['soft']} (enough; not raised), hard {rl['hard']}")
    w(f"* Command, from the repository root, took {data['elapsed_s']} s:")
    w("")
    w("  ```console")
    w(f"  $ {data['command']}")
    w("  ```")
    w("")
    w(
        "  The plot needs matplotlib (`pip install -r benchmarks/requirements.txt`);"
        " `--quick` runs a tiny version in a second and writes nothing."
    )
    w("")
    if data.get("skipped_sizes"):
        w(
            f"N = {', '.join(map(str, data['skipped_sizes']))} did not fit under the"
            " RLIMIT_NOFILE hard limit and was skipped."
        )
        w("")
    w("## The figures")
    w("")
    w(f"Microseconds per call, median (p10{DASH}p90). **ValueError**: the call raised (see below).")
    w("")
    w("### Idle: N registered, none ready")
    w("")
    out += _table(data, "idle")
    w("")
    w("### One ready: N registered, one readable")
    w("")
    out += _table(data, "one_ready")
    w("")
    w("![Time per zero-timeout wait against N, log-log](img/select-poll-epoll.svg)")
    w("")
    w("## What the numbers show")
    w("")

    # 1. select and poll: the cost grows with N.
    for name, why in (
        (
            "select.select",
            "CPython turns the list into an `fd_set` (one conversion per entry), the kernel"
            " walks the bitmap up to the highest descriptor and polls each one, and CPython"
            " walks its table again to build the result",
        ),
        (
            "select.poll",
            "the kernel copies in one `struct pollfd` per descriptor and calls each"
            " socket's poll method, on every call",
        ),
    ):
        ns = _ok_sizes(data, name, "idle")
        if len(ns) >= 2:
            a, b = _med(data, name, "idle", ns[0]), _med(data, name, "idle", ns[-1])
            slope = _ns_per_fd(data, name, "idle")
            assert a is not None and b is not None and slope is not None
            w(
                f"* **`{name}` costs grow with N.** Idle, it takes {_fmt_us(a)} µs at"
                f" N = {ns[0]} and {_fmt_us(b)} µs at N = {ns[-1]}"
                f" ({_ratio_phrase(a, b)} for {TIMES}{ns[-1] // ns[0]} descriptors); a straight"
                f" line through all its medians (N = {slope[1]} to {slope[2]}) rises"
                f" {slope[0]:.0f} ns per registered"
                f' descriptor. That is the "loop" in the seed\'s claim: {why}.'
                + _per_fd_steps(data, name)
            )
    if comparison := _select_against_poll(data):
        w(comparison)
    # 2. epoll: flat.
    ns = _ok_sizes(data, "select.epoll", "idle")
    pn = _ok_sizes(data, "select.poll", "idle")
    if len(ns) >= 2 and pn:
        a, b = _med(data, "select.epoll", "idle", ns[0]), _med(data, "select.epoll", "idle", ns[-1])
        pa, pb = _med(data, "select.poll", "idle", pn[0]), _med(data, "select.poll", "idle", pn[-1])
        slope = _ns_per_fd(data, "select.epoll", "idle")
        assert None not in (a, b, pa, pb) and slope is not None
        assert a is not None and b is not None and pa is not None and pb is not None
        flat = b / a < 1.5
        w(
            f"* **`select.epoll` {'does not' if flat else 'barely'} depend on how many"
            f" descriptors are registered.** Idle, it takes {_fmt_us(a)} µs at N = {ns[0]}"
            f" and {_fmt_us(b)} µs at N = {ns[-1]} ({_ratio_phrase(a, b)}; fitted slope"
            f" {slope[0]:.2f} ns per descriptor), while `poll` went from {_fmt_us(pa)} to"
            f" {_fmt_us(pb)} µs over the same range. At N = {ns[-1]} one `poll` wait costs"
            f" as much as {pb / b:.0f} `epoll` waits. Registration (`epoll_ctl`) happened"
            " once, before timing; after that the kernel keeps a list of *ready*"
            " descriptors, filled by a callback from each socket when data arrives, and"
            " `epoll_wait` only looks at that list."
        )
    # 3. One ready.
    if hi in _ok_sizes(data, "select.epoll", "one_ready"):
        ei = _med(data, "select.epoll", "idle", hi)
        er = _med(data, "select.epoll", "one_ready", hi)
        pi = _med(data, "select.poll", "idle", hi)
        pr = _med(data, "select.poll", "one_ready", hi)
        if None not in (ei, er, pi, pr):
            assert ei is not None and er is not None and pi is not None and pr is not None
            w(
                f"* **A ready descriptor costs epoll a fixed amount.** At N = {hi}, one"
                f" ready descriptor moves `epoll` from {_fmt_us(ei)} to {_fmt_us(er)} µs"
                f" (building one `(fd, events)` result) and `poll` from {_fmt_us(pi)} to"
                f" {_fmt_us(pr)} µs: for poll the scan of all {hi} entries dominates"
                " whether or not anything is ready."
            )
    # 4. selectors overhead.
    sel_bits = []
    noisy: list[str] = []
    for raw, wrapped in (
        ("select.select", "SelectSelector"),
        ("select.poll", "PollSelector"),
        ("select.epoll", "EpollSelector"),
    ):
        ns = _ok_sizes(data, raw, "idle")
        if not ns:
            continue
        top = ns[-1]
        r0, x0 = _med(data, raw, "idle", ns[0]), _med(data, wrapped, "idle", ns[0])
        r1, x1 = _med(data, raw, "idle", top), _med(data, wrapped, "idle", top)
        raw_top = _cell(data, raw, "idle", top)
        if None in (r0, x0, r1, x1) or raw_top is None:
            continue
        assert r0 is not None and x0 is not None and r1 is not None and x1 is not None
        sel_bits.append(
            f"`{wrapped}` adds {_fmt_us(x0 - r0)} µs to `{raw}` at N = {ns[0]}"
            f" ({_fmt_us(x0)} vs {_fmt_us(r0)}) and {_fmt_us(x1 - r1)} µs at N = {top}"
            f" ({_fmt_us(x1)} vs {_fmt_us(r1)})"
        )
        if raw_top["p10_us"] <= x1 <= raw_top["p90_us"] and abs(x1 - r1) / x1 > 0.05:
            # The difference is smaller than the raw call's own spread: say so rather
            # than present run-to-run noise as the wrapper's cost.
            noisy.append(
                f"at N = {top} the `{wrapped}` median lies inside `{raw}`'s own p10{DASH}p90"
                f" range ({_fmt_us(raw_top['p10_us'])}{DASH}{_fmt_us(raw_top['p90_us'])} µs),"
                " so that difference is within the measurement's spread, not a wrapper cost"
            )
    if sel_bits:
        w(
            "* **`selectors` adds a per-call cost on top; the shape comes from the call"
            f" underneath.** Idle: {'; '.join(sel_bits)}."
            + (f" Note: {'; '.join(noisy)}." if noisy else "")
            + " The wrapper maps each ready descriptor back to its `SelectorKey` (and"
            " `SelectSelector` hands `select()` a set, which it converts like the list);"
            " next to a scan of thousands of descriptors that is small, so each wrapper's"
            " curve follows its system call's."
        )
    er_hi = _med(data, "EpollSelector", "idle", hi)
    e_hi = _med(data, "select.epoll", "idle", hi)
    er_lo = _med(data, "EpollSelector", "idle", lo)
    if er_hi is not None and e_hi is not None and er_lo is not None and er_hi / er_lo >= 1.5:
        w(
            f"* **`EpollSelector` is not quite flat.** Idle, it goes from {_fmt_us(er_lo)} µs"
            f" at N = {lo} to {_fmt_us(er_hi)} µs at N = {hi}, where raw `epoll.poll(0)`"
            f" takes {_fmt_us(e_hi)} µs. A likely cause, not measured here:"
            " `EpollSelector.select` passes `maxevents = len(registered descriptors)`, and"
            " CPython allocates an event buffer of that size on every call."
        )
    # 5. The select limit.
    w(
        f"* **select's limit is {FD_SETSIZE} descriptor *numbers*, not {FD_SETSIZE}"
        " descriptors.**" + _select_limit_text(data, limits)
    )
    w("")
    w("## The seed's claims, checked")
    w("")
    w("| The seed says | Measured here |")
    w("|---|---|")
    for claim, finding in _claims(data, limits):
        w(f"| {claim} | {finding} |")
    w("")
    w("## A fresh selector per wait")
    w("")
    w(
        "The tables above register once and wait many times, as `serve_forever()` does."
        " Stdlib `socketserver.BaseServer.handle_request()` instead builds a selector for"
        " every call: create it, register the one listening socket, wait, close it. That"
        " one-shot cost, with one socket and a zero timeout:"
    )
    w("")
    w("| Selector | µs per create + register + select(0) + close |")
    w("|---|---:|")
    shots = {r["backend"]: r for r in data.get("one_shot", [])}
    for name, _cls in SELECTOR_CLASSES:
        if name in shots:
            r = shots[name]
            w(
                f"| `{name}` | {_fmt_us(r['median_us'])}"
                f" ({_fmt_us(r['p10_us'])}{DASH}{_fmt_us(r['p90_us'])}) |"
            )
    w("")
    ps, es = shots.get("PollSelector"), shots.get("EpollSelector")
    small = {name: _med(data, name, "idle", lo) for name, _cls in SELECTOR_CLASSES}
    vals = [v for v in small.values() if v is not None]
    if ps and es and vals:
        listing = ", ".join(f"`{k}` {_fmt_us(v)} µs" for k, v in small.items() if v is not None)
        w(
            "What this means for a server: with a handful of descriptors the three"
            f" selectors are within {_fmt_us(max(vals) - min(vals))} µs of each other"
            f" (N = {lo}, idle: {listing}), and the difference"
            " that matters is how the cost of *one turn of the loop* grows with the number"
            " of quiet connections: in proportion for select and poll, not at all for"
            " epoll. That is why `selectors.DefaultSelector` is `EpollSelector` on Linux."
            " Stdlib `socketserver` watches one listening socket and, in `handle_request()`,"
            " makes a new selector per call; there an epoll selector costs"
            f" {_fmt_us(es['median_us'])} µs against {_fmt_us(ps['median_us'])} µs for"
            " `PollSelector` (an extra descriptor and the `epoll_create1`/`epoll_ctl`"
            " system calls), which is consistent with its choice of `PollSelector` where"
            " poll exists."
        )
        w("")
    return "\n".join(out)


def _select_limit_text(data: Json, limits: Json) -> str:
    parts: list[str] = []
    first_err = next(
        (
            r
            for r in sorted(data["results"], key=lambda r: r["n"])
            if r["backend"] == "select.select" and r["status"] == "error"
        ),
        None,
    )
    ok = _ok_sizes(data, "select.select", "idle")
    if first_err is not None and ok:
        last_ok = max(ok)
        last_fd = _cell(data, "select.select", "idle", last_ok)
        assert last_fd is not None
        parts.append(
            f" At N = {last_ok} (highest descriptor {last_fd['max_fd']}) `select.select`"
            f" works; at N = {first_err['n']} the highest descriptor is"
            f" {first_err['max_fd']} and it raises `{first_err['error']['type']}:"
            f" {first_err['error']['message']}`, although {first_err['n']} <"
            f" {FD_SETSIZE}: {first_err['max_fd'] + 1 - first_err['n']} of the numbers"
            f" 0{DASH}{first_err['max_fd']} were held by other open files (stdin, stdout,"
            " stderr, and whatever the process inherited), so the registered ones reached"
            " past 1023."
        )
    if "skipped" in limits:
        parts.append(f" (The direct probe was skipped: {limits['skipped']}.)")
    else:
        lo_r, hi_r = limits["select_low"], limits["select_high"]
        if lo_r["ok"] and not hi_r["ok"]:
            parts.append(
                f" Probed directly: descriptor {limits['fd_low']} works, descriptor"
                f" {limits['fd_high']} raises `{hi_r['type']}: {hi_r['message']}`."
            )
        reg, sel = limits["selectselector_register_high"], limits["selectselector_select_high"]
        if reg["ok"] and not sel["ok"]:
            parts.append(
                f" `SelectSelector.register({limits['fd_high']})` succeeds and the"
                f" failure comes later, from `.select()`: `{sel['type']}: {sel['message']}`"
                " — a server using it fails on its next wait, not when it accepts."
            )
        if limits["poll_high"]["ok"] and limits["epoll_high"]["ok"]:
            parts.append(f" `poll` and `epoll` take descriptor {limits['fd_high']} without fuss.")
        many = limits["select_1025_entries"]
        if not many["ok"]:
            parts.append(
                " A second limit counts list *entries*: one low descriptor repeated 1025"
                f" times raises `{many['type']}: {many['message']}`. The seed's echo server"
                " walks into this one: its `outputs` list collects duplicates of a socket"
                " whose peer does not read, and once there are more than 1024 the server"
                " dies (see `docs/examples/select_echo_raw.py`)."
            )
    return "".join(parts)


def _claims(data: Json, limits: Json) -> list[tuple[str, str]]:
    sizes = sorted({r["n"] for r in data["results"]})
    lo, hi = sizes[0], sizes[-1]
    rows: list[tuple[str, str]] = []
    s_ok = _ok_sizes(data, "select.select", "idle")
    if s_ok:
        a = _med(data, "select.select", "idle", s_ok[0])
        b = _med(data, "select.select", "idle", s_ok[-1])
        hi_r = limits.get("select_high", {})
        err = f"; descriptor ≥ {FD_SETSIZE}: `{hi_r['type']}`" if hi_r and not hi_r["ok"] else ""
        assert a is not None and b is not None
        rows.append(
            (
                "select uses a for loop, at most 1024 descriptors",
                f"True, more precisely: {_fmt_us(a)} → {_fmt_us(b)} µs from N = {s_ok[0]} to"
                f" {s_ok[-1]}; the limit is on descriptor numbers (< {FD_SETSIZE}){err}.",
            )
        )
    pa, pb = _med(data, "select.poll", "idle", lo), _med(data, "select.poll", "idle", hi)
    if pa is not None and pb is not None:
        rows.append(
            (
                "poll uses a for loop, no limit on descriptors",
                f"True: it watched N = {hi}; {_fmt_us(pa)} → {_fmt_us(pb)} µs from N = {lo}"
                f" to {hi}.",
            )
        )
    ea, eb = _med(data, "select.epoll", "idle", lo), _med(data, "select.epoll", "idle", hi)
    if ea is not None and eb is not None:
        rows.append(
            (
                "epoll no longer loops; it is asynchronous and efficient",
                f"No loop, measured: {_fmt_us(ea)} → {_fmt_us(eb)} µs from N = {lo} to {hi}."
                " Not asynchronous, though: `epoll_wait` blocks like the others; the"
                " difference is a kernel-kept ready list.",
            )
        )
    rows.append(
        (
            "Windows only supports select",
            "Not measured here (Linux only).",
        )
    )
    return rows


def render_svg(data: Json, fmt: str = "svg") -> bytes:
    """The plot, as deterministic SVG bytes (same JSON + same matplotlib → same bytes).

    ``fmt="png"`` renders the same figure as PNG, for looking at it without a browser.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # svg.hashsalt fixes the ids matplotlib would otherwise derive from random numbers,
    # and Date=None drops the timestamp: the SVG changes only when the figures do.
    plt.rcParams["svg.hashsalt"] = "select-poll-epoll"
    plt.rcParams["font.size"] = 9
    colors = {"select": "#d62728", "poll": "#1f77b4", "epoll": "#2ca02c"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, scenario, title in (
        (axes[0], "idle", "Idle: N registered, none ready"),
        (axes[1], "one_ready", "One of N ready"),
    ):
        for b in BACKENDS:
            rows = [
                r
                for r in data["results"]
                if r["backend"] == b.name and r["scenario"] == scenario and r["status"] == "ok"
            ]
            if not rows:
                continue
            xs = [r["n"] for r in rows]
            ys = [r["median_us"] for r in rows]
            style = "-" if b.api == "raw" else "--"
            marker = "o" if b.api == "raw" else "s"
            ax.plot(xs, ys, style, marker=marker, ms=4, color=colors[b.family], label=b.name)
            ax.fill_between(
                xs,
                [r["p10_us"] for r in rows],
                [r["p90_us"] for r in rows],
                color=colors[b.family],
                alpha=0.12,
                linewidth=0,
            )
            errors = [
                r
                for r in data["results"]
                if r["backend"] == b.name and r["scenario"] == scenario and r["status"] == "error"
            ]
            if errors:
                # Where the backend stopped: an x at the first N that raised, drawn at
                # the last measured height, so the curve visibly ends in an error.
                first = min(errors, key=lambda r: r["n"])
                ax.plot([first["n"]], [ys[-1]], "x", ms=7, mew=1.5, color=colors[b.family])
                if b.api == "raw":
                    ax.annotate(
                        f"{first['error']['type']} at N = {first['n']}",
                        (first["n"], ys[-1]),
                        xytext=(8, -4),
                        textcoords="offset points",
                        fontsize=7,
                        color=colors[b.family],
                    )
        ax.axvline(FD_SETSIZE, color="grey", lw=0.8, ls=":")
        ax.text(
            FD_SETSIZE * 1.05,
            0.97,
            "select(): no descriptor\nnumber ≥ 1024",
            transform=ax.get_xaxis_transform(),
            va="top",
            fontsize=7,
            color="grey",
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("N registered descriptors")
        ax.grid(True, which="major", lw=0.4, alpha=0.5)
    axes[0].set_ylabel(f"µs per zero-timeout wait (median, p10{DASH}p90 band)")
    axes[1].legend(loc="upper left", fontsize=7)
    m = data["machine"]
    fig.suptitle(f"One wait, {m['python']}, {m['kernel']}, {m['cpu']}", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
    plt.close(fig)
    return buf.getvalue()


def write_docs(data: Json, *, svg: bool = True) -> list[Path]:
    JSON_PATH.parent.mkdir(parents=True, exist_ok=True)
    JSON_PATH.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    MD_PATH.write_text(render_markdown(data), encoding="utf-8")
    written = [JSON_PATH, MD_PATH]
    if svg:
        SVG_PATH.parent.mkdir(parents=True, exist_ok=True)
        SVG_PATH.write_bytes(render_svg(data))
        written.append(SVG_PATH)
    return written


def check_docs() -> int:
    """Exit status 1 if the committed md (or svg) differs from a re-render of the JSON."""
    data = json.loads(JSON_PATH.read_text(encoding="utf-8"))
    status = 0
    if MD_PATH.read_text(encoding="utf-8") != render_markdown(data):
        print(f"stale: {MD_PATH.relative_to(REPO)} (re-run with --render)", file=sys.stderr)
        status = 1
    try:
        import matplotlib
    except ImportError:
        print("matplotlib not installed: SVG not checked", file=sys.stderr)
        return status
    if matplotlib.__version__ != data.get("rendered_with_matplotlib"):
        # Another matplotlib lays text out differently; a byte mismatch would say nothing.
        print(
            f"SVG not checked: rendered with matplotlib {data.get('rendered_with_matplotlib')},"
            f" this is {matplotlib.__version__}",
            file=sys.stderr,
        )
        return status
    if SVG_PATH.read_bytes() != render_svg(data):
        print(f"stale: {SVG_PATH.relative_to(REPO)} (re-run with --render)", file=sys.stderr)
        status = 1
    return status


def _stamp_matplotlib(data: Json) -> bool:
    try:
        import matplotlib
    except ImportError:
        return False
    data["rendered_with_matplotlib"] = matplotlib.__version__
    return True


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny run (N = 10, 100; few batches; a few seconds); writes nothing unless asked",
    )
    ap.add_argument("--sizes", type=int, nargs="+", help="override the N values")
    ap.add_argument("--repeats", type=int, help="batches per measurement")
    ap.add_argument("--json", metavar="PATH", help="also write the raw results here ('-' = stdout)")
    ap.add_argument(
        "--write-docs",
        action="store_true",
        help="write docs/ (the default for a full run; needed to write after --quick)",
    )
    ap.add_argument("--no-docs", action="store_true", help="full run without writing docs/")
    ap.add_argument("--no-plot", action="store_true", help="write the md and JSON but no SVG")
    ap.add_argument("--render", action="store_true", help="re-render md and svg from the JSON")
    ap.add_argument("--check", action="store_true", help="exit 1 if md/svg are stale")
    args = ap.parse_args(args_list)

    if args.check:
        return check_docs()
    if args.render:
        data = json.loads(JSON_PATH.read_text(encoding="utf-8"))
        plot = not args.no_plot and _stamp_matplotlib(data)
        for path in write_docs(data, svg=plot):
            print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
        return 0

    sizes = tuple(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else SIZES)
    repeats = args.repeats or (QUICK_REPEATS if args.quick else REPEATS)
    target = QUICK_TARGET_BATCH_S if args.quick else TARGET_BATCH_S
    data = run(sizes, repeats, target, args_list)

    if args.json == "-":
        json.dump(data, sys.stdout, indent=1, ensure_ascii=False)
        sys.stdout.write("\n")
    elif args.json:
        Path(args.json).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    write = args.write_docs or not (args.quick or args.no_docs)
    if write:
        plot = not args.no_plot and _stamp_matplotlib(data)
        for path in write_docs(data, svg=plot):
            print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    if args.json != "-":
        print(render_markdown(data).split("## The figures", 1)[1].split("![", 1)[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
