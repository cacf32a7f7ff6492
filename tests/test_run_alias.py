"""``python -m minisocketserver run`` and ``install()``: stdlib's servers on ours.

Every program runs in a child interpreter: installing the alias in the
test process would hand this package to every later ``import
socketserver`` of the suite, the stdlib oracle's included.  Each child is
bounded by ``WAIT`` and, if it serves, stopped by its PID.  The run
command's observable contract is checked against ``python`` itself
wherever python has an answer (argv, sys.path[0], exit status).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import WAIT

ROOT = Path(__file__).resolve().parent.parent
RUN = [sys.executable, "-m", "minisocketserver", "run"]
DOCS_PAGE = ROOT / "docs" / "running-stdlib-servers.md"


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child: this checkout's package first, output unbuffered."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (extra.get("PYTHONPATH"), str(ROOT)) if p)
    return env


def run(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=child_env(**extra), capture_output=True,
                          text=True, timeout=WAIT, check=False)


def script(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


@contextlib.contextmanager
def started(args: list[str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A serving child, stopped by its PID however the block ends."""
    proc = subprocess.Popen(args, cwd=cwd, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(WAIT)
        assert proc.stdout is not None
        proc.stdout.close()


def read_until(proc: subprocess.Popen[bytes], pattern: str) -> re.Match[str]:
    """Read the child's output until ``pattern`` matches it, within ``WAIT``."""
    assert proc.stdout is not None
    out = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not (match := re.search(pattern, out.decode(errors="replace"))):
            assert selector.select(WAIT), f"no {pattern!r} within {WAIT} s: {out!r}"
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"the child exited before printing {pattern!r}: {out!r}"
            out += chunk
    return match


# -- the four stdlib servers, run on ours -------------------------------------------


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_http_server_runs_on_ours_and_serves_a_page_to_curl(tmp_path: Path) -> None:
    (tmp_path / "page.txt").write_text("served by minisocketserver\n", encoding="utf-8")
    args = [*RUN, "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    with started(args, tmp_path) as proc:
        port = int(read_until(proc, r"Serving HTTP on 127\.0\.0\.1 port (\d+)").group(1))
        fetched = subprocess.run(
            ["curl", "-sS", "--max-time", str(WAIT), f"http://127.0.0.1:{port}/page.txt"],
            capture_output=True, text=True, timeout=WAIT, check=False)
        assert (fetched.returncode, fetched.stdout) == (0, "served by minisocketserver\n")
        # Ctrl-C: http.server catches it and calls sys.exit(0); that status is ours.
        proc.send_signal(signal.SIGINT)
        read_until(proc, "Keyboard interrupt received, exiting")
        assert proc.wait(WAIT) == 0


def test_the_stdlib_servers_are_built_on_our_classes(tmp_path: Path) -> None:
    probe = script(tmp_path, "probe.py", """
        import logging.config, socketserver, inspect
        import http.server, xmlrpc.server, wsgiref.simple_server
        import minisocketserver

        assert socketserver is minisocketserver, socketserver
        assert issubclass(http.server.ThreadingHTTPServer, minisocketserver.ThreadingMixIn)
        assert issubclass(http.server.HTTPServer, minisocketserver.TCPServer)
        assert issubclass(xmlrpc.server.SimpleXMLRPCServer, minisocketserver.TCPServer)
        assert issubclass(wsgiref.simple_server.WSGIServer, minisocketserver.TCPServer)
        assert logging.config.ThreadingTCPServer is minisocketserver.ThreadingTCPServer
        print([c.__module__ for c in http.server.ThreadingHTTPServer.__mro__])
    """)
    done = run([*RUN, str(probe)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "'minisocketserver.threading_mixin', 'http.server', 'minisocketserver.sockets'" \
        in done.stdout
    # The oracle: without run, the same script fails its first assert.
    assert run([sys.executable, str(probe)], tmp_path).returncode == 1


def test_xmlrpc_server_round_trip(tmp_path: Path) -> None:
    target = script(tmp_path, "rpc.py", """
        import threading, xmlrpc.client
        from xmlrpc.server import SimpleXMLRPCServer
        import minisocketserver

        with SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False) as server:
            assert isinstance(server, minisocketserver.TCPServer)
            server.register_function(pow)
            loop = threading.Thread(target=server.serve_forever)
            loop.start()
            host, port = server.server_address
            with xmlrpc.client.ServerProxy(f"http://{host}:{port}/") as proxy:
                print("pow:", proxy.pow(2, 10))
            server.shutdown()
            loop.join(10)
            assert not loop.is_alive()
    """)
    done = run([*RUN, str(target)], tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "pow: 1024\n", "")


def test_wsgiref_round_trip(tmp_path: Path) -> None:
    target = script(tmp_path, "wsgi.py", """
        import threading, urllib.request
        from wsgiref.simple_server import WSGIRequestHandler, make_server
        import minisocketserver

        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"wsgi on " + type(environ["wsgi.input"]).__name__.encode()]

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args): pass

        with make_server("127.0.0.1", 0, app, handler_class=Quiet) as server:
            assert isinstance(server, minisocketserver.TCPServer)
            loop = threading.Thread(target=server.serve_forever)
            loop.start()
            with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/",
                                        timeout=10) as reply:
                print(reply.read().decode())
            server.shutdown()
            loop.join(10)
            assert not loop.is_alive()
    """)
    done = run([*RUN, str(target)], tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith("wsgi on ")


def test_logging_config_listen_applies_a_config_sent_over_its_socket(tmp_path: Path) -> None:
    # listen() starts a ThreadingTCPServer (ours, under run) on a thread;
    # its wire format is a 4-byte big-endian length, then the config.  The
    # config builds a handler through a factory, whose call tells the script
    # the config arrived: no polling.
    target = script(tmp_path, "logconf.py", """
        import contextlib, json, logging, logging.config, socket, struct, threading

        configured = threading.Event()

        def make_handler():
            configured.set()
            return logging.NullHandler()

        listener = logging.config.listen(0)
        listener.start()
        assert listener.ready.wait(10)
        config = json.dumps({
            "version": 1,
            "handlers": {"h": {"()": "__main__.make_handler"}},
            "loggers": {"probe": {"level": "DEBUG", "handlers": ["h"]}},
        }).encode()
        with socket.create_connection(("localhost", listener.port), timeout=10) as sock:
            sock.sendall(struct.pack(">L", len(config)) + config)
        assert configured.wait(10)
        logging.config.stopListening()
        # The listener checks its stop flag once select() returns, at most a
        # second later (its timeout); a connection makes it return at once.
        with contextlib.suppress(OSError):
            socket.create_connection(("localhost", listener.port), timeout=10).close()
        listener.join(10)
        assert not listener.is_alive()
        print(logging.getLevelName(logging.getLogger("probe").level),
              type(logging.config._listener).__name__)
    """)
    done = run([*RUN, str(target)], tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "DEBUG NoneType\n", "")


# -- run: the target sees what python would have given it ---------------------------


PROBE = """
    import json, os, sys
    print(json.dumps({
        "argv": sys.argv, "path0": sys.path[0], "name": __name__,
        "file": os.path.abspath(__file__),
        "spec": __spec__ and __spec__.name,
        "main": sys.modules["__main__"].__dict__ is globals(),
    }))
"""


def test_a_script_sees_the_argv_and_path_python_gives_it(tmp_path: Path) -> None:
    # In a subdirectory: python puts the script's directory first on
    # sys.path, where python -m (how run itself starts) put the cwd.
    (tmp_path / "sub").mkdir()
    probe = script(tmp_path / "sub", "probe.py", PROBE)
    args = [str(probe.relative_to(tmp_path)), "a", "-m", "--port", "8000", "-h"]
    direct = run([sys.executable, *args], tmp_path)
    through = run([*RUN, *args], tmp_path)
    assert (direct.returncode, through.returncode) == (0, 0), through.stderr
    assert json.loads(through.stdout) == json.loads(direct.stdout)
    assert json.loads(through.stdout)["path0"] == str(tmp_path / "sub")


def test_a_module_sees_the_argv_and_path_python_m_gives_it(tmp_path: Path) -> None:
    script(tmp_path, "probe_mod.py", PROBE)
    direct = run([sys.executable, "-m", "probe_mod", "x", "--bind", "::1"], tmp_path)
    through = run([*RUN, "-m", "probe_mod", "x", "--bind", "::1"], tmp_path)
    assert (direct.returncode, through.returncode) == (0, 0), through.stderr
    assert json.loads(through.stdout) == json.loads(direct.stdout)
    assert json.loads(through.stdout)["argv"] == [str(tmp_path / "probe_mod.py"), "x",
                                                  "--bind", "::1"]


@pytest.mark.parametrize("body", [
    "raise SystemExit(7)",
    "import sys; sys.exit('a message for stderr')",
    "raise ValueError('uncaught')",
    "raise KeyboardInterrupt",
    "import os; os._exit(3)",
    "print('fine')",
], ids=["exit-7", "exit-message", "uncaught", "keyboard-interrupt", "os-exit", "returns"])
def test_exit_status_is_what_python_gives(tmp_path: Path, body: str) -> None:
    target = script(tmp_path, "target.py", body + "\n")
    direct = run([sys.executable, str(target)], tmp_path)
    through = run([*RUN, str(target)], tmp_path)
    assert through.returncode == direct.returncode
    assert through.stdout == direct.stdout
    # The last line of stderr (the message, or the exception) is the same;
    # a traceback has more frames under run (ours and runpy's).
    assert through.stderr.splitlines()[-1:] == direct.stderr.splitlines()[-1:]


# -- run: errors ---------------------------------------------------------------------


@pytest.mark.parametrize("args, status, says", [
    ([], 2, "name a module (-m MODULE) or a script"),
    (["-m"], 2, "-m needs a module name"),
    (["--bind", "x.py"], 2, "unknown option '--bind'"),
    (["-m", "no_such_module_here"], 1, "No module named 'no_such_module_here'"),
    (["-m", "no_such_pkg.sub"], 1, "No module named 'no_such_pkg'"),
    (["-m", "json"], 1, "'json' is a package and cannot be directly executed"),
    (["no_such_script.py"], 2, "can't open file"),
], ids=["nothing", "m-alone", "unknown-option", "no-module", "no-parent", "package",
        "no-script"])
def test_bad_usage_is_one_line_on_stderr(tmp_path: Path, args: list[str], status: int,
                                         says: str) -> None:
    done = run([*RUN, *args], tmp_path)
    assert (done.returncode, done.stdout) == (status, "")
    assert len(done.stderr.splitlines()) == 1 and says in done.stderr, done.stderr


def test_missing_targets_exit_as_python_does(tmp_path: Path) -> None:
    for args in (["-m", "no_such_module_here"], ["no_such_script.py"]):
        assert run([*RUN, *args], tmp_path).returncode == \
            run([sys.executable, *args], tmp_path).returncode


def test_help_lists_run(tmp_path: Path) -> None:
    assert "run" in run([sys.executable, "-m", "minisocketserver", "--help"], tmp_path).stdout
    done = run([*RUN, "--help"], tmp_path)
    assert done.returncode == 0 and "-m MODULE" in done.stdout


def test_run_refuses_when_stdlib_socketserver_was_imported_first(tmp_path: Path) -> None:
    # sitecustomize runs before any command: the import-order caveat, caught.
    script(tmp_path, "sitecustomize.py", "import logging.config\n")
    target = script(tmp_path, "target.py", "print('must not run')\n")
    done = run([*RUN, str(target)], tmp_path, PYTHONPATH=str(tmp_path))
    assert (done.returncode, done.stdout) == (1, "")
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "these modules keep stdlib's classes: logging.config" in done.stderr


# -- install() -----------------------------------------------------------------------


@pytest.mark.parametrize("program", [
    # Idempotent, and everything imported afterwards is built on ours.
    """
    import minisocketserver
    minisocketserver.install()
    minisocketserver.install()
    import socketserver, http.server
    assert socketserver is minisocketserver
    assert issubclass(http.server.HTTPServer, minisocketserver.TCPServer)
    """,
    # Too late: refuses, names who holds stdlib's, and changes nothing.
    """
    import http.server, sys
    import minisocketserver
    try:
        minisocketserver.install()
    except RuntimeError as error:
        assert "these modules keep stdlib's classes: http.server" in str(error), error
        assert type(error).__name__ == "AliasError"
    else:
        raise AssertionError("install() accepted a late call")
    assert sys.modules["socketserver"] is not minisocketserver
    """,
    # A from-import holds stdlib's classes without holding the module.
    """
    from socketserver import TCPServer
    import sys
    import minisocketserver
    del sys.modules["socketserver"]
    try:
        minisocketserver.install()
    except RuntimeError as error:
        assert "keep stdlib's classes: __main__" in str(error), error
    else:
        raise AssertionError("install() missed the from-import")
    """,
    # So does a class built on one of them, wherever it was imported from.
    """
    from http.server import HTTPServer
    import sys
    import minisocketserver
    del sys.modules["http.server"], sys.modules["socketserver"]
    try:
        minisocketserver.install()
    except RuntimeError as error:
        assert "keep stdlib's classes: __main__" in str(error), error
    else:
        raise AssertionError("install() missed the subclass")
    """,
    # strict=False: later imports get ours, earlier ones keep stdlib's, and it says so.
    """
    import warnings
    import xmlrpc.server
    import minisocketserver
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        minisocketserver.install(strict=False)
    assert [w.category for w in caught] == [RuntimeWarning], caught
    assert "xmlrpc.server" in str(caught[0].message)
    import socketserver, logging.config, wsgiref.simple_server
    assert socketserver is minisocketserver
    assert logging.config.ThreadingTCPServer is minisocketserver.ThreadingTCPServer
    assert not issubclass(xmlrpc.server.SimpleXMLRPCServer, minisocketserver.TCPServer)
    # wsgiref is built on http.server, which xmlrpc.server imported first.
    assert not issubclass(wsgiref.simple_server.WSGIServer, minisocketserver.TCPServer)
    """,
], ids=["idempotent", "too-late", "from-import", "subclass", "not-strict"])
def test_install(tmp_path: Path, program: str) -> None:
    done = run([sys.executable, "-c", textwrap.dedent(program)], tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_importing_the_package_and_cli_imports_no_stdlib_server(tmp_path: Path) -> None:
    """run installs the alias after these imports: they must leave it possible."""
    done = run([sys.executable, "-c", textwrap.dedent("""
        import sys
        import minisocketserver, minisocketserver.cli
        from minisocketserver import alias
        assert "socketserver" not in sys.modules
        assert alias.stdlib_holders() == [], alias.stdlib_holders()
        assert "minisocketserver.tour" not in sys.modules, "run needs no tour"
    """)], tmp_path)
    assert (done.returncode, done.stderr) == (0, "")


# -- the import circle (issue 11, item 8) --------------------------------------------


def package_imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports, lazily (inside functions) or not."""
    graph = {}
    for path in (ROOT / "minisocketserver").glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    imported.add(node.module.partition(".")[0])
                else:
                    imported.update(name.name for name in node.names)
        graph[path.stem] = imported
    return graph


def test_no_module_of_the_package_imports_one_that_imports_it_back() -> None:
    graph = package_imports()
    assert {"cli", "tour", "seed", "alias"} <= graph.keys()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt}))
                   for nxt in graph.get(start, ()))

    circles = sorted(m for m in graph if reaches(m, m, {m}))
    assert circles == [], f"modules on an import circle: {circles}"


def test_the_seed_echo_handler_is_one_class_in_one_place() -> None:
    from minisocketserver import cli, seed

    assert cli.SeedEchoHandler is seed.SeedEchoHandler
    assert seed.SeedEchoHandler.__module__ == "minisocketserver.seed"
    assert package_imports()["seed"] == {"handlers"}, "the example needs only the library"


# -- the docs page -------------------------------------------------------------------


def page_block(title: str) -> str:
    """The body of the page's Python block titled ``TITLE (not run)``."""
    page = DOCS_PAGE.read_text(encoding="utf-8")
    fence = rf'^```python title="{re.escape(title)} \(not run\)"\n(.*?)^```$'
    match = re.search(fence, page, re.M | re.S)
    assert match, f"no block titled {title!r} in {DOCS_PAGE.name}"
    return match.group(1)


@pytest.mark.parametrize("how", [[sys.executable], RUN], ids=["python", "run"])
def test_the_pages_install_example_serves_xmlrpc(tmp_path: Path, how: list[str]) -> None:
    import xmlrpc.client  # the client side only: it does not import socketserver

    (tmp_path / "serve.py").write_text(page_block("serve.py"), encoding="utf-8")
    with started([*how, "serve.py", "0"], tmp_path) as proc:
        port = int(read_until(proc, r"XML-RPC on port (\d+)").group(1))
        with xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/") as proxy:
            assert proxy.pow(3, 4) == 81
        proc.send_signal(signal.SIGINT)
        assert proc.wait(WAIT) == 0


def test_the_pages_mro_example_prints_what_the_page_says(tmp_path: Path) -> None:
    (tmp_path / "mro.py").write_text(page_block("mro.py"), encoding="utf-8")
    through = run([*RUN, "mro.py"], tmp_path).stdout
    direct = run([sys.executable, "mro.py"], tmp_path).stdout
    assert "'minisocketserver.threading_mixin'" in through
    assert "'minisocketserver.sockets'" in through and "'socketserver'" not in through
    assert "'socketserver'" in direct and "minisocketserver" not in direct


def test_the_docs_page_shows_the_commands_tested_here() -> None:
    page = DOCS_PAGE.read_text(encoding="utf-8")
    for shown in (
        "python -m minisocketserver run -m http.server 8000",
        "curl http://127.0.0.1:8000/",
        "python -m minisocketserver run serve.py",
        "minisocketserver.install()",
        "install(strict=False)",
        "logging.config",
    ):
        assert shown in page, shown
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    assert "running-stdlib-servers.md" in nav
