"""Turn the results of benchmarks/run.py into docs/performance.md and its plots.

Every number in the report comes from the results dict that run.py measured
(or from a saved copy of it, with ``run.py --report-only``); the fixed text
only explains the method.  Ratios are computed pair by pair: repeat r of
server A is divided by repeat r of server B (run next to each other, since
repeats are interleaved), and the report gives the median of those ratios
with their min–max, not a ratio of medians.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

Result = dict[str, Any]
Results = dict[str, Any]

#: A generator using at least this share of its core is probably what limits
#: the figure (it is single-threaded), so the figure is flagged.
GENERATOR_BOUND = 0.9
#: The whole machine at least this busy (all cores): the box is the limit.
MACHINE_BOUND = 0.95

BASELINE = "stdlib-threading"
BARE_LOOP = "selectors-loop"

#: Issue 6's targets that are ratios: (text, scenario key, A, B, minimum of A/B).
RATIO_TARGETS: list[tuple[str, str, str, str, float]] = [
    *[
        (
            f"MultiplexingTCPServer ≥ 0.9× bare selectors loop, ping-pong C={c}",
            f"pingpong-c{c}",
            "mini-multiplexing",
            BARE_LOOP,
            0.9,
        )
        for c in (64, 256)
    ],
    *[
        (
            f"MultiplexingTCPServer ≥ 3× asyncio streams, ping-pong C={c}",
            f"pingpong-c{c}",
            "mini-multiplexing",
            "asyncio-streams",
            3.0,
        )
        for c in (64, 256)
    ],
    (
        "MultiplexingTCPServer connection rate ≥ 0.9× bare selectors loop",
        "connrate-c16",
        "mini-multiplexing",
        BARE_LOOP,
        0.9,
    ),
    *[
        (
            f"ThreadingTCPServer ≥ 1.0× stdlib's, ping-pong C={c}",
            f"pingpong-c{c}",
            "mini-threading",
            BASELINE,
            1.0,
        )
        for c in (1, 16, 64, 256)
    ],
    (
        "ThreadingTCPServer connection rate ≥ 1.2× stdlib's",
        "connrate-c16",
        "mini-threading",
        BASELINE,
        1.2,
    ),
    (
        "ThreadPoolTCPServer connection rate ≥ 2× stdlib ThreadingTCPServer",
        "connrate-c16",
        "mini-threadpool",
        BASELINE,
        2.0,
    ),
    (
        "MultiplexingTCPServer connection rate ≥ 3× stdlib ThreadingTCPServer",
        "connrate-c16",
        "mini-multiplexing",
        BASELINE,
        3.0,
    ),
    *[
        (
            f"http.server on our ThreadingTCPServer ≥ 1.0× on stdlib's, wrk C={c}",
            f"http-c{c}",
            "http-mini-threading",
            "http-stdlib",
            1.0,
        )
        for c in (16, 64)
    ],
]


# --------------------------------------------------------------------------
# Statistics


def ok_runs(runs: Iterable[Result]) -> list[Result]:
    return [r for r in runs if r.get("ok")]


def values(runs: Iterable[Result], key: str = "value") -> list[float]:
    return [float(r[key]) for r in ok_runs(runs) if r.get(key) is not None and r[key] >= 0]


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def paired_ratios(a: list[Result], b: list[Result], key: str = "value") -> list[float]:
    """A/B for each repeat where both ran: the repeats were run side by side."""
    ratios = []
    for ra, rb in zip(a, b, strict=False):  # a failed server has fewer
        if ra.get("ok") and rb.get("ok") and rb.get(key) and ra.get(key) is not None:
            ratios.append(float(ra[key]) / float(rb[key]))
    return ratios


# --------------------------------------------------------------------------
# Formatting


def fmt_num(x: float | None) -> str:
    if x is None:
        return "–"
    if x >= 100_000:
        return f"{x / 1e3:.0f}k"
    if x >= 10_000:
        return f"{x / 1e3:.1f}k"
    if x >= 1_000:
        return f"{x / 1e3:.2f}k"
    if x >= 10:
        return f"{x:.0f}"
    return f"{x:.2g}"


def fmt_us(us: float | None) -> str:
    if us is None or us < 0:
        return "–"
    if us >= 1e6:
        return f"{us / 1e6:.2f} s"
    if us >= 1e3:
        return f"{us / 1e3:.1f} ms"
    return f"{us:.0f} µs"


def fmt_ms(ms: float | None) -> str:
    return fmt_us(ms * 1e3 if ms is not None else None)


def fmt_kib(text: str) -> str:
    """'24684084 kB' (from /proc/meminfo) as GiB."""
    parts = text.split()
    return f"{int(parts[0]) / 2**20:.1f} GiB" if parts and parts[0].isdigit() else text


def fmt_share(x: float | None) -> str:
    return "–" if x is None or x < 0 else f"{x * 100:.0f}%"


def fmt_range(xs: list[float], fmt: Any = fmt_num) -> str:
    return f"{fmt(min(xs))}–{fmt(max(xs))}" if xs else "–"


def fmt_ratio(xs: list[float]) -> str:
    if not xs:
        return "–"
    med = statistics.median(xs)
    if len(xs) == 1:
        return f"{med:.2f}×"
    return f"{med:.2f}× ({min(xs):.2f}–{max(xs):.2f})"


def cell(text: str) -> str:
    """Table cells are one line, and a | would end the cell."""
    return " ".join(text.split()).replace("|", "\\|")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def gen_flag(runs: list[Result]) -> str:
    """† if the generator, ‡ if the whole machine, was near saturation."""
    share = median(values(runs, "cpu_share"))
    box = median(values(runs, "machine_busy_share"))
    flags = ""
    if share is not None and share >= GENERATOR_BOUND:
        flags += "†"
    if box is not None and box >= MACHINE_BOUND:
        flags += "‡"
    return " " + flags if flags else ""


FLAG_NOTE = (
    f"† the generator used at least {GENERATOR_BOUND:.0%} of its core (it is one thread): the "
    f"figure may be the client's limit. ‡ the machine was at least {MACHINE_BOUND:.0%} busy "
    "(all cores, from /proc/stat): the figure may be the box's limit."
)


# --------------------------------------------------------------------------
# Sections


def label(results: Results, name: str) -> str:
    return str(results["servers"].get(name, {}).get("label", name))


def loadavg(text: str) -> str:
    return " ".join(text.split()[:3])


def machine_section(results: Results) -> list[str]:
    meta = results["meta"]
    m = meta["machine"]
    s = meta["settings"]
    rows = [
        ["CPU", f"{m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable by this run)"],
        ["memory", fmt_kib(m["memory"])],
        ["kernel", m["kernel"]],
        ["Python", m["python"]],
        ["compiler (load generator)", m["gcc"]],
        ["wrk", m["wrk"]],
        ["strace", m["strace"]],
        ["uvloop", m["uvloop"]],
        ["matplotlib", m["matplotlib"]],
        ["net.core.somaxconn / tcp_tw_reuse", f"{m['somaxconn']} / {m['tcp_tw_reuse']}"],
        ["RLIMIT_NOFILE soft/hard", m["nofile"]],
        ["repository commit", m["git"]],
        [
            "load average (1, 5, 15 min) at start / end",
            f"{loadavg(meta['loadavg_start'])} / {loadavg(meta.get('loadavg_end', '?'))}",
        ],
        ["started, duration", f"{meta['started']}, {meta.get('duration_s', '?')} s"],
        ["repeats (interleaved)", str(s["repeats"])],
    ]
    return ["## The machine", "", *table(["", ""], rows), ""]


def servers_section(results: Results) -> list[str]:
    rows = []
    for name, info in results["servers"].items():
        status = "not available: " + info["unavailable"] if info["unavailable"] else "measured"
        rows.append([f"`{name}`", info["label"], info["kind"], status])
    return ["## The servers", "", *table(["id", "server", "protocol", "in this run"], rows), ""]


def saturation_warning(results: Results) -> list[str]:
    """Say so up front when the machine was saturated during most runs.

    The generator and the servers together need about the two cores of the
    machines this runs on; a box that was already busy (other work sharing
    it) depresses every figure and widens every min–max.
    """
    shares = [
        float(r["machine_busy_share"])
        for sc in results["scenarios"].values()
        for runs in sc["runs"].values()
        for r in ok_runs(runs)
        if r.get("machine_busy_share") is not None and r["machine_busy_share"] >= 0
    ]
    saturated = sum(1 for x in shares if x >= MACHINE_BOUND)
    background = [
        float(r["background_busy_share"])
        for sc in results["scenarios"].values()
        for runs in sc["runs"].values()
        for r in ok_runs(runs)
        if r.get("background_busy_share") is not None
    ]
    lines = []
    if background:
        lines += [
            "Background load: in the pause before each run, when nothing of the benchmark was "
            f"running, the machine was busy {fmt_share(statistics.median(background))} of the "
            f"time (median; max {fmt_share(max(background))}) with other work.",
            "",
        ]
    if not shares or saturated == 0:
        return lines
    return [
        *lines,
        f"**The machine was at least {MACHINE_BOUND:.0%} busy during {saturated} of the "
        f"{len(shares)} load runs** (‡ in the tables; the load average is in the table above). "
        "Where that happened the figures show what each server got out of a saturated box, "
        "shared with whatever else was running; read the ratios (each computed between runs "
        "made side by side) rather than the absolute figures, and re-run on a quiet machine "
        "for the absolute figures.",
        "",
    ]


def summary_section(results: Results) -> list[str]:
    """One row per echo server, like the table of issue 6."""
    scs = results["scenarios"]
    pp = [k for k in scs if scs[k]["family"] == "pingpong"]
    cr = [k for k in scs if scs[k]["family"] == "connrate"]
    idle = [k for k in scs if scs[k]["family"] == "idle"]
    if not (pp or cr or idle):
        return []
    header = ["server"] + [f"round trips/s C={scs[k]['params']['conns']}" for k in pp]
    for k in cr:
        header += [f"connections/s (C={scs[k]['params']['conns']})", "worst connect"]
    for k in idle:
        header += [f"{scs[k]['params']['conns']:,} idle: round trips/s"]
    names: list[str] = []
    for k in pp + cr + idle:
        names += [n for n in scs[k]["servers"] if n not in names]
    rows = []
    for name in names:
        row = [label(results, name)]
        for k in pp + cr + idle:
            runs = scs[k]["runs"].get(name, [])
            med = median(values(runs))
            share = median(values(runs, "cpu_share"))
            text = fmt_num(med) if med is not None else "failed" if runs else "–"
            box = median(values(runs, "machine_busy_share"))
            if med is not None and share is not None:
                text += f" (gen {fmt_share(share)}, box {fmt_share(box)}){gen_flag(runs)}"
            row.append(text)
            if k in cr:
                worst = values(runs, "connect_max_ms")
                row.append(fmt_ms(max(worst)) if worst else "–")
        rows.append(row)
    return [
        "## Summary",
        "",
        "Medians of the interleaved repeats; beside each figure, the load generator's CPU use "
        "as a share of one core (gen) and how busy the whole machine was (box, all cores). "
        + FLAG_NOTE
        + " "
        "Worst connect is the slowest connect() of all repeats.",
        "",
        *table(header, rows),
        "",
    ]


def targets_section(results: Results) -> list[str]:
    scs = results["scenarios"]
    servers = results["servers"]
    rows = []

    def missing(key: str, names: list[str]) -> str | None:
        for name in names:
            info = servers.get(name)
            if info and info["unavailable"]:
                return "not available: " + info["unavailable"]
        if key not in scs or any(name not in scs[key]["servers"] for name in names):
            return "not measured in this run"
        for name in names:
            if not ok_runs(scs[key]["runs"].get(name, [])):
                return f"{label(results, name)} failed in this scenario"
        return None

    for text, key, a, b, minimum in RATIO_TARGETS:
        why = missing(key, [a, b])
        if why:
            rows.append([text, "–", why])
            continue
        ratios = paired_ratios(scs[key]["runs"][a], scs[key]["runs"][b])
        med = statistics.median(ratios)
        rows.append([text, fmt_ratio(ratios), "met" if med >= minimum else "**not met**"])

    key = next((k for k in scs if scs[k]["family"] == "connrate"), "connrate-c16")
    why = missing(key, ["mini-threading"])
    if why:
        rows.append(["ThreadingTCPServer: no connect slower than 100 ms", "–", why])
    else:
        worst = max(values(scs[key]["runs"]["mini-threading"], "connect_max_ms"))
        rows.append(
            [
                "ThreadingTCPServer: no connect slower than 100 ms (connection-rate scenario)",
                f"worst {fmt_ms(worst)}",
                "met" if worst < 100 else "**not met**",
            ]
        )

    for name in ("mini-threading", "mini-threadpool", "mini-multiplexing"):
        why = missing("shutdown", [name])
        text = f"{label(results, name)}: shutdown() p99 < 5 ms"
        if why:
            rows.append([text, "–", why])
        else:
            lat = sorted(
                x * 1e3 for r in ok_runs(scs["shutdown"]["runs"][name]) for x in r["latencies_s"]
            )
            p99 = percentile(lat, 0.99)
            rows.append(
                [
                    text,
                    f"p99 {fmt_ms(p99)} ({len(lat)} trials)",
                    "met" if p99 < 5 else "**not met**",
                ]
            )

    for name in ("mini-threading", "mini-threadpool", "mini-multiplexing"):
        why = missing("wakeups", [name])
        text = f"{label(results, name)}: no periodic wake-ups when idle"
        if why:
            rows.append([text, "–", why])
        else:
            r = ok_runs(scs["wakeups"]["runs"][name])[0]
            rows.append(
                [
                    text,
                    f"{r['wakeups']} wake-ups in {r['seconds']:.1f} s",
                    "met" if r["wakeups"] == 0 else "**not met**",
                ]
            )

    return [
        "## Issue 6 targets",
        "",
        "Each ratio is the median of the per-repeat ratios A/B (min–max in brackets), A and B "
        "run side by side in the same repeat. Nothing here is asserted by a test.",
        "",
        *table(["target", "measured", "status"], rows),
        "",
        "Where the time goes, what each optimisation bought (before/after), and what stands "
        "in the way of the targets not met: [optimisations.md](optimisations.md).",
        "",
    ]


def percentile(sorted_xs: list[float], p: float) -> float:
    """Nearest-rank percentile (the same rule as the load generator)."""
    rank = max(1, min(len(sorted_xs), math.ceil(p * len(sorted_xs) - 1e-9)))
    return sorted_xs[rank - 1]


def ratios_section(results: Results, baseline: str, title: str) -> list[str]:
    scs = results["scenarios"]
    keys = [
        k
        for k in scs
        if scs[k]["family"] in ("pingpong", "connrate", "idle") and baseline in scs[k]["servers"]
    ]
    if not keys:
        return []
    header = ["server"] + [scs[k]["title"] for k in keys]
    rows = []
    for name in scs[keys[0]]["servers"]:
        if name == baseline:
            continue
        row = [label(results, name)]
        for k in keys:
            base_runs = scs[k]["runs"].get(baseline, [])
            row.append(fmt_ratio(paired_ratios(scs[k]["runs"].get(name, []), base_runs)))
        rows.append(row)
    return [f"### {title}", "", *table(header, rows), ""]


def failures(sc: Results, results: Results) -> list[str]:
    lines = []
    for name, runs in sc["runs"].items():
        for i, r in enumerate(runs):
            if not r.get("ok") and r.get("error") != "skipped after an earlier failure":
                lines.append(f"- {label(results, name)}, repeat {i + 1}: {r['error']}")
            elif r.get("note"):
                lines.append(f"- {label(results, name)}, repeat {i + 1}: {r['note']}")
    return lines


def scenario_table(sc: Results, results: Results) -> list[str]:
    fam = sc["family"]
    rows = []
    for name in sc["servers"]:
        runs = sc["runs"][name]
        oks = ok_runs(runs)
        if not oks:
            rows.append([label(results, name), "failed"] + ["–"] * (len(HEADERS[fam]) - 2))
            continue
        v = values(runs)

        def med(key: str, runs: list[Result] = runs) -> float | None:
            return median(values(runs, key))

        if fam in ("pingpong", "http"):
            row = [
                fmt_num(median(v)) + gen_flag(runs),
                fmt_range(v),
                fmt_us(med("lat_p50_us")),
                fmt_us(med("lat_p99_us")),
                fmt_share(med("cpu_share")),
                fmt_share(med("server_cpu_share")),
                fmt_share(med("machine_busy_share")),
                fmt_num(med("server_cpu_us_per_op")),
            ]
        elif fam == "connrate":
            worst = values(runs, "connect_max_ms")
            errs = sum(
                int(r.get("errors", 0)) + int(r.get("connect_sync_failures", 0)) for r in oks
            )
            row = [
                fmt_num(median(v)) + gen_flag(runs),
                fmt_range(v),
                fmt_us(med("connect_p50_us")),
                fmt_us(med("connect_p99_us")),
                fmt_ms(max(worst) if worst else None),
                str(errs),
                fmt_share(med("cpu_share")),
                fmt_share(med("server_cpu_share")),
                fmt_share(med("machine_busy_share")),
                fmt_num(med("server_cpu_us_per_op")),
            ]
        elif fam == "idle":
            rss = med("server_rss_kb")
            row = [
                f"{med('setup_s'):.1f} s",
                fmt_num(median(v)) + gen_flag(runs),
                fmt_range(v),
                fmt_us(med("lat_p50_us")),
                fmt_us(med("lat_p99_us")),
                f"{rss / 1024:.0f} MB" if rss else "–",
                fmt_num(med("server_threads")),
                fmt_share(med("cpu_share")),
                fmt_share(med("server_cpu_share")),
                fmt_share(med("machine_busy_share")),
            ]
        elif fam == "shutdown":
            lat = sorted(x * 1e3 for r in oks for x in r["latencies_s"])
            row = [
                str(len(lat)),
                fmt_ms(percentile(lat, 0.5)),
                fmt_ms(percentile(lat, 0.9)),
                fmt_ms(percentile(lat, 0.99)),
                fmt_ms(lat[-1]),
            ]
        elif fam == "wakeups":
            r = oks[0]
            breakdown = ", ".join(
                f"{k} {n}"
                for k, n in sorted(r.get("syscall_breakdown", {}).items(), key=lambda kv: -kv[1])[
                    :4
                ]
            )
            row = [
                str(r["threads"]),
                f"{r['value']:.2f}",
                str(r["wakeups"]),
                str(r["involuntary"]),
                f"{r['syscalls_per_s']:.2f}"
                if "syscalls_per_s" in r
                else r.get("strace_error", "–"),
                breakdown or "–",
            ]
        else:
            row = [fmt_num(median(v))]
        rows.append([label(results, name), *row])
    return table(HEADERS[fam], rows)


HEADERS: dict[str, list[str]] = {
    "pingpong": [
        "server",
        "round trips/s",
        "min–max",
        "latency p50",
        "latency p99",
        "generator CPU",
        "server CPU",
        "machine CPU",
        "server CPU µs per round trip",
    ],
    "http": [
        "server",
        "requests/s",
        "min–max",
        "latency p50",
        "latency p99",
        "wrk CPU",
        "server CPU",
        "machine CPU",
        "server CPU µs per request",
    ],
    "connrate": [
        "server",
        "connections/s",
        "min–max",
        "connect p50",
        "connect p99",
        "worst connect",
        "errors",
        "generator CPU",
        "server CPU",
        "machine CPU",
        "server CPU µs per connection",
    ],
    "idle": [
        "server",
        "set-up",
        "round trips/s of the active sample",
        "min–max",
        "latency p50",
        "latency p99",
        "server RSS",
        "server threads",
        "generator CPU",
        "server CPU",
        "machine CPU",
    ],
    "shutdown": ["server", "trials", "p50", "p90", "p99", "max"],
    "wakeups": [
        "server",
        "threads",
        "wake-ups/s",
        "wake-ups",
        "involuntary switches",
        "syscalls/s (strace)",
        "syscalls seen",
    ],
}


def para(text: str) -> str:
    """A paragraph written across source lines, as one line of Markdown."""
    return " ".join(text.split())


EXPLAIN: dict[str, str] = {
    "pingpong": para("""
        Each connection sends a 64-byte line, waits for the whole echo, and sends the next; the
        figure is completed round trips per second over the measured window (after a warm-up),
        latency is per round trip. CPU shares are of one core over the window: generator from its
        own getrusage(), server from /proc/PID/stat (all threads); machine CPU is the busy share
        of all cores from /proc/stat. On loopback the kernel's TCP work for a segment is mostly
        done in the sender's system call, so each side's CPU includes part of the other's
        networking, and what the kernel defers to ksoftirqd belongs to neither: the machine's
        share is the one that shows a saturated box.
    """),
    "connrate": para("""
        Connect, send one line, read the echo, close, repeat, with this many attempts in flight.
        Connect time is from connect() to writable; a SYN dropped because the listen backlog is
        full costs a 1 s retransmit, which is what a worst connect near 1 s or 3 s shows. Attempts
        still in flight when the window closes are followed (not counted in the rate) so that
        their connect times are seen.
    """),
    "idle": para("""
        The generator opens the connections (a few at a time, each confirmed by one echo), then
        keeps a small sample of them ping-ponging while the rest stay idle; each active slot moves
        on to another connection after every round trip, so every connection is used in turn.
        This shows what holding many connections costs a server per event (a select()-style loop
        pays for every idle one) and in memory. A server that cannot hold the connections (for
        example a worker pool smaller than the connection count, by design) is reported as failed
        with the generator's reason.
    """),
    "shutdown": para("""
        In-process: a fresh server runs serve_forever() in a thread, idles for a random 20–520 ms
        (a random phase of any poll interval), then shutdown() is called; the figure is the time
        from that call to serve_forever() returning in its thread. Percentiles are nearest-rank
        over all n trials: p99 is the trial at rank ⌈0.99·n⌉, so with fewer than 100 trials it is
        the slowest one.
    """),
    "wakeups": para("""
        A server with no client at all. Wake-ups are the voluntary context switches of all its
        threads (from /proc/PID/task/*/status) over the window: a thread blocked in
        poll()/epoll_wait() or on a lock switches once each time it is woken and goes back to
        sleep, so an idle server that never wakes shows 0. This needs no tracer, which would
        itself interrupt the blocked calls. As a second opinion, strace -c then counts the system
        calls for the same length of time (its attach restarts each blocked call once per
        thread).
    """),
    "http": para("""
        http.server's BaseHTTPRequestHandler answering GET with a fixed small body over HTTP/1.1
        keep-alive (the same stdlib handler on each server class), driven by wrk with one thread.
        wrk's CPU is read from the harness's getrusage(RUSAGE_CHILDREN) around it.
    """),
}


# --------------------------------------------------------------------------
# Plots


def make_plots(results: Results, img_dir: Path) -> tuple[dict[str, Path], str | None]:
    """SVG plots per scenario family; returns ({family: path}, note if none)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return {}, "matplotlib not installed: no plots (pip install -r benchmarks/requirements.txt)"
    # Stable SVG ids and no timestamp, so a re-run changes only what changed.
    matplotlib.rcParams["svg.hashsalt"] = "minisocketserver-benchmarks"
    img_dir.mkdir(parents=True, exist_ok=True)
    scs = results["scenarios"]
    plots: dict[str, Path] = {}
    # One colour per server in every plot, in the order servers.py lists them.
    palette = matplotlib.colormaps["tab10"].colors
    colour = {name: palette[i % len(palette)] for i, name in enumerate(results["servers"])}
    thousands = matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1e3:g}k" if x else "0")

    def save(fig: Any, name: str) -> Path:
        # "bench-": docs/img/ also holds the project's other diagrams.
        path = img_dir / f"bench-{name}.svg"
        fig.tight_layout()
        fig.savefig(path, format="svg", metadata={"Date": None})
        plt.close(fig)
        return path

    pp = [k for k in scs if scs[k]["family"] == "pingpong"]
    if pp:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        conns = [scs[k]["params"]["conns"] for k in pp]
        for name in scs[pp[0]]["servers"]:
            xs, ys, lo, hi = [], [], [], []
            for c, k in zip(conns, pp, strict=True):
                v = values(scs[k]["runs"].get(name, []))
                if v:
                    m = statistics.median(v)
                    xs.append(c)
                    ys.append(m)
                    lo.append(m - min(v))
                    hi.append(max(v) - m)
            if xs:
                ax.errorbar(
                    xs,
                    ys,
                    yerr=[lo, hi],
                    marker="o",
                    capsize=3,
                    label=label(results, name),
                    color=colour[name],
                )
        ax.set_xscale("log", base=2)
        ax.set_xticks(conns)
        ax.set_xticklabels([str(c) for c in conns])
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel("round trips/s (median, min–max)")
        ax.set_title("Ping-pong line echo")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(thousands)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        plots["pingpong"] = save(fig, "pingpong")

    def bars(family: str, xlabel: str, title: str, key: str = "value") -> None:
        keys = [k for k in scs if scs[k]["family"] == family]
        if not keys:
            return
        names = scs[keys[0]]["servers"]
        fig, ax = plt.subplots(figsize=(8, 0.5 + 0.45 * len(names) * len(keys)))
        height = 0.8 / len(keys)
        for j, k in enumerate(keys):
            ys, meds, lo, hi, colours = [], [], [], [], []
            for i, name in enumerate(names):
                v = values(scs[k]["runs"].get(name, []), key)
                if v:
                    m = statistics.median(v)
                    colours.append(colour[name])
                    ys.append(i + j * height)
                    meds.append(m)
                    lo.append(m - min(v))
                    hi.append(max(v) - m)
            ax.barh(
                ys,
                meds,
                height=height,
                xerr=[lo, hi],
                capsize=3,
                # One scenario: colour by server, as in the other plots;
                # several (e.g. two connection counts): colour by scenario.
                color=colours if len(keys) == 1 else None,
                label=scs[k]["title"] if len(keys) > 1 else None,
            )
        ax.set_yticks([i + height * (len(keys) - 1) / 2 for i in range(len(names))])
        ax.set_yticklabels([label(results, n) for n in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.xaxis.set_major_formatter(thousands)
        ax.grid(alpha=0.3, axis="x")
        if len(keys) > 1:
            ax.legend(fontsize=7)
        plots[family] = save(fig, family)

    bars("connrate", "connections/s (median, min–max)", "Connection rate")
    bars(
        "idle",
        "round trips/s of the active sample (median, min–max)",
        "Many mostly idle connections",
    )
    bars("http", "requests/s (median, min–max)", "http.server under wrk")

    if "shutdown" in scs:
        sc = scs["shutdown"]
        names = [n for n in sc["servers"] if ok_runs(sc["runs"][n])]
        if names:
            fig, ax = plt.subplots(figsize=(8, 0.8 + 0.6 * len(names)))
            for j, (p, tag) in enumerate(((0.5, "p50"), (0.99, "p99"))):
                xs = []
                for name in names:
                    lat = sorted(
                        x * 1e3 for r in ok_runs(sc["runs"][name]) for x in r["latencies_s"]
                    )
                    xs.append(percentile(lat, p))
                ax.barh([i + j * 0.4 for i in range(len(names))], xs, height=0.4, label=tag)
            ax.set_yticks([i + 0.2 for i in range(len(names))])
            ax.set_yticklabels([label(results, n) for n in names], fontsize=8)
            ax.invert_yaxis()
            ax.set_xscale("log")
            ax.set_xlabel("ms from shutdown() to serve_forever() returning (log scale)")
            ax.set_title("shutdown() latency")
            ax.grid(alpha=0.3, axis="x")
            ax.legend(fontsize=7)
            plots["shutdown"] = save(fig, "shutdown")
    return plots, None


# --------------------------------------------------------------------------


def _shown(path: Path) -> str:
    """``path`` as the report names it: from the repository root when it lies inside."""
    root = Path(__file__).resolve().parent.parent
    try:
        return f"{path.resolve().relative_to(root).as_posix()}/"
    except ValueError:
        return f"{path.resolve().as_posix()}/"


def write_report(results: Results, out: Path) -> None:
    out = Path(out)
    # The plots go beside the report, so a smoke or partial run never touches
    # docs/img/; the sentence below names the directory actually written.
    img_dir = out.parent / "img"
    plots, plot_note = make_plots(results, img_dir)
    meta = results["meta"]
    lines = [
        "# Performance",
        "",
        f"Generated by `{meta['command']}` on {meta['started']}"
        + (
            " (a **smoke** run: seconds-long, for CI; its figures mean nothing)"
            if meta["smoke"]
            else ""
        )
        + ". Do not edit by hand: every figure below was measured by that command, and running "
        f"it again rewrites this file and the plots in `{_shown(img_dir)}`. How to run it and "
        "what each scenario measures: [benchmarks/README.md](../benchmarks/README.md).",
        "",
    ]
    lines += machine_section(results)
    lines += servers_section(results)
    if results.get("notes") or plot_note:
        lines += ["Notes on this run:", ""]
        lines += [f"- {n}" for n in results.get("notes", [])]
        if plot_note:
            lines.append(f"- {plot_note}")
        lines.append("")
    lines += saturation_warning(results)
    lines += summary_section(results)
    lines += targets_section(results)
    rel_lines = ratios_section(
        results, BASELINE, "Ratios to stdlib ThreadingTCPServer"
    ) + ratios_section(results, BARE_LOOP, "Ratios to the bare selectors loop")
    if rel_lines:
        lines += [
            "## Ratios, pair by pair",
            "",
            "Median of the per-repeat ratios (min–max); above 1 means more work per second than "
            "the baseline.",
            "",
            *rel_lines,
        ]

    lines += ["## Scenarios", ""]
    shown_plots: set[str] = set()
    explained: set[str] = set()
    for key, sc in results["scenarios"].items():
        fam = sc["family"]
        lines += [f"### {sc['title']}", ""]
        if fam not in explained:
            lines += [EXPLAIN.get(fam, ""), ""]
            explained.add(fam)
        lines += ["```sh"]
        lines += [meta["command"] + "   # runs all of the below", *sc["commands"], "```", ""]
        lines += scenario_table(sc, results)
        lines.append("")
        if any(gen_flag(runs) for runs in sc["runs"].values()):
            lines += [FLAG_NOTE, ""]
        if sc.get("notes"):
            lines += [f"- {n}" for n in sc["notes"]] + [""]
        fails = failures(sc, results)
        if fails:
            lines += ["Failed or noted runs:", "", *fails, ""]
        if fam in plots and fam not in shown_plots and key == last_key_of(results, fam):
            rel = os.path.relpath(plots[fam], out.parent)
            lines += [f"![{fam}]({rel})", ""]
            shown_plots.add(fam)
    out.write_text("\n".join(lines).rstrip() + "\n")


def last_key_of(results: Results, family: str) -> str:
    return [k for k, sc in results["scenarios"].items() if sc["family"] == family][-1]
