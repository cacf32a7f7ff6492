"""The call-flow tracer: record which hook runs, on which thread, in what order.

Design map, part 6 of 6 (with tour.py and diagrams.py).  While a :class:`Tracer` is
enabled, every hook of the library -- the server pipeline, the loop, the
reactor's ``select``/``wake``, the mixins, the admission stage and TLS,
the handlers -- and every method of the user's classes is replaced, on
its class, by a wrapper that records the call and its return or
exception::

    with Tracer() as tracer:            wrap the hooks on their classes
        ... run a server, talk to it ...
    recording = tracer.recording()      restore them; keep what was seen
    recording.to_mermaid()              a sequenceDiagram
    recording.to_timeline()             plain text, one line per step

Off by default and free when off: nothing in the library checks a flag.
The wrappers exist only while a tracer is enabled; ``disable()`` puts the
original functions back on their classes, so an untraced server runs
exactly the code it would run had this module never been imported.  The
wrappers use ``functools.wraps`` (they carry ``__wrapped__``), which is how
``BaseServer._has_periodic_work`` tells a traced ``service_actions`` from
an overridden one.

The user's classes are the subclasses of the library's that are defined
outside this package and outside the standard library, and their bases
defined outside both (a mixin of the user's).  In them every plain method
is traced, not only the hooks they override: a ``handle()`` that calls
``self.parse_line()`` shows both, on the handler's lifeline.  Dunders,
properties, static and class methods are not; a method never called is
never recorded.  The library's own classes keep only their hooks traced,
so the default tour and the diagrams record what they always did.

Deterministic output.  A recording of real threads is ordered by the
scheduler, so the renderers do not print it in arrival order.  They cut it
into *segments* at the notes a scenario writes (``tracer.note("client 1
connects")``) and, inside a segment, run each lifeline (thread or child
process) as far as it can go before switching, switching only where one
lifeline waits for another: a worker starts after the loop started it; a
child after ``fork()``; the loop's last ``select`` returns after the
``wake()`` that ended it; ``shutdown()`` returns after ``serve_forever``.
A scenario that lets every lifeline go quiet before its next note (see
:meth:`Tracer.wait_quiet`) therefore renders byte-identically on every run.
Idle loop iterations (a ``select`` that timed out, then ``service_actions``
with nothing to do) are dropped as they happen, so a loop that ticks every
``poll_interval`` renders like one that slept; a loop that ends on a flag
after a timed-out wait keeps that wait only, drawn just before its end.

Another implementation.  ``Tracer(subject=module)`` records a module with
the same API instead of this package -- the standard library's
``socketserver``, handed in by the caller -- by wrapping the classes
``inspect.getmembers`` finds in it, the same way (see :class:`Tracer`).
The first call of a worker thread or a forked child carries ``via``: the
untraced functions between ``Thread.run`` (or the method that forked) and
it, read from the interpreter's frames.  That is how a recording shows
whose code a hand-off runs, in either implementation.

Forked children.  A child inherits the enabled tracer.  Its first recorded
event notices the new PID, and from then on each event is written to a file
of its own with one ``os.write`` -- unbuffered, so the ``os._exit`` that
ends every child cannot lose any.  The parent reads the file when it reaps
the child (``collect_children``) or, at the latest, in ``disable()``.

Limits: classes are wrapped when the tracer is enabled, so a subclass
defined afterwards is traced only through the methods it inherits; one
tracer can be enabled at a time, and it traces every server in the process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import os
import selectors
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType, TracebackType
from typing import Any

from .handlers import BaseRequestHandler
from .reactor import Reactor, run_callback
from .server import BaseServer
from .threading_mixin import ThreadingMixIn

#: The hooks traced on ``BaseServer``, its subclasses and the mixins.
SERVER_HOOKS = frozenset({
    "__init__", "server_bind", "server_activate", "serve_forever", "shutdown",
    "handle_request", "handle_timeout", "service_actions", "_attach",
    "_on_listener_ready", "_handle_request_noblock", "get_request", "verify_request",
    "admit_request", "process_request", "process_request_thread", "finish_request",
    "shutdown_request", "close_request", "handle_error", "collect_children", "server_close",
    "_detach", "_serving_ended",
    # The admission stage and TLS (admission.py, tls.py): a connection held
    # until it speaks, the handshake and its failures, and one non-blocking
    # step of the multiplexing model's handshake.  The TLS plumbing under
    # them (TLSTransport, the memory BIOs) stays folded.
    "first_bytes_arrived", "admission_refused", "_handshake", "handshake_failed",
    "_handshake_advance",
})
#: The hooks traced on ``BaseRequestHandler`` and its subclasses.
HANDLER_HOOKS = frozenset({"setup", "handle", "finish"})
#: The multiplexing model's handler: callbacks, and what ends a connection.
MULTIPLEXED_HANDLER_HOOKS = frozenset({
    "setup", "data_received", "line_received", "eof_received", "output_drained", "finish",
    "send", "close", "_on_readable", "_on_ready", "_end",
})
#: ``PreforkMixIn``: the master's steps that happen per worker (not per tick:
#: an idle master's loop records nothing), and the worker's own hook.
PREFORK_HOOKS = SERVER_HOOKS | frozenset({
    "worker_init", "worker_started", "worker_exited", "_pf_spawn", "_pf_worker_serves",
    "_pf_stop_worker",
})
#: ``ServerGroup``: the loop over its members, and stopping it.
GROUP_HOOKS = frozenset({"serve_forever", "shutdown", "server_close"})
#: The reactor's part: the wait, the wake-up, (un)registration.
REACTOR_HOOKS = frozenset({"select", "wake", "watch", "modify", "unwatch"})

#: Arguments whose *value* is shown (they are settings, stable across
#: runs); every other argument is shown by name only, so no address, port
#: or object id can reach a diagram.
SHOWN_VALUES = frozenset({"timeout", "poll_interval", "blocking"})

#: Calls that make up an idle loop iteration when nothing else happens.
_IDLE_METHODS = frozenset({"select", "service_actions", "collect_children"})

#: The modules whose classes are "the library"; anything else is user code.
LIBRARY_MODULES = frozenset({
    "minisocketserver.server", "minisocketserver.sockets", "minisocketserver.reactor",
    "minisocketserver.threading_mixin", "minisocketserver.forking_mixin",
    "minisocketserver.handlers", "minisocketserver.multiplexing_mixin",
    "minisocketserver.server_group", "minisocketserver.threadpool_mixin",
    "minisocketserver.admission", "minisocketserver.tls", "minisocketserver.prefork",
    "minisocketserver.proxy_protocol", "minisocketserver.serve",
})

#: Names a subject module's classes define that are no step of its flow:
#: the context-manager protocol, the accessor its selector calls on
#: ``register()``, and a handler's byte-stream plumbing (``wfile.write``).
SUBJECT_NOT_STEPS = frozenset({"__enter__", "__exit__", "fileno", "writable", "write"})

#: The method every loop waits in (the reactor's, or a subject's selector's).
_WAIT = "select"

#: Labels of the arrows drawn between lifelines.
FORK = "fork()"
CHILD_EXIT = "exits, a zombie until waitpid()"
WAKE = "wake-up byte (socketpair)"
SERVING_DONE = "done: the loop let the server go"
#: A loop without a wake-up channel: what ends it, and what shutdown() waits for.
FLAG_SEEN = "stop asked: seen after select() timed out"
LOOP_RETURNED = "done: serve_forever() returned"

_active: Tracer | None = None
_active_lock = threading.Lock()


@dataclasses.dataclass
class Event:
    """One recorded step.  ``kind`` is ``call``, ``return``, ``raise`` or ``note``."""

    id: str
    key: tuple[int, int]
    kind: str
    lifeline: str = ""
    obj: str = ""
    owner: str = ""
    method: str = ""
    text: str = ""
    depth: int = 0
    #: Participant (object label) on the same lifeline that made the call;
    #: empty for the first call of a thread.
    caller: str = ""
    #: ``(lifeline, object)`` that started this lifeline, on its first call
    #: (a thread start) -- the call is drawn from there.
    spawned_by: tuple[str, str] | None = None
    #: ``(event id, label)``: events of other lifelines this one waits for.
    after: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    #: The implementation is the user's code, not the library's.
    user: bool = False
    #: On a ``collect_children`` return: the child lifelines it reaped.
    reaped: list[str] = dataclasses.field(default_factory=list)
    #: A method of the user's that is no hook (``parse_line``): the library
    #: gives its name no meaning, whatever it is called.
    helper: bool = False
    #: On the first call of a worker thread or a forked child: the Python
    #: functions that led to it from ``Thread.run`` or from the traced
    #: method that forked (``"Thread.run -> _run_worker"``), read from the
    #: interpreter's frames -- the untraced code of a hand-off.
    via: str = ""

    @property
    def qualname(self) -> str:
        return f"{self.owner}.{self.method}"

    def is_idle(self) -> bool:
        if self.helper or self.method not in _IDLE_METHODS or self.reaped:
            return False
        return not (self.kind == "return" and self.method == "select" and self.text != "[]")


class _Frame:
    __slots__ = ("event", "method", "obj", "target")

    def __init__(self, event: Event, obj: str, method: str, target: Any) -> None:
        self.event = event
        self.obj = obj
        self.method = method
        self.target = target


class _Lifeline:
    """Per-thread recording state (a forked child keeps its thread's copy)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stack: list[_Frame] = []
        # An iteration of the loop being recorded that may turn out idle.
        self.buffer: list[Event] | None = None
        # Its last select() return: a child's pidfd may have ended that wait.
        self.last_wait: Event | None = None


class Tracer:
    """Record the library's hooks while enabled; see the module docstring.

    ``on_event`` is called with each event as it is recorded (under the
    tracer's lock, in recording order): the tour prints from it.  If it
    raises, it is not called again and ``disable()`` raises its exception.

    ``subject``: record another implementation of the same API instead of
    this package -- the standard library's ``socketserver``, handed in by
    the caller (this module never imports it).  Its classes are found by
    introspection (``inspect.getmembers``), and every method each defines
    is a hook but ``SUBJECT_NOT_STEPS`` (and dunders; ``__init__`` is kept
    on servers); the selector class its namespace holds gets its
    ``select`` traced, so the loop's wait is recorded like the reactor's.
    """

    def __init__(self, on_event: Callable[[Event], None] | None = None, *,
                 subject: ModuleType | None = None) -> None:
        self._on_event = on_event
        self._subject = subject
        # A subject's selector is its own choice of library code, not the user's.
        self._library_modules = LIBRARY_MODULES if subject is None else frozenset(
            {subject.__name__, selectors.__name__})
        self._roots = _subject_roots(subject) if subject is not None else _library_roots()
        # Handler objects are numbered (one per request), servers are not.
        self._handler_roots: tuple[type, ...] = (BaseRequestHandler,) if subject is None else \
            tuple(root for root, _ in self._roots if vars(root).keys() >= _HANDLER_STEPS)
        self._wait_classes: tuple[type, ...] = tuple(
            root for root, _ in self._roots if issubclass(root, (Reactor, selectors.BaseSelector)))
        self._callback_error: Exception | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._events: list[Event] = []
        self._seq = 0
        # Keyed by the Thread object, kept alive here: a thread ident is
        # reused as soon as its thread ends, and two workers would merge.
        self._lifelines: dict[threading.Thread, _Lifeline] = {}
        self._lifeline_order: list[str] = []
        self._name_counts: dict[str, int] = {}
        self._labels: dict[int, str] = {}
        self._label_counts: dict[str, int] = {}
        self._keep_alive: list[object] = []  # ids stay unique while labelled
        self._wrapped: list[tuple[type, str, Any]] = []
        self._enabled = False
        self._pid = os.getpid()
        self._child_fd: int | None = None
        self._child_first = False  # a forked child's next call is its first
        self._child_count = 0
        self._child_dir = ""
        self._loaded: set[int] = set()
        self._last_call: dict[tuple[str, str], Event] = {}  # (obj, method) -> last call
        self._recording: Recording | None = None

    # -- switching on and off ---------------------------------------------

    def enable(self) -> None:
        """Wrap every hook on its class; raises if another tracer is enabled."""
        global _active
        with _active_lock:
            if _active is not None:
                raise RuntimeError("another Tracer is already enabled")
            if self._recording is not None:
                raise RuntimeError("this Tracer has finished its recording: use a new one")
            self._child_dir = tempfile.mkdtemp(prefix="minisocketserver-trace-")
            for cls, hooks, helpers in _traced_classes(self._roots):
                for name in sorted((hooks | helpers) & vars(cls).keys()):
                    original = vars(cls)[name]
                    if inspect.isfunction(original):
                        self._wrapped.append((cls, name, original))
                        helper = name not in hooks
                        setattr(cls, name, _wrap(self, cls, name, original, helper))
            for cls in self._wait_classes:
                # A selector class inherits select(): the wrapper goes on
                # the class itself and is deleted again, not restored.
                if not issubclass(cls, Reactor) and _WAIT not in vars(cls):
                    self._wrapped.append((cls, _WAIT, None))
                    setattr(cls, _WAIT, _wrap(self, cls, _WAIT, getattr(cls, _WAIT), False))
            self._enabled = True
            _active = self

    def disable(self) -> None:
        """Restore the original methods and finish the recording (idempotent)."""
        global _active
        with _active_lock:
            if not self._enabled:
                return
            for cls, name, original in reversed(self._wrapped):
                if original is None:
                    delattr(cls, name)
                else:
                    setattr(cls, name, original)
            self._wrapped.clear()
            _active = None
        with self._lock:
            self._enabled = False
            for lifeline in self._lifelines.values():
                self._settle_buffer(lifeline)
            for pid in self._child_files():
                self._load_child(pid)
            self._recording = Recording(list(self._events), list(self._lifeline_order),
                                        polling=self._subject is not None)
            # Let the servers, handlers and threads seen go.
            self._keep_alive.clear()
            self._lifelines.clear()
            self._last_call.clear()
            self._changed.notify_all()
        shutil.rmtree(self._child_dir, ignore_errors=True)
        if self._callback_error is not None:
            raise self._callback_error

    def __enter__(self) -> Tracer:
        self.enable()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disable()

    def recording(self) -> Recording:
        """The finished recording (after ``disable()``)."""
        if self._recording is None:
            raise RuntimeError("the tracer is still recording: disable() it first")
        return self._recording

    # -- what scenarios call ----------------------------------------------

    def note(self, text: str) -> None:
        """Record a note: drawn across the diagram, and a segment boundary."""
        with self._lock:
            self._publish(Event(self._next_id(), (self._seq, 0), "note", text=text))

    def name_thread(self, name: str) -> None:
        """Give the calling thread's lifeline ``name`` (before its first event)."""
        with self._lock:
            self._lifeline_for(threading.current_thread(), name)

    def wait_quiet(self, timeout: float = 10.0, *, loops_only: bool = False) -> None:
        """Wait until every other traced thread is idle and every child reaped.

        Idle: it has returned from its first traced call, or it is waiting
        in ``Reactor.select``.  With ``loops_only`` only the threads running
        a ``serve_forever`` loop must be waiting; workers and children may
        still run.  Raises ``TimeoutError`` after ``timeout``.
        """
        deadline = time.monotonic() + timeout
        me = threading.current_thread()
        with self._lock:
            while not self._quiet(me, loops_only):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("traced threads did not go quiet")
                self._changed.wait(remaining)

    def mark(self) -> int:
        """How many events are recorded so far (for ``wait_for`` predicates)."""
        with self._lock:
            return len(self._events)

    def events(self, since: int = 0) -> list[Event]:
        """The events recorded so far, from index ``since`` (see ``mark``)."""
        with self._lock:
            return self._events[since:]

    def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate(events recorded so far)`` holds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self._events):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("the awaited event was not recorded")
                self._changed.wait(remaining)

    # -- recording (called by the wrappers) --------------------------------

    def _enter(self, target: Any, owner: type, name: str, func: Any, helper: bool,
               args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Frame | None:
        if not self._enabled:  # a call that began as disable() ran
            return None
        if os.getpid() != self._pid:
            self._become_child()
        with self._lock:
            if not self._enabled:
                return None
            lifeline = self._lifeline_for(
                threading.current_thread(), "thread" if helper else _default_name(name))
            obj = self._label(target)
            event = Event(
                self._next_id(), (self._seq, 0), "call", lifeline.name, obj,
                owner.__name__, name, _format_args(func, args, kwargs),
                depth=len(lifeline.stack),
                caller=lifeline.stack[-1].obj if lifeline.stack else "",
                user=func.__module__ not in self._library_modules, helper=helper,
            )
            if not lifeline.stack and name == "process_request_thread" and not helper:
                spawner = self._last_call.get((obj, "process_request"))
                if spawner is not None:
                    event.spawned_by = (spawner.lifeline, spawner.obj)
                    event.after.append((spawner.id, ""))
                    event.via = _entered_via(sys._getframe(2))
            elif self._child_first:
                self._child_first = False
                event.via = _entered_via(sys._getframe(2))
            self._last_call[(obj, name)] = event
            frame = _Frame(event, obj, name, target)
            if name == "collect_children" and not helper:
                frame.target = (target, frozenset(getattr(target, "active_children", None) or ()))
            lifeline.stack.append(frame)
            self._emit(lifeline, event)
            return frame

    def _exit(self, frame: _Frame | None, result: Any, exc: BaseException | None) -> None:
        if frame is None or not self._enabled:
            return
        if os.getpid() != self._pid:
            self._become_child()
        with self._lock:
            if not self._enabled:
                return
            lifeline = self._lifeline_for(threading.current_thread(), "thread")
            if frame in lifeline.stack:
                del lifeline.stack[lifeline.stack.index(frame):]
            call = frame.event
            if exc is not None:
                kind, text = "raise", _format_exception(exc)
            else:
                kind, text = "return", "" if call.helper else _format_result(frame.method, result)
            event = Event(
                self._next_id(), (self._seq, 0), kind, lifeline.name, frame.obj,
                call.owner, frame.method, text, call.depth, call.caller, user=call.user,
                helper=call.helper,
            )
            if frame.method == "collect_children" and not call.helper and self._child_fd is None:
                self._reaped(lifeline, frame, event)
            elif frame.method == "select" and kind == "return":
                lifeline.last_wait = event
            self._emit(lifeline, event)

    def _next_id(self) -> str:
        self._seq += 1
        return f"{self._pid}:{self._seq}"

    def _lifeline_for(self, thread: threading.Thread, default: str) -> _Lifeline:
        lifeline = self._lifelines.get(thread)
        if lifeline is None:
            if thread is threading.main_thread() and default == "thread":
                default = "main thread"
            count = self._name_counts.get(default, 0) + 1
            self._name_counts[default] = count
            numbered = default == "worker thread" or default == "thread"
            name = f"{default} {count}" if numbered or count > 1 else default
            lifeline = self._lifelines[thread] = _Lifeline(name)
            self._lifeline_order.append(name)
        return lifeline

    def _label(self, target: Any) -> str:
        label = self._labels.get(id(target))
        if label is None:
            base = type(target).__name__
            count = self._label_counts.get(base, 0) + 1
            self._label_counts[base] = count
            numbered = isinstance(target, self._handler_roots) or count > 1
            if self._subject is not None and type(target).__module__ == self._subject.__name__:
                base = f"{self._subject.__name__}.{base}"  # never mistaken for ours
            label = f"{base} ({count})" if numbered else base
            self._labels[id(target)] = label
            self._keep_alive.append(target)
        return label

    def _emit(self, lifeline: _Lifeline, event: Event) -> None:
        """Publish ``event``, holding back a loop iteration that may turn out idle."""
        if self._child_fd is not None:
            # One write per event, straight to the kernel: nothing is left in
            # a buffer for the child's os._exit() to throw away.  A failed
            # write (disk full) loses the event, never the child's request.
            with contextlib.suppress(OSError):
                os.write(self._child_fd, (json.dumps(dataclasses.asdict(event)) + "\n").encode())
            return
        buffer = lifeline.buffer
        # Only a wait with a timeout can end idle; one without is published
        # at once (the tour prints it as the loop starts waiting).
        if (event.kind == "call" and event.method == "select" and not event.helper
                and event.text != "timeout=None"):
            if buffer is not None and all(e.is_idle() for e in buffer):
                # An idle iteration: forget it, and let this wait stand where
                # the first wait of the idle run stood.
                event.key = buffer[0].key
            elif buffer is not None:
                self._flush(lifeline)
            lifeline.buffer = [event]
            self._changed.notify_all()
            return
        if buffer is None:
            self._publish(event)
            return
        if event.kind == "return" and event.method == "serve_forever" and all(
                e.is_idle() for e in buffer):
            # A polling loop that ends on a flag: whether it read the flag
            # before or after its last service_actions() is the scheduler's
            # choice.  Keep the wait that timed out, drawn just before the
            # end (after the shutdown() call that set the flag).
            del buffer[2:]
            for offset, waited in enumerate(buffer[1:], start=1):
                waited.key = (event.key[0], offset - len(buffer))
        buffer.append(event)
        if not event.is_idle():
            self._flush(lifeline)
        self._changed.notify_all()

    def _flush(self, lifeline: _Lifeline) -> None:
        for event in lifeline.buffer or ():
            self._publish(event)
        lifeline.buffer = None

    def _settle_buffer(self, lifeline: _Lifeline) -> None:
        # At disable(): an idle iteration in progress is cut back to its
        # wait, whatever point the loop had reached; anything else is kept.
        buffer = lifeline.buffer
        if buffer and all(e.is_idle() for e in buffer):
            del buffer[1:]
        self._flush(lifeline)

    def _publish(self, event: Event) -> None:
        self._events.append(event)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception as exc:
                # The callback runs inside the traced server's hooks: its
                # failure must not become the server's.  It is raised from
                # disable() instead, and not called again.
                self._on_event = None
                self._callback_error = exc
        self._changed.notify_all()

    def _quiet(self, me: threading.Thread, loops_only: bool) -> bool:
        for thread, lifeline in self._lifelines.items():
            if thread is me or not lifeline.stack:
                continue
            if loops_only and lifeline.stack[0].method != "serve_forever":
                continue
            top = lifeline.stack[-1]
            if top.method != "select" or not isinstance(top.target, self._wait_classes):
                return False
        return loops_only or not self._child_files()

    # -- forked children -----------------------------------------------------

    def _become_child(self) -> None:
        """First event in a forked child: record to a file from now on."""
        # A lock another thread held at fork() time stays locked here forever.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pid = os.getpid()
        self._on_event = None
        thread = threading.current_thread()
        parent = self._lifelines.get(thread)
        fork_key = self._seq
        self._lifelines = {}
        child = self._lifelines[thread] = _Lifeline("child process")
        self._child_first = True
        first_after: list[tuple[str, str]] = []
        if parent is not None:
            child.stack = list(parent.stack)
            if parent.stack:
                fork_point = parent.stack[-1].event
                first_after = [(fork_point.id, FORK)]
        path = os.path.join(self._child_dir, f"child-{self._pid}.jsonl")
        try:
            self._child_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            header = {"fork_key": fork_key, "after": first_after}
            os.write(self._child_fd, (json.dumps(header) + "\n").encode())
        except OSError:
            # The parent has already disabled the tracer and removed the
            # directory: this child records nothing.
            self._enabled = False

    def _child_files(self) -> list[int]:
        try:
            names = os.listdir(self._child_dir)
        except OSError:
            return []
        pids = (int(n[len("child-"):-len(".jsonl")]) for n in names if n.startswith("child-"))
        return sorted(p for p in pids if p not in self._loaded)

    def _reaped(self, lifeline: _Lifeline, frame: _Frame, event: Event) -> None:
        server, before = frame.target
        after = set(getattr(server, "active_children", None) or ())
        for pid in sorted(before - after):
            child = self._load_child(pid)
            if child is None:
                continue
            name, last_id, fork_key = child
            event.reaped.append(name)
            # Draw the exit before the wait that it ended, if the loop was
            # waiting (an idle wait, or one its pidfd ended: a wait that
            # returned after the fork); else before the reaping call itself.
            buffer = lifeline.buffer or []
            waits = [e for e in buffer if e.method == "select" and e.kind == "return"]
            woken = lifeline.last_wait
            if waits:
                target = waits[-1]
            elif woken and "_on_child_exit" in woken.text and woken.key[0] > fork_key:
                target = woken
            else:
                target = frame.event
            target.after.append((last_id, CHILD_EXIT))
        if event.reaped:
            event.text = "reaped " + ", ".join(event.reaped)

    def _load_child(self, pid: int) -> tuple[str, str, int] | None:
        """Read a reaped child's events into the recording.

        Returns ``(lifeline, last event id, fork key)``: the fork key orders
        the fork among the parent's events.
        """
        self._loaded.add(pid)
        path = os.path.join(self._child_dir, f"child-{pid}.jsonl")
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError:
            return None
        if len(lines) < 2:
            return None
        header = json.loads(lines[0])
        self._child_count += 1
        name = f"child process {self._child_count}"
        self._lifeline_order.append(name)
        last = ""
        for index, line in enumerate(lines[1:]):
            fields = json.loads(line)
            fields["key"] = (header["fork_key"], index + 1)
            fields["lifeline"] = name
            fields["after"] = [tuple(a) for a in fields["after"]]
            if fields["spawned_by"] is not None:
                fields["spawned_by"] = tuple(fields["spawned_by"])
            event = Event(**fields)
            if index == 0:
                event.after[:0] = [tuple(a) for a in header["after"]]
            self._publish(event)
            last = event.id
        return name, last, header["fork_key"]


def _default_name(method: str) -> str:
    return {
        "serve_forever": "loop thread",
        "process_request_thread": "worker thread",
        "shutdown": "shutdown caller",
    }.get(method, "thread")


def _library_roots() -> list[tuple[type, frozenset[str]]]:
    """This package's classes that define hooks, each with its hook names."""
    roots: list[tuple[type, frozenset[str]]] = [
        (BaseServer, SERVER_HOOKS),
        (ThreadingMixIn, SERVER_HOOKS),
        (BaseRequestHandler, HANDLER_HOOKS),
        (Reactor, REACTOR_HOOKS),
    ]
    with contextlib.suppress(ImportError):  # POSIX only
        from .forking_mixin import ForkingMixIn

        roots.append((ForkingMixIn, SERVER_HOOKS))
    # The other concurrency models, looked up by name so that the tracer
    # keeps working in a tree where one of them is missing.
    package = sys.modules[__package__ or "minisocketserver"]
    for name, hooks in [
        ("ThreadPoolMixIn", SERVER_HOOKS),
        ("MultiplexingMixIn", SERVER_HOOKS),
        ("MultiplexedRequestHandler", MULTIPLEXED_HANDLER_HOOKS),
        ("ServerGroup", GROUP_HOOKS),
        ("AdmissionMixIn", SERVER_HOOKS),
        ("PreforkMixIn", PREFORK_HOOKS),
    ]:
        root = getattr(package, name, None)
        if isinstance(root, type):
            roots.append((root, hooks))
    return roots


_HANDLER_STEPS = frozenset({"setup", "handle", "finish"})


def _subject_roots(subject: ModuleType) -> list[tuple[type, frozenset[str]]]:
    """Another implementation's classes, found by introspection, with their hooks.

    Every class the module defines, and the selector class its namespace
    holds; the hooks are the plain methods the module's classes define
    (``vars()``), but ``SUBJECT_NOT_STEPS`` and dunders.  ``__init__`` is
    kept on servers (the constructor is a step of theirs) and dropped on
    handlers, as this package's handlers are traced.
    """
    own = [cls for _, cls in inspect.getmembers(subject, inspect.isclass)
           if cls.__module__ == subject.__name__]
    names: set[str] = set()
    for cls in own:
        names.update(name for name, value in vars(cls).items() if inspect.isfunction(value))
    names -= SUBJECT_NOT_STEPS
    steps = frozenset(n for n in names if not (n.startswith("__") and n.endswith("__")))
    roots: list[tuple[type, frozenset[str]]] = []
    for cls in own:
        servers = "serve_forever" in dir(cls)
        roots.append((cls, steps | {"__init__"} if servers else steps))
    roots.extend((cls, frozenset({"select"})) for _, cls in inspect.getmembers(subject)
                 if isinstance(cls, type) and issubclass(cls, selectors.BaseSelector))
    return roots


def _traced_classes(
    roots: list[tuple[type, frozenset[str]]] | None = None,
) -> Iterator[tuple[type, frozenset[str], frozenset[str]]]:
    """Every class that may define a hook: ``(class, its hooks, its helpers)``.

    ``roots``: the library's (the default), or a subject's.  Helpers are
    the plain methods of the user's classes (see the module docstring); a
    class of the library or the standard library has none.
    """
    seen: set[type] = set()
    if roots is None:
        roots = _library_roots()
    for root, hooks in roots:
        for cls in _with_subclasses(root):
            # The user's own bases come along: a mixin of the user's is no
            # subclass of the library's, yet its methods run as the server's.
            for base in cls.__mro__ if _is_users(cls) else (cls,):
                if base not in seen and (base is cls or _is_users(base)):
                    seen.add(base)
                    yield base, hooks, _helpers(base) if _is_users(base) else frozenset()


def _is_users(cls: type) -> bool:
    """Whether ``cls`` is defined outside this package and the standard library."""
    top = cls.__module__.partition(".")[0]
    return top != __name__.partition(".")[0] and top not in sys.stdlib_module_names


def _helpers(cls: type) -> frozenset[str]:
    # Dunders are the language's protocol, run implicitly (a dict lookup
    # calls __eq__, a log line __repr__): noise, not steps of the user's
    # flow.  Properties, static and class methods are no plain functions.
    return frozenset(
        name for name, value in vars(cls).items()
        if inspect.isfunction(value) and not (name.startswith("__") and name.endswith("__"))
    )


def _with_subclasses(root: type) -> Iterator[type]:
    pending = [root]
    while pending:
        cls = pending.pop()
        yield cls
        pending.extend(cls.__subclasses__())


def _entered_via(frame: Any) -> str:
    """The calls from the start of a thread (or a forking method) down to ``frame``.

    ``frame`` is the caller of a traced wrapper; the walk stops at
    ``Thread.run`` or at the body of a method that is itself traced (the
    one that forked), and at worst after a few frames.
    """
    names: list[str] = []
    for _ in range(8):
        if frame is None:
            break
        if frame.f_globals.get("__name__") == "threading":
            names.append(f"Thread.{frame.f_code.co_name}")
            break
        names.append(frame.f_code.co_name)
        caller = frame.f_back
        if caller is not None and caller.f_code is _WRAPPER_CODE:
            break
        frame = caller
    return " -> ".join(reversed(names))


def _wrap(tracer: Tracer, owner: type, name: str, func: Any, helper: bool) -> Any:
    @functools.wraps(func)
    def traced(self: Any, *args: Any, **kwargs: Any) -> Any:
        frame = tracer._enter(self, owner, name, func, helper, args, kwargs)
        try:
            result = func(self, *args, **kwargs)
        except BaseException as exc:
            tracer._exit(frame, None, exc)
            raise
        tracer._exit(frame, result, None)
        return result

    return traced


#: The code object every wrapper runs: how a frame is known to be one.
_WRAPPER_CODE = next(code for code in _wrap.__code__.co_consts
                     if inspect.iscode(code) and code.co_name == "traced")


@functools.cache
def _signature(func: Any) -> inspect.Signature:
    return inspect.signature(func)


def _format_args(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    try:
        bound = _signature(func).bind(None, *args, **kwargs)
    except TypeError:  # the call itself is about to fail the same way
        return "..."
    shown = []
    for name, parameter in list(_signature(func).parameters.items())[1:]:
        if name in bound.arguments:
            value = bound.arguments[name]
        elif name in SHOWN_VALUES and parameter.default is not parameter.empty:
            value = parameter.default  # a setting in force is worth showing
        else:
            continue
        if name in SHOWN_VALUES and (value is None or isinstance(value, (bool, int, float))):
            shown.append(f"{name}={value!r}")
        elif parameter.kind is parameter.VAR_POSITIONAL:
            shown.append(f"*{name}")
        elif parameter.kind is parameter.VAR_KEYWORD:
            shown.append(f"**{name}")
        else:
            shown.append(name)
    return ", ".join(shown)


def _format_result(method: str, result: Any) -> str:
    if method == "select" and isinstance(result, list):
        return "[" + ", ".join(_ready_name(work) for work in result) + "]"
    if method == "get_request":
        return "(request, client_address)"
    if method == "verify_request":
        return repr(bool(result))
    return ""


def _ready_name(work: Any) -> str:
    if isinstance(work[0], selectors.SelectorKey):  # a selector's (key, events) pairs
        return type(work[0].fileobj).__name__
    function, argument = work  # Reactor.select's (function, argument) pairs
    if function is run_callback:  # a timer or posted callback: name what it runs
        function = argument
    return str(getattr(function, "__name__", type(function).__name__))


def _format_exception(exc: BaseException) -> str:
    text = f"raises {type(exc).__name__}"
    message = " ".join(str(exc).split())
    if message:
        text += f": {message}"
    # Mermaid ends a statement at ";" and starts a comment or entity at "#".
    text = text.replace(";", ",").replace("#", "no.")
    return text if len(text) <= 80 else text[:77] + "..."


# -- rendering ---------------------------------------------------------------


@dataclasses.dataclass
class _Arrow:
    """A cross-lifeline arrow, drawn just before the event that waited for it."""

    source: tuple[str, str]
    label: str


class Recording:
    """A finished recording, rendered deterministically (see the module docstring)."""

    def __init__(self, events: list[Event], lifelines: list[str], *,
                 polling: bool = False) -> None:
        self.events = events
        self.lifelines = lifelines
        #: Recorded from an implementation whose loop polls (no wake-up
        #: channel): its serve_forever() ends when a wait times out.
        self.polling = polling

    def ordered(self) -> list[tuple[Event, list[_Arrow]]]:
        """The events in canonical order, each with the arrows drawn before it."""
        by_id = {e.id: e for e in self.events}
        waits = self._implicit_waits()
        notes = sorted((e for e in self.events if e.kind == "note"), key=lambda e: e.key)
        segments: list[list[Event]] = [[] for _ in range(len(notes) + 1)]
        for event in self.events:
            if event.kind != "note":
                segments[sum(1 for n in notes if n.key <= event.key)].append(event)
        out: list[tuple[Event, list[_Arrow]]] = []
        emitted: set[str] = set()
        for index, segment in enumerate(segments):
            if index:
                out.append((notes[index - 1], []))
            self._schedule(segment, by_id, waits, emitted, out)
        return out

    def _implicit_waits(self) -> dict[str, list[tuple[str, str]]]:
        """Waits the library makes but nobody records: wake-ups and shutdown()."""
        waits: dict[str, list[tuple[str, str]]] = {}
        hooks = [e for e in self.events if not e.helper]
        selects = [e for e in hooks if e.kind == "return" and e.method == "select"]
        for wake in (e for e in hooks if e.kind == "call" and e.method == "wake"):
            on_reactor = [s for s in selects if s.obj == wake.obj and s.lifeline != wake.lifeline]
            later = [s for s in on_reactor if s.key > wake.key]
            # A wait that timed out just as wake() was called ended the loop
            # all the same: it is the last one before the loop returned.
            woken = later[0] if later else (on_reactor[-1] if on_reactor else None)
            if woken is not None:
                waits.setdefault(woken.id, []).append((wake.id, WAKE))
        # shutdown() returns when the loop has let its server go.
        released = [e for e in hooks if e.kind == "call" and e.method == "_serving_ended"]
        shutdown_calls: dict[tuple[str, str], Event] = {}
        for event in hooks:
            if event.method != "shutdown" or event.kind == "note":
                continue
            if event.kind == "call":
                shutdown_calls[(event.lifeline, event.obj)] = event
                continue
            call = shutdown_calls.get((event.lifeline, event.obj))
            if call is None:
                continue
            done = [r for r in released if r.obj == event.obj and r.key > call.key]
            if done:
                waits.setdefault(event.id, []).append((done[0].id, SERVING_DONE))
            elif self.polling:
                self._polled_shutdown(hooks, call, event, waits)
        return waits

    @staticmethod
    def _polled_shutdown(hooks: list[Event], call: Event, returned: Event,
                         waits: dict[str, list[tuple[str, str]]]) -> None:
        """A loop with no wake-up channel: it ends after shutdown() was called.

        Its ``serve_forever`` returns after the call (once a wait timed
        out), and ``shutdown()`` returns after that; drawn as two waits.
        """
        ended = [e for e in hooks if e.kind == "return" and e.method == "serve_forever"
                 and e.obj == call.obj and call.key < e.key < returned.key]
        if ended:
            waits.setdefault(ended[0].id, []).append((call.id, FLAG_SEEN))
            waits.setdefault(returned.id, []).append((ended[0].id, LOOP_RETURNED))

    def _schedule(self, segment: list[Event], by_id: dict[str, Event],
                  waits: dict[str, list[tuple[str, str]]], emitted: set[str],
                  out: list[tuple[Event, list[_Arrow]]]) -> None:
        queues: dict[str, list[Event]] = {}
        for event in segment:
            queues.setdefault(event.lifeline, []).append(event)
        order = {name: i for i, name in enumerate(self.lifelines)}

        def blockers(event: Event) -> list[tuple[str, str]]:
            return [*event.after, *waits.get(event.id, [])]

        def ready(name: str) -> bool:
            queue = queues[name]
            return bool(queue) and all(
                dep not in by_id or dep in emitted for dep, _ in blockers(queue[0]))

        current = min(segment, key=lambda e: e.key).lifeline if segment else ""
        while any(queues.values()):
            if not ready(current):
                candidates = [n for n in queues if ready(n)]
                if not candidates:  # a wait on something never recorded
                    candidates = [n for n in queues if queues[n]]
                current = min(candidates, key=lambda n: order.get(n, len(order)))
            event = queues[current].pop(0)
            arrows = []
            for dep, label in blockers(event):
                source = by_id.get(dep)
                if label and source is not None:
                    arrows.append(_Arrow((source.lifeline, source.obj), label))
            emitted.add(event.id)
            out.append((event, arrows))

    # -- Mermaid ---------------------------------------------------------

    def to_mermaid(self, title: str | None = None) -> str:
        """A Mermaid ``sequenceDiagram``: one box per lifeline, one participant per object."""
        ordered = self.ordered()
        # Boxes left to right in the order they first act.
        participants: dict[str, list[str]] = {}

        def use(lifeline: str, obj: str) -> None:
            members = participants.setdefault(lifeline, [])
            if obj not in members:
                members.append(obj)

        for event, arrows in ordered:
            if event.kind == "note":
                continue
            for arrow in arrows:
                use(*arrow.source)
            if event.kind == "call" and not event.caller and event.spawned_by is None:
                use(event.lifeline, "caller")
            if event.spawned_by is not None:
                use(*event.spawned_by)
            use(event.lifeline, event.obj)
        ids: dict[tuple[str, str], str] = {}
        lines = ["sequenceDiagram"]
        if title:
            # A JSON string is a YAML double-quoted scalar: colons are safe.
            lines[0:0] = ["---", f"title: {json.dumps(title, ensure_ascii=False)}", "---"]
        palette = ["rgb(238,244,252)", "rgb(240,250,240)", "rgb(253,245,230)",
                   "rgb(248,240,252)", "rgb(245,245,245)"]
        for index, lifeline in enumerate(name for name in participants if participants[name]):
            lines.append(f"    box {palette[index % len(palette)]} {lifeline}")
            for obj in participants[lifeline]:
                pid = ids[(lifeline, obj)] = f"p{len(ids)}"
                kind = "actor" if obj == "caller" else "participant"
                lines.append(f"        {kind} {pid} as {obj}")
            lines.append("    end")
        every = list(ids.values())
        active: dict[str, int] = {}
        calls: dict[str, list[str]] = {}  # lifeline -> sources of its open calls
        for event, arrows in ordered:
            if event.kind == "note":
                if every:  # a note needs a participant to hang from
                    span = f"{every[0]},{every[-1]}" if len(every) > 1 else every[0]
                    lines.append(f"    Note over {span}: {event.text}")
                continue
            target = ids[(event.lifeline, event.obj)]
            for arrow in arrows:
                lines.append(f"    {ids[arrow.source]}--){target}: {arrow.label}")
            stack = calls.setdefault(event.lifeline, [])
            if event.kind == "call":
                if event.spawned_by is not None:
                    source, arrow_kind = ids[event.spawned_by], "-)"
                else:
                    caller = event.caller or "caller"
                    source, arrow_kind = ids[(event.lifeline, caller)], "->>"
                label = f"{event.qualname}({event.text})"
                lines.append(f"    {source}{arrow_kind}+{target}: {label}")
                if event.via:
                    lines.append(f"    Note right of {target}: called by {event.via}")
                active[target] = active.get(target, 0) + 1
                stack.append(source)
                continue
            source = stack.pop() if stack else target
            if not active.get(target):
                continue
            active[target] -= 1
            if event.kind == "raise":
                lines.append(f"    {target}--x-{source}: {event.text}")
            elif event.text:
                lines.append(f"    {target}-->>-{source}: {event.text}")
            else:
                lines.append(f"    deactivate {target}")
        return "\n".join(lines) + "\n"

    # -- plain text --------------------------------------------------------

    def to_timeline(self) -> str:
        """One line per step, in the same canonical order as the diagram."""
        width = max([len(n) for n in self.lifelines] + [8])
        lines = []
        for event, arrows in self.ordered():
            lines.extend(timeline_lines(event, arrows, width))
        return "\n".join(lines) + "\n"


def timeline_lines(event: Event, arrows: Iterable[_Arrow] = (), width: int = 16) -> list[str]:
    """The plain-text lines for one event (what the tour prints, too)."""
    if event.kind == "note":
        return [f"-- {event.text} --"]
    pad = f"{event.lifeline:<{width}}  " + "  " * event.depth
    lines = [f"{pad}<~ {arrow.label} (from {arrow.source[0]})" for arrow in arrows]
    if event.kind == "call":
        lines.append(f"{pad}{event.obj}: {event.qualname}({event.text})")
        if event.via:
            lines.append(f"{pad}  (called by {event.via})")
    elif event.kind == "raise" or event.text:
        lines.append(f"{pad}  -> {event.text}")
    elif event.depth == 0:
        lines.append(f"{pad}  -> {event.method} returns")
    return lines
