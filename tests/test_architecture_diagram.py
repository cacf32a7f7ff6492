"""diagrams/architecture.mmd: the one-screen picture is generated, and checked against the code.

tests/test_diagrams.py re-generates it with every other diagram (``--check``)
and checks its SVG's hash; tests/test_docs_site.py measures its labels in the
page.  Here: it shows every part the docs promise, and an arrow whose call
has gone from the code stops the drawing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import minisocketserver
from minisocketserver import diagrams

ROOT = Path(__file__).resolve().parent.parent


def test_it_shows_the_loop_the_reactor_every_model_and_every_handler_family() -> None:
    text = diagrams.architecture()
    assert text == (ROOT / "diagrams" / "architecture.mmd").read_text(encoding="utf-8")
    for part in ["BaseServer.serve_forever()<br>server.py", "ServerGroup.serve_forever()",
                 "serve_loop() · server.py", "Reactor · reactor.py",
                 "selector: watch(), select()", "wake-up channel: wake()",
                 "timers: call_later()", "posted callbacks: call_soon_threadsafe()",
                 "get_request() · sockets.py", "verify_request() · server.py",
                 "process_request() · server.py", "finish_request() · server.py",
                 "shutdown_request() · sockets.py",
                 "BaseRequestHandler<br>▸ StreamRequestHandler<br>▸ DatagramRequestHandler"
                 "<br>handlers.py",
                 "MultiplexedRequestHandler<br>▸ LineRequestHandler<br>multiplexing_mixin.py",
                 "ThreadingMixIn<br>start a worker<br>threading_mixin.py",
                 "ThreadPoolMixIn<br>queue it for a worker<br>threadpool_mixin.py",
                 "MultiplexingMixIn<br>start its handler<br>multiplexing_mixin.py",
                 "process_request -- \"sync\" --> finish_request",
                 "MultiplexingMixIn --> MultiplexedRequestHandler"]:
        assert part in text, part
    # One box per concurrency mixin the package exports, found, not listed;
    # the layers that stack on any model (TLS, admission) in a box of their own.
    layers = {"TLSMixIn", "AdmissionMixIn", "PreforkMixIn"}
    mixins = {name for name in minisocketserver.__all__ if name.endswith("MixIn")} - layers
    assert mixins == set(re.findall(r"process_request --> (\w+)\n", text))
    for layer in layers & set(minisocketserver.__all__):
        assert f"<br>{layer} · " in text, layer
    if hasattr(minisocketserver, "ForkingMixIn"):
        assert "ForkingMixIn<br>fork a child for it<br>forking_mixin.py" in text


def test_an_arrow_whose_call_left_the_code_stops_the_drawing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = [*diagrams.ARCHITECTURE_CALLS, (minisocketserver.BaseServer.serve_forever, "select")]
    monkeypatch.setattr(diagrams, "ARCHITECTURE_CALLS", calls)
    with pytest.raises(RuntimeError, match=r"BaseServer.serve_forever no longer calls select"):
        diagrams.architecture()


class _Detached:
    """A model whose process_request hands the request to nothing that runs it."""

    def process_request(self, request: object, client_address: object) -> None:
        self._park(request)

    def _park(self, request: object) -> None:
        self.parked = request


def test_a_models_way_to_finish_request_is_followed_through_its_methods() -> None:
    from minisocketserver.threadpool_mixin import ThreadPoolMixIn

    # queue -> pool worker -> process_request_thread -> run_to_completion
    assert diagrams._reaches(ThreadPoolMixIn, "process_request", "finish_request")
    assert not diagrams._reaches(_Detached, "process_request", "finish_request")
