"""Run one scenario against stdlib ``socketserver`` and against ``minisocketserver``.

The differential tests use stdlib as the oracle: the same handler body and
the same client script run against both implementations, and the tests
compare what came back (bytes on the wire) and the order in which the hooks
were called.

Recording hooks across threads and processes: a forked child runs the
handler in another process, so the record cannot live in a Python list.
Every hook appends one line to a file opened with ``O_APPEND`` (one
``os.write`` per line, atomic for lines this short), tagged with who called
it: ``main`` (the test's thread: constructor, ``server_close``,
``handle_request``), ``loop`` (the ``serve_forever`` thread of
``support.serving``), ``worker:N`` (a thread the server started) or
``child:PID`` (a forked child).  Threads and children run concurrently with
the loop, so a trace compares each caller's sequence separately.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import socketserver as stdlib
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from support import WAIT, connect, recv_until_eof

import minisocketserver as ours

#: The two implementations, by the name the tests print.
IMPLS: dict[str, Any] = {"stdlib": stdlib, "ours": ours}

KINDS = ("tcp", "udp", "unix_stream", "unix_dgram")
STREAM_KINDS = ("tcp", "unix_stream")
DATAGRAM_KINDS = ("udp", "unix_dgram")
MODELS = ("sync", "threading", "forking")

_BASE_NAMES = {
    "tcp": "TCPServer",
    "udp": "UDPServer",
    "unix_stream": "UnixStreamServer",
    "unix_dgram": "UnixDatagramServer",
}

#: Every BaseServer / socket-server hook a recording server overrides.
SERVER_HOOKS = (
    "server_bind",
    "server_activate",
    "get_request",
    "verify_request",
    "process_request",
    "finish_request",
    "shutdown_request",
    "close_request",
    "handle_timeout",
    "service_actions",
    "server_close",
)
#: Called once per loop iteration: its count depends on timing, so traces
#: keep it out of the sequences and count it instead.
PER_ITERATION = frozenset({"service_actions"})


def server_class(impl: Any, kind: str, model: str) -> type:
    """The class for (address family x socket type) x concurrency model.

    Python 3.10 and 3.11 have no ``ForkingUnix*Server`` names; the class is
    then composed exactly as 3.12+ defines it: (ForkingMixIn, Unix...Server).
    """
    base = getattr(impl, _BASE_NAMES[kind])
    if model == "sync":
        return base  # type: ignore[no-any-return]
    mixin = impl.ThreadingMixIn if model == "threading" else impl.ForkingMixIn
    name = model.capitalize() + base.__name__
    found = getattr(impl, name, None)
    return found if found is not None else type(name, (mixin, base), {})


def family(kind: str) -> int:
    return socket.AF_UNIX if kind.startswith("unix") else socket.AF_INET


@contextlib.contextmanager
def short_tmpdir() -> Iterator[str]:
    """A directory for AF_UNIX paths: pytest's tmp_path can exceed the 108-byte limit."""
    path = tempfile.mkdtemp(prefix="mss-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


_names = itertools.count()


def bind_address(kind: str, sockdir: str) -> Any:
    """A fresh address to bind a server of ``kind`` to (port 0 or a new path)."""
    if kind.startswith("unix"):
        return os.path.join(sockdir, f"s{next(_names)}")
    return ("127.0.0.1", 0)


class Recorder:
    """Append-only hook log shared by the test, its threads and forked children."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid = os.getpid()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        self._local = threading.local()
        self._serials = itertools.count()

    def who(self) -> str:
        if os.getpid() != self.pid:
            return f"child:{os.getpid()}"
        current = threading.current_thread()
        if current is threading.main_thread():
            return "main"
        if current.name == "serve_forever":
            return "loop"
        if not hasattr(self._local, "serial"):
            self._local.serial = next(self._serials)
        return f"worker:{self._local.serial}"

    def record(self, event: str) -> None:
        os.write(self._fd, f"{self.who()} {event}\n".encode())

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def trace(self) -> Trace:
        """What was recorded so far, grouped by caller."""
        groups: dict[str, list[str]] = {}
        with open(self.path) as f:
            for line in f:
                who, event = line.rstrip("\n").split(" ", 1)
                groups.setdefault(who, []).append(event)
        result = Trace()
        for who, events in groups.items():
            result.per_iteration += sum(e in PER_ITERATION for e in events)
            kept = [e for e in events if e not in PER_ITERATION]
            if who == "main":
                result.main = kept
            elif who == "loop":
                result.loop = kept
            elif kept:
                result.workers.append(tuple(kept))
        result.workers.sort()
        return result


@dataclass
class Trace:
    """Hook calls by caller; ``workers`` holds one tuple per thread or child."""

    main: list[str] = field(default_factory=list)
    loop: list[str] = field(default_factory=list)
    workers: list[tuple[str, ...]] = field(default_factory=list)
    per_iteration: int = 0

    def sequences(self) -> tuple[list[str], list[str], list[tuple[str, ...]]]:
        """Everything but the timing-dependent per-iteration count."""
        return self.main, self.loop, self.workers


def describe_exc() -> str:
    """``Type: message`` of the exception being handled (inside ``handle_error``)."""
    exc = sys.exc_info()[1]
    return "none" if exc is None else f"{type(exc).__name__}: {exc}"


def recording_server(
    cls: type, recorder: Recorder, **overrides: Callable[..., Any]
) -> type:
    """A subclass of ``cls`` whose every hook logs its call and then delegates.

    ``overrides`` replace a hook's delegation with a function
    ``(server, super_method, *args)``; the call is still logged first.
    ``handle_error`` logs the exception it is handling and the kinds of its
    two arguments, then delegates (stdlib prints the traceback to stderr).
    """
    namespace: dict[str, Any] = {}
    hooks = [*SERVER_HOOKS]
    if hasattr(cls, "process_request_thread"):
        hooks.append("process_request_thread")

    def make(name: str) -> Callable[..., Any]:
        custom = overrides.get(name)

        def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            recorder.record(name)
            parent = getattr(super(subclass, self), name)
            if custom is not None:
                return custom(self, parent, *args, **kwargs)
            return parent(*args, **kwargs)

        hook.__name__ = name
        return hook

    for name in hooks:
        namespace[name] = make(name)

    def handle_error(self: Any, request: Any, client_address: Any) -> None:
        recorder.record(
            f"handle_error({type(request).__name__}, {type(client_address).__name__})"
            f" {describe_exc()}"
        )
        custom = overrides.get("handle_error")
        parent = super(subclass, self).handle_error
        if custom is not None:
            custom(self, parent, request, client_address)
        else:
            parent(request, client_address)

    namespace["handle_error"] = handle_error
    subclass = type("Recording" + cls.__name__, (cls,), namespace)
    return subclass


Body = Callable[[Any], None]


def recording_handler(impl: Any, kind: str, recorder: Recorder, body: Body) -> type:
    """A Stream/DatagramRequestHandler of ``impl`` logging setup/handle/finish.

    ``body(handler)`` is the handle() method's work; it is the same function
    for both implementations.
    """
    base = impl.StreamRequestHandler if kind in STREAM_KINDS else impl.DatagramRequestHandler

    class Handler(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            recorder.record("setup")
            super().setup()

        def handle(self) -> None:
            recorder.record("handle")
            body(self)

        def finish(self) -> None:
            recorder.record("finish")
            super().finish()

    return Handler


def echo_upper(handler: Any) -> None:
    """The default handler body: read the whole request, answer it upper-cased."""
    handler.wfile.write(handler.rfile.read().upper())


# -- clients ---------------------------------------------------------------


@contextlib.contextmanager
def datagram_client(kind: str, sockdir: str) -> Iterator[socket.socket]:
    """A bound datagram socket (a Unix datagram client needs a path to be answered)."""
    sock = socket.socket(family(kind), socket.SOCK_DGRAM)
    try:
        sock.settimeout(WAIT)
        sock.bind(bind_address(kind, sockdir))
        yield sock
    finally:
        sock.close()


def stream_exchange(kind: str, address: Any, message: bytes) -> bytes:
    """Connect, send ``message``, signal EOF with SHUT_WR, read the reply to EOF.

    SHUT_WR rather than close(): a forked child holds a copy of this socket.
    """
    with connect(address, family(kind)) as client:
        client.sendall(message)
        client.shutdown(socket.SHUT_WR)
        return recv_until_eof(client)


def silent_exchange(kind: str, address: Any) -> bytes:
    """Connect, send nothing, read to EOF: for a server that closes without reading.

    Data the server never read would make its close() send RST instead of FIN.
    """
    with connect(address, family(kind)) as client:
        return recv_until_eof(client)


def datagram_exchange(kind: str, address: Any, message: bytes, sockdir: str) -> bytes:
    """Send one datagram and return the one datagram that answers it."""
    with datagram_client(kind, sockdir) as client:
        client.sendto(message, address)
        return client.recv(65536)


def exchange(kind: str, address: Any, message: bytes, sockdir: str) -> bytes:
    if kind in STREAM_KINDS:
        return stream_exchange(kind, address, message)
    return datagram_exchange(kind, address, message, sockdir)


@dataclass
class Outcome:
    """What one implementation did with one scenario."""

    replies: list[bytes]
    trace: Trace


Client = Callable[[Any], list[bytes]]


def run_scenario(
    impl: Any,
    kind: str,
    model: str,
    sockdir: str,
    client: Client,
    body: Body = echo_upper,
    poll_interval: float = 0.05,
    **overrides: Callable[..., Any],
) -> Outcome:
    """Serve ``client(server_address)`` with a recording server, then close it.

    The trace is read after ``server_close()``, which waits for every worker
    thread or child, so it is complete.
    """
    from support import serving

    with Recorder(os.path.join(sockdir, f"trace{next(_names)}")) as recorder:
        handler = recording_handler(impl, kind, recorder, body)
        cls = recording_server(server_class(impl, kind, model), recorder, **overrides)
        with serving(cls(bind_address(kind, sockdir), handler), poll_interval) as server:
            replies = client(server.server_address)
        return Outcome(replies, recorder.trace())


def run_exchanges(
    impl: Any,
    kind: str,
    model: str,
    messages: list[bytes],
    sockdir: str,
    body: Body = echo_upper,
    **overrides: Callable[..., Any],
) -> Outcome:
    """Send ``messages`` one after the other, each on its own connection."""

    def client(address: Any) -> list[bytes]:
        return [exchange(kind, address, message, sockdir) for message in messages]

    return run_scenario(impl, kind, model, sockdir, client, body, **overrides)


def differential(
    kind: str, model: str, sockdir: str, scenario: Callable[..., Outcome], *args: Any, **kw: Any
) -> tuple[Outcome, Outcome]:
    """Run ``scenario(impl, kind, model, ..., sockdir=...)`` on stdlib, then on ours."""
    theirs = scenario(stdlib, kind, model, *args, sockdir=sockdir, **kw)
    mine = scenario(ours, kind, model, *args, sockdir=sockdir, **kw)
    return theirs, mine
