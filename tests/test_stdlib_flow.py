"""Stdlib's own flow, recorded: ``tour --stdlib`` and ``Tracer(subject=socketserver)``.

stdlib ``socketserver`` is imported here as the thing recorded (tests may
use it); the package reaches it only through ``tour.stdlib_socketserver()``.
"""

from __future__ import annotations

import inspect
import os
import socket
import socketserver as stdlib
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from support import WAIT

from minisocketserver import tracer as tracer_mod
from minisocketserver.tour import EchoSession, stdlib_classes
from minisocketserver.tracer import Event, Tracer

ROOT = Path(__file__).resolve().parent.parent


def stdlib_functions() -> dict[tuple[type, str], Any]:
    """Every (class, name) a stdlib tracer wraps, with what its class holds now."""
    found: dict[tuple[type, str], Any] = {}
    for cls, hooks, _ in tracer_mod._traced_classes(tracer_mod._subject_roots(stdlib)):
        for name in hooks & vars(cls).keys():
            found[(cls, name)] = vars(cls)[name]
    return found


def record(model: str, stop: bool = True) -> list[Event]:
    server_class, handler_class = stdlib_classes(model, stdlib) or (None, None)
    assert server_class is not None and handler_class is not None
    tracer = Tracer(subject=stdlib)
    session = EchoSession(tracer, server_class, handler_class,
                          poll_interval=0.1 if model == "forking" else 0.5)
    with tracer:
        session.construct()
        session.start()
        assert session.request(b"hello", "a client") == "hello好".encode()
        if stop:
            session.stop("shutdown")
    if not stop:
        session.stop()
    session.close()
    return tracer.recording().events


def calls(events: list[Event], method: str) -> list[Event]:
    return [e for e in events if e.kind == "call" and e.method == method]


def test_stdlib_classes_are_wrapped_in_place_and_restored() -> None:
    before = stdlib_functions()
    # Found by introspection: stdlib's hooks, its private ones included.
    names = {name for _, name in before}
    assert {"serve_forever", "_handle_request_noblock", "process_request_thread",
            "collect_children", "finish_request", "setup", "handle", "finish"} <= names
    assert "fileno" not in names and "__enter__" not in names  # no steps of the flow
    selector = stdlib._ServerSelector
    assert "select" not in vars(selector)
    with Tracer(subject=stdlib):
        during = stdlib_functions()
        assert all(inspect.unwrap(during[key]) is before[key] for key in before)
        assert all(during[key] is not before[key] for key in before)
        assert "select" in vars(selector)  # the loop's wait is recorded too
    assert stdlib_functions() == before
    assert "select" not in vars(selector)  # deleted, not left as a copy


@pytest.mark.timeout(30)
def test_stdlib_thread_target_is_process_request_thread_itself(no_leaks: object) -> None:
    events = record("threading")
    (started,) = calls(events, "process_request_thread")
    assert started.owner == "ThreadingMixIn" and started.obj == "socketserver.ThreadingTCPServer"
    assert started.spawned_by is not None
    # Nothing untraced between Thread.run and the hook: it is the target.
    assert started.via == "Thread.run"
    # The loop polls: every wait has poll_interval as its timeout.
    waits = calls(events, "select")
    assert waits and all(e.text == "timeout=0.5" for e in waits)


@pytest.mark.timeout(30)
def test_stdlib_child_calls_finish_request_from_process_request(no_leaks: object) -> None:
    events = record("forking", stop=False)
    (child_first,) = [e for e in calls(events, "finish_request")]
    assert child_first.lifeline == "child process 1"
    assert child_first.via == "process_request"
    reaps = [e for e in events if e.method == "collect_children" and e.reaped]
    assert [e.reaped for e in reaps] == [["child process 1"]]


