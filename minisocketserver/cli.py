"""The command line: ``python -m minisocketserver COMMAND``.

``tour [MODEL]`` runs an echo service with the call-flow tracer on and
prints every hook call live, each with why it exists and where the
walkthrough explains it (see ``minisocketserver.tour``).

``echo`` runs the seed document's echo server: every chunk a client sends
comes back with "好" appended, on 127.0.0.1:8001 unless told otherwise.  Try
it with ``nc 127.0.0.1 8001`` or ``docs/examples/echo_client.py``.  It can
also serve sockets it did not bind (see ``minisocketserver.activation``):
``echo --fd N`` the one at descriptor N, ``echo --systemd`` every socket a
service manager passed (systemd, ``systemd-socket-activate``), each with
the server class its family and type need, all on one ``ServerGroup`` loop,
telling the manager ``READY=1`` and ``STOPPING=1``.  A datagram socket gets
the same answer per datagram.

``run -m MODULE [ARGS...]`` and ``run SCRIPT [ARGS...]`` run a program as
``python -m MODULE`` or ``python SCRIPT`` would, with this package standing
in for ``socketserver`` (see ``minisocketserver.alias``): ``run -m
http.server 8000`` serves files on our classes.

``serve MODULE:HANDLER`` and ``serve --wsgi MODULE:APP`` run the user's own
handler or WSGI application as a service: addresses, model, TLS, PROXY
protocol, pre-forked workers (see ``minisocketserver.serve``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import cast

from . import activation, alias, sockets, threading_mixin
from .handlers import BaseRequestHandler

# Re-exported ("as"), for callers of the old place: the seed's handler lives in
# seed.py, which both this module and tour.py import, so neither has to
# import the other for it.
from .seed import SUFFIX as SUFFIX
from .seed import SeedEchoHandler as SeedEchoHandler
from .server_group import ServerGroup

PROG = "python -m minisocketserver"
RUN_USAGE = f"usage: {PROG} run -m MODULE [ARGS...] | SCRIPT [ARGS...]"


def _server_class(
    model: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
) -> type[sockets.TCPServer]:
    """The server class for ``--model`` and a socket's family and type.

    Ctrl-C must not wait for clients: the threading demo's workers are
    daemons and not joined, the forking demo's children get the same
    SIGINT from the terminal and exit themselves.
    """
    unix = family == getattr(socket, "AF_UNIX", None)
    datagram = kind == socket.SOCK_DGRAM
    name = ("Unix" + ("Datagram" if datagram else "Stream") if unix
            else ("UDP" if datagram else "TCP")) + "Server"
    if model == "sync":
        return cast("type[sockets.TCPServer]", getattr(sockets, name))
    if model == "threading":
        base = getattr(threading_mixin, "Threading" + name)
        overrides = {"daemon_threads": True, "block_on_close": False}
    else:
        from . import forking_mixin  # POSIX only

        base = getattr(forking_mixin, "Forking" + name)
        overrides = {"block_on_close": False}
    # "Demo" + the base's name, so that a traceback says which one it is.
    return cast("type[sockets.TCPServer]", type("Demo" + base.__name__, (base,), overrides))


class SeedDatagramEchoHandler(BaseRequestHandler):
    """The seed's answer for a datagram socket: each datagram back, plus "好".

    ``request`` is ``(data, socket)`` on a datagram server.  A Unix
    datagram client that did not bind has no address to answer to (its
    ``client_address`` is empty), so it gets nothing, as with any
    datagram service.
    """

    def handle(self) -> None:
        data, sock = self.request
        if self.client_address:
            sock.sendto(data + SUFFIX, self.client_address)


def run_echo(host: str, port: int, model: str) -> int:
    """Serve the seed echo until Ctrl-C; return the exit status."""
    server_class = _server_class(model)
    server_class.allow_reuse_address = True
    with server_class((host, port), SeedEchoHandler) as server:
        bound_host, bound_port = server.server_address[:2]
        print(f"echo ({model}) listening on {bound_host}:{bound_port}; Ctrl-C stops it",
              flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("\nstopped", flush=True)
    return 0


class _ShutdownOnSignal:
    """SIGTERM's handler while ``serve_inherited()`` serves: stop the group from a thread.

    Python runs a handler in the main thread at its next bytecode, wherever
    that is, so a handler that raises (as Ctrl-C's KeyboardInterrupt does)
    can have its exception swallowed: in the forking model, a SIGTERM that
    lands between fork() and the at-fork hooks the parent runs after it
    becomes "Exception ignored in _releaseLock", and the server serves on
    (seen under load in tests/test_cli_activation.py).  This handler
    raises nothing: it starts one thread that calls ``shutdown()`` (which
    must not run on the loop's own thread), and ``serve_forever()``
    returns in the main thread as it does for any shutdown, the sync model
    after the request it is in.  Ctrl-C keeps Python's KeyboardInterrupt,
    which stops at once.

    Used by the main thread only (handlers run there): no lock.
    """

    def __init__(self, group: ServerGroup) -> None:
        self._group = group
        self.stopper: threading.Thread | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        """Called by Python in the main thread when SIGTERM arrives (again: no new thread)."""
        if self.stopper is None:
            self.stopper = threading.Thread(target=self._group.shutdown, name="SIGTERM")
            self.stopper.start()


def _describe(sock: socket.socket) -> str:
    """The address a client would use, as the line "serving echo on ..." shows it."""
    address = sock.getsockname()
    if sock.family == getattr(socket, "AF_UNIX", None):
        if isinstance(address, bytes):  # Linux's abstract namespace, shown as systemd does
            address = "@" + address[1:].decode(errors="backslashreplace")
        shown = address or "(unnamed Unix socket)"
        return "datagram " + shown if sock.type == socket.SOCK_DGRAM else shown
    host, port = address[:2]
    shown = f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"
    return "udp " + shown if sock.type == socket.SOCK_DGRAM else shown


def _socket_at(fd: int) -> socket.socket:
    """The socket at inherited descriptor ``fd``; ValueError (one line) if there is none."""
    try:
        is_socket = stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError as exc:  # EBADF, or a negative number
        raise ValueError(f"--fd {fd}: descriptor {fd} is not open") from exc
    if not is_socket:
        raise ValueError(f"--fd {fd}: descriptor {fd} is not a socket")
    # As listen_fds() does: the programs a server starts must not hold the
    # listener open (a restart of the server would not free it).
    os.set_inheritable(fd, False)
    return socket.socket(fileno=fd)


def _systemd_sockets() -> list[tuple[str, socket.socket]]:
    """The sockets of systemd's protocol; ValueError (one line) when none were passed to us."""
    count, pid = os.environ.get("LISTEN_FDS"), os.environ.get("LISTEN_PID")
    found = activation.listen_fds_with_names()  # ValueError if malformed or not sockets
    if found:
        return found
    if count is None:
        raise ValueError("--systemd: no sockets passed (LISTEN_FDS unset)")
    if pid != str(os.getpid()):
        # Inherited from an ancestor that did not take them: not ours.
        raise ValueError(f"--systemd: no sockets passed (LISTEN_PID={pid}, "
                         f"this process is {os.getpid()})")
    raise ValueError(f"--systemd: no sockets passed (LISTEN_FDS={count})")


def serve_inherited(fd: int | None, model: str) -> int:
    """``echo --fd N`` (``fd``) or ``echo --systemd`` (``fd`` None): serve until stopped.

    Every socket gets the server class its family and type need
    (``from_socket()`` checks it is bound, and listening if a stream), and
    all of them one ``ServerGroup``.  Errors before serving are one line
    on stderr and exit status 2; Ctrl-C and SIGTERM stop the loop and exit
    0, after ``STOPPING=1`` to a service manager that listens.
    """
    command = f"{PROG} echo"
    servers: list[sockets.TCPServer] = []
    try:
        found = ([("", _socket_at(fd))] if fd is not None else _systemd_sockets())
        for index, (name, sock) in enumerate(found):
            cls = _server_class(model, sock.family, sock.type)
            handler = (SeedDatagramEchoHandler if sock.type == socket.SOCK_DGRAM
                       else SeedEchoHandler)
            where = (f"--fd {fd}" if fd is not None
                     else f"--systemd: fd {sock.fileno()} (name {name})")
            try:
                servers.append(cls.from_socket(sock, handler))
            except ValueError as error:
                # from_socket() leaves a socket it refuses alone: close it
                # and the ones not reached yet, so that none leaks.
                for _, rest in found[index:]:
                    rest.close()
                # Its message starts "DemoThreadingTCPServer.from_socket(): ",
                # a class the user never named; the option is what they wrote.
                reason = str(error).partition("(): ")[2] or str(error)
                raise ValueError(f"{where}: {reason}") from error
    except ValueError as error:
        for server in servers:
            server.server_close()
        print(f"{command}: {error}", file=sys.stderr)
        return 2
    with ServerGroup(servers) as group:
        # Installed before READY=1: a manager may stop us as soon as it has it.
        on_sigterm = _ShutdownOnSignal(group)
        previous = signal.signal(signal.SIGTERM, on_sigterm)
        try:
            for (name, _), server in zip(found, servers, strict=True):
                label = f", name {name}" if name else ""
                print(f"serving echo on {_describe(server.socket)} "
                      f"(inherited fd {server.socket.fileno()}{label})", flush=True)
            try:
                activation.notify("READY=1")
            except OSError as error:
                print(f"{command}: cannot tell the service manager READY=1: {error}",
                      file=sys.stderr)
                return 1
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop, as SIGTERM does
                group.serve_forever()
            print("stopped", flush=True)
            # The manager may already be gone (it is what sent SIGTERM): a
            # goodbye it cannot read changes nothing.
            with contextlib.suppress(OSError):
                activation.notify("STOPPING=1")
        finally:
            signal.signal(signal.SIGTERM, previous)
            if on_sigterm.stopper is not None:
                # shutdown() returns once serve_forever() has: at once by now.
                on_sigterm.stopper.join()
    return 0


def run_target(argv: Sequence[str]) -> int:
    """``run``: parse ``-m MODULE [ARGS...]`` or ``SCRIPT [ARGS...]`` and run it.

    Parsed by hand, not by argparse: everything after the module or script
    belongs to the target, ``-h`` and ``--port`` included, and argparse's
    REMAINDER cannot start with an option such as ``-m``.  Errors of ours
    are one line on stderr; a missing target exits as python does (1 for a
    module, 2 for a script); the target's own exit status and exceptions
    pass through untouched (see ``alias.run_module``).
    """
    if not argv:
        return _usage_error("name a module (-m MODULE) or a script to run")
    first, rest = argv[0], list(argv[1:])
    if first in ("-h", "--help"):
        print(RUN_USAGE)
        print("\nRun MODULE or SCRIPT as python would, with minisocketserver installed as")
        print("socketserver first: http.server, xmlrpc.server, wsgiref, logging.config")
        print("and code built on socketserver then serve on minisocketserver's classes.")
        return 0
    module = None
    if first == "-m":
        if not rest:
            return _usage_error("-m needs a module name")
        module, rest = rest[0], rest[1:]
    elif first.startswith("-m"):  # python accepts -mhttp.server too
        module = first[2:]
    elif first.startswith("-"):
        return _usage_error(f"unknown option {first!r} (only -m MODULE is understood)")
    try:
        alias.install()
    except alias.AliasError as error:
        # Something ran before us (a .pth file, sitecustomize): running the
        # target now would mix stdlib's classes with ours without a word.
        print(f"{PROG} run: {error}", file=sys.stderr)
        return 1
    if module is not None:
        problem = _unrunnable_module(module)
        if problem:
            print(f"{PROG} run: {problem}", file=sys.stderr)
            return 1
        alias.run_module(module, rest)
        return 0
    if not os.path.exists(first):
        print(f"{PROG} run: can't open file {os.path.abspath(first)!r}: "
              "No such file or directory", file=sys.stderr)
        return 2
    alias.run_path(first, rest)
    return 0


def _usage_error(message: str) -> int:
    print(f"{PROG} run: {message}; {RUN_USAGE.removeprefix('usage: ')}", file=sys.stderr)
    return 2


def _unrunnable_module(name: str) -> str | None:
    """Why ``python -m name`` would fail before running any of its code, or None.

    Checked before running, so that an ImportError raised *by* the target
    still reaches the user as the target's traceback, not as our message.
    Finding ``a.b`` imports package ``a``, as ``python -m a.b`` does.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
        if spec is None:
            return f"No module named {name!r}"
        if (spec.submodule_search_locations is not None
                and importlib.util.find_spec(f"{name}.__main__") is None):
            return f"No module named {name}.__main__; {name!r} is a package and cannot be " \
                "directly executed"
    except (ImportError, ValueError) as error:  # a parent is missing; "" or ".x"
        return str(error)
    return None


def build_parser() -> argparse.ArgumentParser:
    from . import tour as tour_mod  # only the tour needs it; run must stay light

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run and study the minisocketserver examples.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    echo = commands.add_parser("echo", help="the seed's echo server (reply = message + 好)")
    # None, not the defaults, so that main() can tell --host/--port given
    # from not given: they exclude --fd and --systemd.
    echo.add_argument("--host", help="default: 127.0.0.1")
    echo.add_argument("--port", type=int, help="default: 8001; 0 picks a free port")
    echo.add_argument("--model", choices=["sync", "threading", "forking"], default="threading")
    inherited = echo.add_mutually_exclusive_group()
    inherited.add_argument("--fd", type=int, metavar="N",
                           help="serve the socket this process inherited as descriptor N "
                                "(TCP, UDP or Unix; streams must listen)")
    inherited.add_argument("--systemd", action="store_true",
                           help="serve every socket passed by systemd's socket activation "
                                "(LISTEN_FDS), and report READY=1 to NOTIFY_SOCKET")
    tour = commands.add_parser(
        "tour", help="run an echo service and print its call flow live, step by step")
    tour.add_argument("model", nargs="?", default="threading", choices=tour_mod.MODELS,
                      help="concurrency model / server to tour (default: threading)")
    tour.add_argument("--server", metavar="module:Class",
                      help="tour your own server class instead of the model's")
    tour.add_argument("--handler", metavar="module:Class",
                      help="tour your own request handler class")
    tour.add_argument("--stdlib", action="store_true",
                      help="tour the standard library's socketserver instead (sync, "
                           "threading, forking, udp, unix)")
    # Listed for --help only: main() hands "run" to run_target() before
    # argparse sees it (see run_target for why).
    commands.add_parser(
        "run", usage=RUN_USAGE.removeprefix("usage: "),
        help="run a module (-m MODULE) or a script with minisocketserver as socketserver")
    # Listed for --help only, as run is: serve.py parses its own arguments.
    commands.add_parser(
        "serve", add_help=False,
        help="serve your handler (MODULE:HANDLER) or WSGI app (--wsgi MODULE:APP) as a "
             "service; serve --help for its options")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:
        return run_target(argv[1:])
    if argv[:1] == ["serve"]:
        from . import serve  # only serve needs it

        return serve.main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "echo":
        if args.fd is not None or args.systemd:
            given = [option for option, value in (("--host", args.host), ("--port", args.port))
                     if value is not None]
            if given:
                inherited = "--systemd" if args.systemd else "--fd"
                print(f"{PROG} echo: error: {inherited} serves inherited sockets; "
                      f"it takes no {' or '.join(given)}", file=sys.stderr)
                return 2
            return serve_inherited(args.fd, args.model)
        host = "127.0.0.1" if args.host is None else args.host
        return run_echo(host, 8001 if args.port is None else args.port, args.model)
    if args.command == "tour":
        from . import tour as tour_mod

        if args.stdlib and tour_mod.loaded_stdlib() is None:
            return _tour_stdlib_in_recorder(argv)
        return tour_mod.run_tour(args.model, args.server, args.handler, stdlib=args.stdlib)
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects others


def _tour_stdlib_in_recorder(argv: list[str]) -> int:
    """Run ``tour --stdlib`` in the recorder, the one program that loads stdlib's module.

    This package never imports the standard library's ``socketserver``: it
    is a clean-room reimplementation, and a check holds it to that.  The
    tour of stdlib's flow needs that module only as the object the tracer
    wraps, so ``minisocketserver_stdlib.py``, installed beside the package,
    imports it and runs this same command line in a child process.
    """
    sys.stdout.flush()
    return subprocess.call([sys.executable, "-m", "minisocketserver_stdlib", *argv])
