"""diagrams/: every flow is a fresh recording, and every SVG is drawn from its .mmd."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DIAGRAMS = ROOT / "diagrams"

#: The names the docs embed: fixed, whatever the tree contains.
EXPECTED = [
    "architecture", "class-hierarchy", "construction", "serve-forever-iteration",
    "shutdown-handshake",
    "request-sync", "request-threading", "request-forking", "request-udp", "request-unix",
    "handle-request-timeout", "verify-request-refused", "handler-error",
    "multiplexing", "server-group", "request-threadpool",
    "request-tls-threading", "request-tls-multiplexing",
    "stdlib-request-sync", "stdlib-request-threading", "stdlib-request-forking",
    "stdlib-shutdown-handshake",
    "overview-sync", "overview-threading", "overview-threadpool", "overview-forking",
    "overview-multiplexing",
    "prefork-rolling-restart", "prefork-worker-replaced",
]
#: Stdlib's recordings of another Python version, where they differ from
#: the reference (3.13): ``stdlib-<flow>-py3NN``.  None differ in 3.10-3.13.
VERSIONED = sorted(p.stem for p in DIAGRAMS.glob("stdlib-*-py3*.mmd"))


def diagrams_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "minisocketserver.diagrams", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=50,
    )


@pytest.mark.timeout(60)
def test_committed_diagrams_match_a_fresh_recording() -> None:
    done = diagrams_command("--check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(EXPECTED)} diagrams match a fresh recording" in done.stdout


@pytest.mark.timeout(30)
def test_check_names_a_stale_diagram(tmp_path: Path) -> None:
    shutil.copy(DIAGRAMS / "construction.mmd", tmp_path)
    shutil.copy(DIAGRAMS / "handle-request-timeout.mmd", tmp_path)
    stale = tmp_path / "construction.mmd"
    stale.write_text(stale.read_text().replace("server_bind", "server_bound"))
    done = diagrams_command("--check", "--dir", str(tmp_path),
                            "construction", "handle-request-timeout")
    assert done.returncode == 1
    assert "+    p1->>+p1: TCPServer.server_bind()" in done.stdout  # the diff is shown
    assert done.stdout.strip().endswith("stale diagrams (regenerate with python -m "
                                        "minisocketserver.diagrams): construction.mmd")
    # Without --check it rewrites the stale file, and then the check passes.
    assert diagrams_command("--dir", str(tmp_path), "construction").returncode == 0
    assert stale.read_bytes() == (DIAGRAMS / "construction.mmd").read_bytes()


def test_every_named_diagram_is_there_with_its_svg() -> None:
    stems = sorted(p.stem for p in DIAGRAMS.glob("*.mmd"))
    assert stems == sorted(EXPECTED + VERSIONED)
    assert sorted(p.stem for p in DIAGRAMS.glob("*.svg")) == sorted(EXPECTED + VERSIONED)


@pytest.mark.parametrize("stem", EXPECTED + VERSIONED)
def test_svg_was_rendered_from_the_current_mmd(stem: str) -> None:
    source = (DIAGRAMS / f"{stem}.mmd").read_bytes()
    svg = (DIAGRAMS / f"{stem}.svg").read_text(encoding="utf-8")
    recorded = re.match(r"<!-- source-sha256: ([0-9a-f]{64}) -->\n<svg ", svg)
    assert recorded, f"{stem}.svg does not start with its source hash"
    assert recorded.group(1) == hashlib.sha256(source).hexdigest(), (
        f"{stem}.svg is stale: run bash diagrams/render.sh")
    # Plain SVG text, no HTML: renders the same in any viewer.
    assert "<foreignObject" not in svg


def test_sequence_diagrams_name_no_port_or_address() -> None:
    for path in DIAGRAMS.glob("*.mmd"):
        text = path.read_text()
        assert "127.0.0.1" not in text and "/tmp" not in text, path.name
        assert not re.search(r"0x[0-9a-f]{6,}|\b\d{4,5}\b", text), path.name


#: What the chapters say each diagram shows: a re-recording that lost it
#: (a regression in the code or the tracer) fails here, not in a reader's eyes.
PROMISES = {
    "construction": ["TCPServer.__init__", "BaseServer.__init__", "TCPServer.server_bind()",
                     "TCPServer.server_activate()"],
    "serve-forever-iteration": ["Reactor.select(timeout=None)", "[_on_listener_ready]",
                                "BaseServer.service_actions()", "Reactor.wake()",
                                "wake-up byte (socketpair)"],
    "shutdown-handshake": ["box rgb(238,244,252) loop thread", "shutdown caller",
                           "BaseServer.shutdown()", "wake-up byte (socketpair)",
                           "done: the loop let the server go"],
    "request-udp": ["UDPServer.get_request()", "DatagramRequestHandler.finish()"],
    "request-unix": ["UnixStreamServer"],
    "handle-request-timeout": ["BaseServer.handle_request()", "BaseServer.handle_timeout()"],
    "verify-request-refused": ["RefusingServer.verify_request", "-->>-p1: False",
                               "TCPServer.shutdown_request(request)"],
    "handler-error": ["raises ValueError: bad request", "StreamRequestHandler.finish()",
                      "BaseServer.handle_error(request, client_address)"],
    "multiplexing": ["MultiplexedEchoHandler.data_received(data)",
                     "MultiplexedRequestHandler._end()"],
    "server-group": ["ServerGroup.serve_forever", "TCPServer", "UDPServer"],
    # docs/11: the connection waits in the loop, the handshake runs on the
    # worker; in the multiplexing model it is stepped in the loop.
    "request-tls-threading": ["AdmissionMixIn.admit_request(request, client_address)",
                              "AdmissionMixIn.first_bytes_arrived(", "worker thread 1",
                              "TLSMixIn._handshake(", "TLSMixIn.shutdown_request(request)"],
    "request-tls-multiplexing": ["AdmissionMixIn.admit_request(request, client_address)",
                                 "MultiplexingTLSServer._handshake_advance(state)",
                                 "MultiplexedEchoHandler.data_received(data)",
                                 "TLSMixIn.shutdown_request(request)"],
    "request-sync": ["BaseServer.admit_request(request, client_address)", "-->>-p1: True"],
    "stdlib-request-sync": ["socketserver.TCPServer", "PollSelector.select(timeout=0.5)",
                            "BaseServer._handle_request_noblock()", "EchoHandler.handle()"],
    "stdlib-request-threading": ["ThreadingMixIn.process_request_thread",
                                 "called by Thread.run\n", "_Threads.append(thread)",
                                 "EchoHandler.handle()"],
    "stdlib-request-forking": ["fork()", "called by process_request\n", "EchoHandler.handle()",
                               "exits, a zombie until waitpid()", "reaped child process 1"],
    "stdlib-shutdown-handshake": ["BaseServer.shutdown()", "stop asked: seen after select() "
                                  "timed out", "done: serve_forever() returned"],
    "request-threading": ["worker thread 1", "ThreadingMixIn.process_request_thread",
                          "called by Thread.run -> _run_worker"],
    "request-forking": ["child process 1", "fork()", "exits, a zombie until waitpid()",
                        "reaped child process 1", "called by process_request -> _run_child"],
    # docs/12: one worker at a time, the new one serving before the old one stops;
    # a dead worker reaped by the master's loop and replaced.
    "prefork-rolling-restart": ["box rgb(238,244,252) master", "worker 1", "worker 2",
                                "PreforkMixIn._pf_spawn()", "ready (status pipe)",
                                "PreforkMixIn._pf_stop_worker(", "SIGTERM", "Reactor.wake()",
                                "exits, a zombie until waitpid()",
                                "PreforkMixIn.worker_exited(pid, status)"],
    "prefork-worker-replaced": ["worker 1", "worker 2", "SIGKILL to the worker",
                                "exits, a zombie until waitpid()",
                                "PreforkMixIn.worker_exited(pid, status)",
                                "PreforkMixIn._pf_spawn()", "ready (status pipe)"],
    "class-hierarchy": ["ThreadingMixIn <|-- ThreadingTCPServer",
                        "MRO: ThreadingTCPServer → ThreadingMixIn → TCPServer → BaseServer"],
}


@pytest.mark.parametrize("stem", sorted(PROMISES))
def test_each_diagram_shows_what_its_chapter_promises(stem: str) -> None:
    text = (DIAGRAMS / f"{stem}.mmd").read_text(encoding="utf-8")
    for promise in PROMISES[stem]:
        assert promise in text, f"{stem}.mmd no longer shows {promise!r}"


#: The hooks each overview must keep (and nothing above OVERVIEW_MAX_ARROWS).
OVERVIEW_HOOKS = {
    "overview-sync": ["serve_forever", "get_request", "verify_request", "process_request",
                      "finish_request", "EchoHandler.handle()", "shutdown_request"],
    "overview-threading": ["process_request(", "-)+p2: ThreadingMixIn.process_request_thread",
                           "finish_request", "EchoHandler.handle()", "shutdown_request"],
    "overview-threadpool": ["ThreadPoolMixIn.process_request(", "process_request_thread",
                            "finish_request", "EchoHandler.handle()", "shutdown_request"],
    "overview-forking": ["ForkingMixIn.process_request(", "fork()", "finish_request",
                         "EchoHandler.handle()", "exits, a zombie until waitpid()",
                         "reaped child process 1"],
    "overview-multiplexing": ["MultiplexingMixIn.process_request(", "data_received(data)",
                              "send(data)", "eof_received()", "finish()", "shutdown_request"],
}


@pytest.mark.parametrize("stem", sorted(OVERVIEW_HOOKS))
def test_each_overview_is_short_and_keeps_the_key_hooks(stem: str) -> None:
    from minisocketserver.diagrams import OVERVIEW_KEEP, OVERVIEW_MAX_ARROWS, count_arrows

    text = (DIAGRAMS / f"{stem}.mmd").read_text(encoding="utf-8")
    assert count_arrows(text) <= OVERVIEW_MAX_ARROWS == 12
    for hook in OVERVIEW_HOOKS[stem]:
        assert hook in text, f"{stem}.mmd lost {hook!r}"
    # Folded, not drawn: every call it shows is one the full recording made.
    source, keep = OVERVIEW_KEEP[stem]
    full = (DIAGRAMS / f"{source}.mmd").read_text(encoding="utf-8")
    calls = re.findall(r"->>\+p\d+: (\w+\.(\w+)\()", text)
    assert calls and all(method in keep and label in full for label, method in calls)
    assert f"%% folded from {source}.mmd by OVERVIEW_KEEP" in text


def test_arrows_are_counted_as_drawn() -> None:
    from minisocketserver.diagrams import count_arrows

    assert count_arrows("sequenceDiagram\n    p0->>+p1: a()\n    p1-->>-p0: x\n"
                        "    deactivate p1\n    p1--)p2: fork()\n    p1--x-p0: raises E\n"
                        "    Note over p0,p1: step\n") == 4


def test_each_python_version_checks_its_own_stdlib_file(tmp_path: Path) -> None:
    from minisocketserver.diagrams import STDLIB_REFERENCE, path_for, write

    other = (3, 10) if STDLIB_REFERENCE != (3, 10) else (3, 11)
    reference = tmp_path / "stdlib-x.mmd"
    own = tmp_path / "stdlib-x-py{}{}.mmd".format(*other)
    assert write(tmp_path, "stdlib-x", "A\n", STDLIB_REFERENCE) == reference
    # Another version that records the same flow keeps no file of its own...
    assert write(tmp_path, "stdlib-x", "A\n", other) is None and not own.exists()
    assert path_for(tmp_path, "stdlib-x", other) == reference
    # ...one whose flow differs does, and is checked against it alone.
    assert write(tmp_path, "stdlib-x", "B\n", other) == own
    assert path_for(tmp_path, "stdlib-x", other) == own
    assert path_for(tmp_path, "stdlib-x", STDLIB_REFERENCE) == reference
    assert reference.read_text() == "A\n"
    # Agreeing again removes it.
    assert write(tmp_path, "stdlib-x", "A\n", other) == own and not own.exists()
    # Our own diagrams have one file, whatever the version.
    assert path_for(tmp_path, "request-sync", other) == tmp_path / "request-sync.mmd"