@pytest.mark.timeout(30)
def test_stdlib_shutdown_ends_after_a_wait_times_out(no_leaks: object) -> None:
    events = record("sync")
    recording_waits = [e for e in events if e.kind == "return" and e.method == "select"]
    shutdown = calls(events, "shutdown")[0]
    last = recording_waits[-1]
    assert last.text == "[]" and last.key > shutdown.key
    assert not calls(events, "wake")  # no wake-up channel in stdlib


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("model", "server"), [
    ("sync", "socketserver.TCPServer"),
    ("threading", "socketserver.ThreadingTCPServer"),
    ("forking", "socketserver.ForkingTCPServer"),
])
def test_tour_stdlib_runs_and_names_stdlibs_classes(model: str, server: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "minisocketserver", "tour", "--stdlib", model], cwd=ROOT,
        capture_output=True, text=True, timeout=50, env={**os.environ, "PYTHONUTF8": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert f"{model} model: {server} serving SeedEchoHandler" in out
    assert f"{server}: BaseServer.serve_forever(poll_interval=" in out
    assert "PollSelector.select(timeout=" in out or "SelectSelector.select(timeout=" in out
    assert "replies [b'hello\\xe5\\xa5\\xbd', b'world\\xe5\\xa5\\xbd']" in out
    assert "Reactor" not in out and "_attach" not in out  # none of ours ran
    assert "[docs/stdlib-side-by-side.md]" in out


def test_tour_stdlib_refuses_what_stdlib_lacks() -> None:
    from io import StringIO

    from minisocketserver.tour import run_tour

    out, err = StringIO(), StringIO()
    assert run_tour("multiplexing", None, None, out, err, stdlib=True) == 2
    assert out.getvalue() == "" and "no 'multiplexing' model" in err.getvalue()


def test_every_stdlib_explanation_points_to_a_page_that_exists() -> None:
    from minisocketserver.tour import EXPLAIN_STDLIB

    assert {chapter for _, chapter in EXPLAIN_STDLIB.values()} == {
        "docs/stdlib-side-by-side.md"}
    assert (ROOT / "docs" / "stdlib-side-by-side.md").is_file()


@pytest.mark.timeout(30)
def test_a_polling_loop_renders_the_same_whichever_turn_sees_the_flag(no_leaks: object) -> None:
    # shutdown() is called while the loop is in service_actions(), after a
    # wait that timed out: the turn in progress must not reach the diagram,
    # which must read as the ordinary handshake (the wait, then the end).
    armed, inside = threading.Event(), threading.Event()
    tracer = Tracer(subject=stdlib)

    class Server(stdlib.TCPServer):
        def service_actions(self) -> None:
            if armed.is_set() and not inside.is_set():
                inside.set()
                tracer.wait_for(lambda events: any(
                    e.method == "shutdown" for e in events), WAIT)

    handler = stdlib_classes("sync", stdlib)
    assert handler is not None
    session = EchoSession(tracer, Server, handler[1], poll_interval=0.05)
    with tracer:
        session.construct()
        session.start()
        tracer.note("shutdown")
        armed.set()
        assert inside.wait(WAIT)
        session.stop()
    session.close()
    text = tracer.recording().to_mermaid()
    after = text.split("Note over")[1].splitlines()[1:]
    steps = [line.split(": ", 1)[-1] for line in after if "deactivate" not in line]
    assert steps == ["BaseServer.shutdown()", "[]", "stop asked: seen after select() timed out",
                     "done: serve_forever() returned"]


@pytest.mark.timeout(30)
def test_stdlib_keeps_an_ended_thread_until_the_next_hand_off(no_leaks: object) -> None:
    # What the chapter says _Threads.append -> reap does, observed: an ended
    # worker stays in the list until the next request's append() reaps it.
    server_class, handler_class = stdlib_classes("threading", stdlib) or (None, None)
    assert server_class is not None and handler_class is not None
    server = server_class(("127.0.0.1", 0), handler_class)
    loop = threading.Thread(target=server.serve_forever, args=(0.05,))
    loop.start()
    kept = []
    try:
        for _ in range(3):
            with socket.create_connection(server.server_address, WAIT) as client:
                client.sendall(b"x")
                client.shutdown(socket.SHUT_WR)
                assert client.recv(64) == "x好".encode()
            for worker in list(server._threads):
                worker.join(WAIT)
            kept.append(len(server._threads))
    finally:
        server.shutdown()
        loop.join(WAIT)
        server.server_close()
    assert kept == [1, 1, 1]  # never the 2 or 3 ended workers
    assert len(server._threads) == 0  # server_close() joined and emptied it
