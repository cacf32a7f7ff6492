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
    "class-hierarchy", "construction", "serve-forever-iteration", "shutdown-handshake",
    "request-sync", "request-threading", "request-forking", "request-udp", "request-unix",
    "handle-request-timeout", "verify-request-refused", "handler-error",
    "multiplexing", "server-group",
]


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
    assert stems == sorted(EXPECTED)
    assert sorted(p.stem for p in DIAGRAMS.glob("*.svg")) == sorted(EXPECTED)


@pytest.mark.parametrize("stem", EXPECTED)
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
    "request-threading": ["worker thread 1", "ThreadingMixIn.process_request_thread"],
    "request-forking": ["child process 1", "fork()", "exits, a zombie until waitpid()",
                        "reaped child process 1"],
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
    "class-hierarchy": ["ThreadingMixIn <|-- ThreadingTCPServer",
                        "MRO: ThreadingTCPServer → ThreadingMixIn → TCPServer → BaseServer"],
}


@pytest.mark.parametrize("stem", sorted(PROMISES))
def test_each_diagram_shows_what_its_chapter_promises(stem: str) -> None:
    text = (DIAGRAMS / f"{stem}.mmd").read_text(encoding="utf-8")
    for promise in PROMISES[stem]:
        assert promise in text, f"{stem}.mmd no longer shows {promise!r}"
