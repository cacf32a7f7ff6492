"""The toy socketserver of docs/02a-toy-socketserver.md, run as the script it is and as a module.

As a script (like the other examples, through test_examples_raw's ``example()``): it
prints its port, serves the seed's echo to clients that overlap in time, and stops on
SIGINT or ``--max-seconds`` with status 0.  As a module (loaded from its file, since
docs/examples is no package): its pipeline calls the hooks in the order the chapter
draws, a refused or failing request does not stop the loop, and ``shutdown()`` wakes a
loop that sleeps with no timeout.  Last, the chapter shows the toy's classes verbatim,
so the page and the file cannot drift apart.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from io import StringIO
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from support import WAIT, Resources, recv_until_eof
from test_examples_raw import connect, example, read_line

ROOT = Path(__file__).resolve().parent.parent
TOY = ROOT / "docs" / "examples" / "toy_socketserver.py"
CHAPTER = ROOT / "docs" / "02a-toy-socketserver.md"


def load_toy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("toy_socketserver", TOY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


toy = load_toy()


@contextmanager
def toy_serving(server: Any) -> Iterator[Any]:
    """serve_forever() on a thread; on exit shutdown(), join, server_close()."""
    loop = threading.Thread(target=server.serve_forever, name="toy loop")
    loop.start()
    try:
        yield server
    finally:
        server.shutdown()
        loop.join(WAIT)
        assert not loop.is_alive(), "serve_forever() did not return after shutdown()"
        server.server_close()


# -- the script ----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_script_echoes_overlapping_clients_then_stops_on_sigint() -> None:
    with example("toy_socketserver.py", "--port", "0", "--max-seconds", "25") as ex:
        (port,) = ex.ports()
        with connect(port) as first, connect(port) as second:
            buf1, buf2 = bytearray(), bytearray()
            # The first client is still connected (its handler is blocked reading it)
            # while the second is answered: a thread per request.
            first.sendall("你好\n".encode())
            assert read_line(first, buf1) == "你好好".encode()
            second.sendall(b"hello\r\n")
            assert read_line(second, buf2) == "hello好".encode()
            first.sendall(b"two\nlines\n")
            assert read_line(first, buf1) == "two好".encode()
            assert read_line(first, buf1) == "lines好".encode()
            # A last line without "\n" is answered once the client half-closes.
            second.sendall(b"last")
            second.shutdown(socket.SHUT_WR)
            assert recv_until_eof(second) == "last好\n".encode()
        ex.proc.send_signal(signal.SIGINT)
        assert ex.wait() == 0
        assert "Traceback" not in ex.stderr_text()


def test_script_stops_by_itself_after_max_seconds() -> None:
    with example("toy_socketserver.py", "--port", "0", "--max-seconds", "0.2") as ex:
        (port,) = ex.ports()
        with connect(port) as client:
            client.sendall(b"ping\n")
            assert read_line(client, bytearray()) == "ping好".encode()
        assert ex.wait() == 0
        assert "Traceback" not in ex.stderr_text()


# -- the module ----------------------------------------------------------------------


class _Recording(toy.TCPServer):
    """Records each hook the pipeline calls, with the thread it runs on."""

    refuse = False

    def __init__(self, *args: Any) -> None:
        self.calls: list[tuple[str, str]] = []
        super().__init__(*args)

    def _log(self, name: str) -> None:
        self.calls.append((name, threading.current_thread().name))

    def get_request(self) -> Any:
        self._log("get_request")
        return super().get_request()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self._log("verify_request")
        return not self.refuse

    def process_request(self, request: Any, client_address: Any) -> None:
        self._log("process_request")
        super().process_request(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        self._log("finish_request")
        super().finish_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self._log("shutdown_request")
        super().shutdown_request(request)


class _ThreadingRecording(toy.ThreadingMixIn, _Recording):
    pass


def _what_a_silent_client_reads(address: Any) -> bytes:
    """For a request the server ends without reading: a client that sent nothing
    reads a clean EOF (one that had sent would race the close into a reset)."""
    with connect(address[1]) as client:
        return recv_until_eof(client)


def _one_echo(address: Any, message: bytes = b"hi\n") -> bytes:
    with connect(address[1]) as client:
        client.sendall(message)
        client.shutdown(socket.SHUT_WR)
        return recv_until_eof(client)


@pytest.mark.parametrize("server_class", [_Recording, _ThreadingRecording])
def test_the_pipeline_calls_the_hooks_in_the_chapters_order(
    server_class: Any, no_leaks: Resources
) -> None:
    with toy_serving(server_class(("127.0.0.1", 0), toy.SeedEcho)) as server:
        assert _one_echo(server.server_address) == "hi好\n".encode()
    names = [name for name, _ in server.calls]
    assert names == [
        "get_request",
        "verify_request",
        "process_request",
        "finish_request",
        "shutdown_request",
    ]
    threads = dict(server.calls)
    assert threads["get_request"] == threads["verify_request"] == "toy loop"
    if server_class is _ThreadingRecording:
        # Only where the request runs changed: the recorded (synchronous) pipeline,
        # from process_request on, moved to the request's own thread.
        assert threads["finish_request"] == threads["shutdown_request"] != "toy loop"
    else:
        assert threads["finish_request"] == threads["shutdown_request"] == "toy loop"


def test_a_refused_request_is_closed_unserved_and_the_loop_goes_on(no_leaks: Resources) -> None:
    server = _Recording(("127.0.0.1", 0), toy.SeedEcho)
    with toy_serving(server):
        server.refuse = True
        assert _what_a_silent_client_reads(server.server_address) == b""
        server.refuse = False
        assert _one_echo(server.server_address) == "hi好\n".encode()
    refused = [name for name, _ in server.calls[:3]]
    assert refused == ["get_request", "verify_request", "shutdown_request"]


class _Failing(toy.BaseRequestHandler):
    finished = threading.Event()

    def handle(self) -> None:
        raise LookupError("a handler bug")

    def finish(self) -> None:
        type(self).finished.set()


def test_a_raising_handler_is_reported_finished_closed_and_the_loop_goes_on(
    no_leaks: Resources,
) -> None:
    errors = StringIO()
    with redirect_stderr(errors), toy_serving(toy.TCPServer(("127.0.0.1", 0), _Failing)) as server:
        assert _what_a_silent_client_reads(server.server_address) == b""  # no reply
        assert _Failing.finished.is_set()  # finish() ran although handle() raised
        server.RequestHandlerClass = toy.SeedEcho
        assert _one_echo(server.server_address) == "hi好\n".encode()
    assert "LookupError: a handler bug" in errors.getvalue()


def test_shutdown_wakes_the_sleeping_loop_at_once_and_it_can_serve_again(
    no_leaks: Resources,
) -> None:
    server = toy.TCPServer(("127.0.0.1", 0), toy.SeedEcho)
    try:
        for _ in range(2):
            loop = threading.Thread(target=server.serve_forever)
            loop.start()
            assert _one_echo(server.server_address) == "hi好\n".encode()
            started = time.monotonic()
            server.shutdown()  # the loop is asleep in select() with no timeout
            elapsed = time.monotonic() - started
            loop.join(WAIT)
            assert not loop.is_alive()
            # No poll interval to wait out: the byte wakes it.  Bound is generous for
            # a loaded CI core; a polling loop with stdlib's 0.5 s would fail it often.
            assert elapsed < 0.25, elapsed
    finally:
        server.server_close()


def test_threading_server_close_waits_for_the_running_requests(no_leaks: Resources) -> None:
    release = threading.Event()
    served = threading.Event()

    class Slow(toy.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(b"started\n")
            release.wait(WAIT)
            served.set()

    server = toy.ThreadingTCPServer(("127.0.0.1", 0), Slow)
    loop = threading.Thread(target=server.serve_forever)
    loop.start()
    with connect(server.server_address[1]) as client:
        assert read_line(client, bytearray()) == b"started"
        server.shutdown()  # returns while the request runs: it is on its own thread
        loop.join(WAIT)
        closer = threading.Thread(target=server.server_close)
        closer.start()
        # A bounded wait that must run out: server_close() is blocked joining the worker.
        closer.join(0.1)
        assert closer.is_alive() and not served.is_set()
        release.set()
        closer.join(WAIT)
        assert not closer.is_alive() and served.is_set()


# -- the file and the page -----------------------------------------------------------


def test_the_toy_is_the_readers_own_code() -> None:
    """It imports neither the library nor stdlib's socketserver."""
    tree = ast.parse(TOY.read_text("utf-8"))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {"minisocketserver", "socketserver"} & {m.split(".")[0] for m in imported}


