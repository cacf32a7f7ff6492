"""The call-flow tracer: free when off, faithful when on, deterministic when rendered."""

from __future__ import annotations

import contextlib
import inspect
import io
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from support import WAIT, connect, recv_until_eof

import minisocketserver as socketserver
from minisocketserver import tracer as tracer_mod
from minisocketserver.tour import EchoSession
from minisocketserver.tracer import Event, Tracer


class Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line)


class Failing(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        raise ValueError("no thanks")


class Auditing(socketserver.ThreadingTCPServer):
    """A user's server that overrides one hook and calls the library's."""

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return super().verify_request(request, client_address)


def hook_functions() -> dict[tuple[type, str], Any]:
    """Every (class, method name) the tracer would wrap, with what is there now."""
    found = {}
    for cls, hooks, helpers in tracer_mod._traced_classes():
        for name in (hooks | helpers) & vars(cls).keys():
            found[(cls, name)] = vars(cls)[name]
    return found


def calls(events: list[Event], method: str) -> list[Event]:
    return [e for e in events if e.kind == "call" and e.method == method]


def one_request(server_class: type, handler: type, payload: bytes = b"hello\n",
                poll_interval: float = 0.5) -> tuple[Tracer, bytes]:
    """The diagrams' driver: serve, one client, shut down; all traced."""
    tracer = Tracer()
    session = EchoSession(tracer, server_class, handler, poll_interval)
    with tracer:
        session.construct()
        session.start()
        reply = session.request(payload, "a client sends a line")
        session.stop("shutdown")
    session.close()
    return tracer, reply


# -- off by default, free when off ---------------------------------------------


def test_disable_puts_back_every_original_function() -> None:
    before = hook_functions()
    assert before, "the tracer found no hook to wrap"
    assert not any(hasattr(f, "__wrapped__") for f in before.values())
    with Tracer():
        during = hook_functions()
        wrapped = [key for key, f in during.items() if f is not before[key]]
        assert len(wrapped) == len(before)
        assert all(inspect.unwrap(during[key]) is before[key] for key in wrapped)
    after = hook_functions()
    assert all(after[key] is before[key] for key in before)


def test_a_traced_hook_is_not_an_override(no_leaks: object) -> None:
    # _has_periodic_work() must look through the wrapper: a traced idle
    # loop still sleeps instead of waking every poll_interval.
    server = socketserver.TCPServer(("127.0.0.1", 0), Echo)
    try:
        with Tracer():
            assert not server._has_periodic_work()
            assert socketserver.ForkingTCPServer.service_actions is not (
                socketserver.BaseServer.service_actions)
    finally:
        server.server_close()


def test_only_one_tracer_at_a_time() -> None:
    with Tracer(), pytest.raises(RuntimeError, match="already enabled"):
        Tracer().enable()


def test_recording_is_refused_while_recording() -> None:
    tracer = Tracer()
    with tracer, pytest.raises(RuntimeError, match="disable"):
        tracer.recording()
    assert tracer.recording().events == []
    with pytest.raises(RuntimeError, match="finished"):
        tracer.enable()


# -- what is recorded ---------------------------------------------------------------


@pytest.mark.timeout(20)
def test_threading_request_is_recorded_per_thread_in_order(no_leaks: object) -> None:
    tracer, reply = one_request(Auditing, Echo)
    assert reply == b"hello\n"
    events = tracer.recording().events
    loop = {e.method for e in events if e.lifeline == "loop thread" and e.kind == "call"}
    assert {"serve_forever", "select", "get_request", "verify_request",
            "process_request"} <= loop
    worker = [e.method for e in events if e.lifeline == "worker thread 1" and e.kind == "call"]
    assert worker == ["process_request_thread", "finish_request", "setup", "handle", "finish",
                      "shutdown_request", "close_request"]
    # The user's override and the library method it calls, both recorded.
    verify = calls(events, "verify_request")
    assert [(e.owner, e.user) for e in verify] == [("Auditing", True), ("BaseServer", False)]
    assert [e.text for e in events if e.kind == "return" and e.method == "verify_request"] == [
        "True", "True"]
    # The worker was started by the loop's process_request.
    first = next(e for e in events if e.lifeline == "worker thread 1")
    assert first.spawned_by == ("loop thread", "Auditing")
    assert [e.lifeline for e in calls(events, "shutdown")] == ["main thread"]


class Permissive:
    """A mixin of the user's: no subclass of the library's."""

    def allowed(self, client_address: Any) -> bool:
        return True


class PolicyServer(Permissive, socketserver.ThreadingTCPServer):
    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.allowed(client_address)


class Parsing(socketserver.StreamRequestHandler):
    """A handler whose hook calls a method of its own."""

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(self.parse_line(line))

    def parse_line(self, line: bytes) -> bytes:
        return line.upper()

    def never_called(self) -> None:
        raise AssertionError("not called")

    @property
    def peer(self) -> Any:
        return self.client_address

    def __repr__(self) -> str:
        return f"<Parsing {self.peer}>"


@pytest.mark.timeout(20)
def test_the_users_own_methods_are_recorded_where_they_run(no_leaks: object) -> None:
    tracer, reply = one_request(PolicyServer, Parsing)
    assert reply == b"HELLO\n"
    events = tracer.recording().events
    worker = [e.method for e in events if e.lifeline == "worker thread 1" and e.kind == "call"]
    assert worker == ["process_request_thread", "finish_request", "setup", "handle",
                      "parse_line", "finish", "shutdown_request", "close_request"]
    [handle], [parse] = calls(events, "handle"), calls(events, "parse_line")
    # Called by handle(), on the handler object, one level down.
    assert (parse.obj, parse.caller, parse.depth) == (handle.obj, handle.obj, handle.depth + 1)
    assert (parse.owner, parse.user, parse.helper) == ("Parsing", True, True)
    assert not handle.helper
    # The server's: its mixin's method, on the loop thread.
    [allowed] = calls(events, "allowed")
    assert (allowed.lifeline, allowed.owner, allowed.helper) == ("loop thread", "Permissive", True)
    # Only what ran; no property, no dunder.
    assert not {"never_called", "peer", "__repr__"} & {e.method for e in events}


def test_only_the_users_classes_have_their_methods_traced() -> None:
    helpers = {cls: names for cls, _, names in tracer_mod._traced_classes()}
    assert helpers[Parsing] == {"handle", "parse_line", "never_called"}
    assert helpers[Permissive] == {"allowed"}
    # The library keeps its hooks only, so the default tour records what it did.
    library = [cls for cls in helpers if cls.__module__.startswith("minisocketserver")]
    assert socketserver.TCPServer in library
    assert all(not helpers[cls] for cls in library)


class Selecting(socketserver.StreamRequestHandler):
    """A method of the user's named like the reactor's wait is no wait."""

    def handle(self) -> None:
        self.wfile.write(self.select(self.rfile.read()))

    def select(self, data: bytes) -> bytes:
        return data[::-1]


@pytest.mark.timeout(20)
def test_a_users_method_named_like_a_hook_is_just_recorded(no_leaks: object) -> None:
    tracer, reply = one_request(socketserver.ThreadingTCPServer, Selecting)
    assert reply == b"\nolleh"
    returned = [e for e in tracer.recording().events
                if e.kind == "return" and e.method == "select" and e.owner == "Selecting"]
    assert [(e.lifeline, e.text, e.helper) for e in returned] == [("worker thread 1", "", True)]


@pytest.mark.timeout(20)
def test_an_exception_is_recorded_and_finish_still_runs(no_leaks: object) -> None:
    with contextlib.redirect_stderr(io.StringIO()) as stderr:
        tracer, reply = one_request(socketserver.TCPServer, Failing)
    assert reply == b""
    assert "ValueError: no thanks" in stderr.getvalue()
    flow = [(e.kind, e.method) for e in tracer.recording().events
            if e.method in {"handle", "finish", "finish_request", "handle_error"}]
    assert flow == [
        ("call", "finish_request"), ("call", "handle"), ("raise", "handle"),
        ("call", "finish"), ("return", "finish"), ("raise", "finish_request"),
        ("call", "handle_error"), ("return", "handle_error"),
    ]
    raised = [e.text for e in tracer.recording().events if e.kind == "raise"]
    assert "raises ValueError: no thanks" in raised


@pytest.mark.timeout(20)
def test_a_forked_child_ships_its_events_back(no_leaks: object) -> None:
    tracer, reply = one_request(socketserver.ForkingTCPServer, Echo, poll_interval=0.05)
    assert reply == b"hello\n"
    events = tracer.recording().events
    child = [e.method for e in events if e.lifeline == "child process 1" and e.kind == "call"]
    # Everything the child did before os._exit() reached the parent.
    assert child == ["finish_request", "setup", "handle", "finish", "shutdown_request",
                     "close_request"]
    first = next(e for e in events if e.lifeline == "child process 1")
    assert [label for _, label in first.after] == [tracer_mod.FORK]
    reaped = [e for e in events if e.method == "collect_children" and e.reaped]
    assert [e.reaped for e in reaped] == [["child process 1"]]
    assert "exits, a zombie until waitpid()" in tracer.recording().to_mermaid()


# -- rendering ------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_rendering_is_identical_across_runs_and_names_no_port(no_leaks: object) -> None:
    renders = []
    for _ in range(3):
        tracer, _ = one_request(socketserver.ThreadingTCPServer, Echo)
        recording = tracer.recording()
        renders.append((recording.to_mermaid("t"), recording.to_timeline()))
    assert renders[0] == renders[1] == renders[2]
    mermaid, timeline = renders[0]
    assert mermaid.startswith('---\ntitle: "t"\n---\nsequenceDiagram\n')
    assert re.search(r"^    box rgb\([\d,]+\) worker thread 1$", mermaid, re.M)
    for text in (mermaid, timeline):
        assert "127.0.0.1" not in text
        assert not re.search(r"0x[0-9a-f]{6,}|\b\d{4,5}\b", text), "an address or port leaked"
    # Balanced activations: Mermaid refuses to deactivate an idle participant.
    assert mermaid.count("->>+") + mermaid.count("-)+") == (
        mermaid.count("deactivate ") + mermaid.count("-->>-") + mermaid.count("--x-"))


class Ticking(socketserver.TCPServer):
    """Has periodic work, so its loop wakes every poll_interval."""

    ticks = 0
    ticked = threading.Event()

    def service_actions(self) -> None:
        type(self).ticks += 1
        if type(self).ticks >= 5:
            type(self).ticked.set()


@contextlib.contextmanager
def ticking_loop(tracer: Tracer, ticks: int) -> Iterator[None]:
    Ticking.ticks = 0
    Ticking.ticked = threading.Event()
    server = Ticking(("127.0.0.1", 0), Echo)
    with tracer:
        # Created while tracing: a bound method taken before enable() is
        # the original function, and would not be traced.
        loop = threading.Thread(target=server.serve_forever, args=(0.01,))
        loop.start()
        tracer.wait_for(lambda events: bool(calls(events, "serve_forever")), WAIT)
        tracer.wait_quiet(WAIT)
        if ticks > 1:
            assert Ticking.ticked.wait(WAIT)
        tracer.note("shutdown")
        server.shutdown()
        loop.join(WAIT)
        yield
    server.server_close()


@pytest.mark.timeout(20)
def test_idle_iterations_collapse(no_leaks: object) -> None:
    few, many = Tracer(), Tracer()
    with ticking_loop(few, 1):
        pass
    with ticking_loop(many, 5):
        pass
    assert Ticking.ticks >= 5
    assert few.recording().to_mermaid() == many.recording().to_mermaid()
    assert len(calls(many.recording().events, "service_actions")) <= 1


@pytest.mark.timeout(20)
def test_wait_quiet_gives_up_with_a_timeout(no_leaks: object) -> None:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    tracer = Tracer()
    loop = threading.Thread()
    try:
        with tracer:
            loop = threading.Thread(target=server.serve_forever)
            loop.start()
            tracer.wait_for(lambda events: bool(calls(events, "serve_forever")), WAIT)
            tracer.wait_quiet(WAIT)
            with connect(server.server_address) as client:
                tracer.wait_for(lambda events: bool(calls(events, "handle")), WAIT)
                # The worker is inside handle(), waiting for this client.
                with pytest.raises(TimeoutError):
                    tracer.wait_quiet(0.05)
                client.shutdown(socket.SHUT_WR)
                assert recv_until_eof(client) == b""
            tracer.wait_quiet(WAIT)
    finally:
        if loop.is_alive():
            server.shutdown()
            loop.join(WAIT)
        server.server_close()


@pytest.mark.timeout(20)
def test_a_failing_callback_does_not_break_the_server(no_leaks: object) -> None:
    seen: list[Event] = []

    def explode(event: Event) -> None:
        seen.append(event)
        raise KeyError("printer broke")

    tracer = Tracer(on_event=explode)
    session = EchoSession(tracer, socketserver.ThreadingTCPServer, Echo)
    with pytest.raises(KeyError, match="printer broke"), tracer:
        session.construct()
        session.start()
        assert session.request(b"hello\n", "a client") == b"hello\n"
        session.stop()
    session.close()
    assert len(seen) == 1  # called once, then dropped
    assert calls(tracer.recording().events, "handle")  # recording went on


def test_every_module_that_defines_hooks_is_the_librarys() -> None:
    """A library module left out of LIBRARY_MODULES has its hooks drawn as the user's code.

    Found when proxy_protocol.py and serve.py arrived (issue 13): their
    classes' hooks were recorded with ``user=True``.  Found, not listed.
    """
    import importlib
    import pkgutil

    hooks = (tracer_mod.SERVER_HOOKS | tracer_mod.HANDLER_HOOKS
             | tracer_mod.MULTIPLEXED_HANDLER_HOOKS | tracer_mod.PREFORK_HOOKS) - {"__init__"}
    defining = set()
    for info in pkgutil.iter_modules(socketserver.__path__):
        if info.name.startswith("__"):
            continue  # __main__ runs the command line
        module = importlib.import_module(f"minisocketserver.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and hooks & set(vars(cls)):
                defining.add(module.__name__)
    # The instruments define classes for their demos (tour's handlers, the
    # diagrams' scenarios); they are drawn as the user's on purpose.
    instruments = {"minisocketserver.tour", "minisocketserver.cli", "minisocketserver.seed",
                   "minisocketserver.diagrams"}
    assert defining - instruments <= tracer_mod.LIBRARY_MODULES