def test_the_chapter_shows_every_class_of_the_toy_verbatim() -> None:
    source = TOY.read_text("utf-8")
    page = CHAPTER.read_text("utf-8")
    blocks = "\n".join(re.findall(r"^```python[^\n]*\n(.*?)^```", page, re.M | re.S))
    classes = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)]
    assert len(classes) >= 6
    for node in classes:
        code = ast.get_source_segment(source, node)
        assert code is not None
        assert code in blocks, f"docs/02a shows a class {node.name} other than the toy's"


def test_every_piece_names_the_chapter_that_grows_it() -> None:
    source = TOY.read_text("utf-8")
    for name in ("BaseServer", "TCPServer", "BaseRequestHandler", "ThreadingMixIn"):
        assert re.search(rf"^class {name}\b.*# chapter \d", source, re.M), name


def test_python_can_run_the_toy_without_this_repository_on_the_path(tmp_path: Path) -> None:
    """The reader types it into a file of their own: it needs only the stdlib."""
    copy = tmp_path / "toy.py"
    copy.write_text(TOY.read_text("utf-8"), "utf-8")
    result = subprocess.run(
        [sys.executable, "-I", str(copy), "--port", "0", "--max-seconds", "0"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("listening on 127.0.0.1:")


# -- the concept pictures ------------------------------------------------------------

IMG = ROOT / "docs" / "img"
CONCEPTS = ("backlog-handshake.svg", "fork-descriptors.svg")


def test_the_concept_pictures_are_what_their_script_draws() -> None:
    result = subprocess.run(
        [sys.executable, str(IMG / "make_concepts.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", CONCEPTS)
def test_the_concept_pictures_fit_the_column_with_legible_labels(name: str) -> None:
    """Drawn at the content width (700 px), so no label is shrunk under 12 px."""
    svg = (IMG / name).read_text("utf-8")
    assert re.search(r'<svg [^>]*width="700"', svg)
    sizes = [int(size) for size in re.findall(r'font-size="(\d+)"', svg)]
    assert sizes and min(sizes) >= 12, sizes
    assert svg.isascii(), "a CJK glyph would need the site's font"
