"""The public API is stdlib 3.13's: same names, same order, same defaults, same MROs.

Issue 2, item 2.  The running interpreter's ``socketserver`` is the oracle for
what each class offers; ``__all__`` is checked against 3.13's list, which
3.10 and 3.11 do not have in full (no ``ForkingUnix*`` names before 3.12).
"""

from __future__ import annotations

import inspect
import socket
import socketserver as stdlib
import sys
from typing import Any

import pytest
from stdlib_oracle import KINDS, MODELS, server_class

import minisocketserver as ours

if sys.version_info >= (3, 12):
    # 3.12 and 3.13 have the same list; the interpreter's own is the oracle.
    STDLIB_313_ALL = list(stdlib.__all__)
else:
    # Python 3.13's socketserver.__all__ on Linux, in its order (3.10 and
    # 3.11 lack the last two names).
    STDLIB_313_ALL = [
        "BaseServer", "TCPServer", "UDPServer", "ThreadingUDPServer", "ThreadingTCPServer",
        "BaseRequestHandler", "StreamRequestHandler", "DatagramRequestHandler",
        "ThreadingMixIn", "ForkingUDPServer", "ForkingTCPServer", "ForkingMixIn",
        "UnixStreamServer", "UnixDatagramServer", "ThreadingUnixStreamServer",
        "ThreadingUnixDatagramServer", "ForkingUnixStreamServer", "ForkingUnixDatagramServer",
    ]  # fmt: skip

#: The class attributes stdlib documents, by the class that introduces them.
DOCUMENTED_ATTRIBUTES = {
    "BaseServer": ["timeout"],
    "TCPServer": [
        "address_family", "socket_type", "request_queue_size", "allow_reuse_address",
        "allow_reuse_port",
    ],
    "UDPServer": ["max_packet_size", "allow_reuse_address", "allow_reuse_port"],
    "ThreadingMixIn": ["daemon_threads", "block_on_close"],
    "ForkingMixIn": ["timeout", "max_children", "active_children", "block_on_close"],
    "StreamRequestHandler": ["rbufsize", "wbufsize", "timeout", "disable_nagle_algorithm"],
}  # fmt: skip

#: Defaults we change on purpose, each documented where it is set:
#: (attribute, our value).  Everything else must equal stdlib's.
DELIBERATE_DEFAULTS = {
    # sockets.py: stdlib's backlog of 5 overflows under a burst (SYN retries).
    "request_queue_size": socket.SOMAXCONN,
}


def stdlib_classes() -> dict[str, type]:
    """Every public class of the running stdlib, plus the 3.12+ Forking Unix pair."""
    classes = {name: getattr(stdlib, name) for name in stdlib.__all__}
    for kind in ("unix_stream", "unix_dgram"):
        cls = server_class(stdlib, kind, "forking")
        classes.setdefault(cls.__name__, cls)
    return classes


def test_all_starts_with_stdlib_313_all_in_order() -> None:
    assert ours.__all__[: len(STDLIB_313_ALL)] == STDLIB_313_ALL


def test_every_name_in_all_exists() -> None:
    namespace: dict[str, Any] = {}
    exec("from minisocketserver import *", namespace)
    assert set(ours.__all__) <= set(namespace)


def test_running_stdlib_all_is_a_prefix_of_313s() -> None:
    """Guards the hard-coded list: whatever this interpreter has, 3.13 has first."""
    assert STDLIB_313_ALL[: len(stdlib.__all__)] == stdlib.__all__


@pytest.mark.parametrize("name", sorted(stdlib_classes()))
def test_public_names_exist_with_equal_defaults(name: str) -> None:
    theirs = stdlib_classes()[name]
    mine = getattr(ours, name)
    for attr in dir(theirs):
        if attr.startswith("_"):
            continue
        assert hasattr(mine, attr), f"{name}.{attr} is missing"
        expected = inspect.getattr_static(theirs, attr)
        actual = inspect.getattr_static(mine, attr)
        if callable(expected):
            assert callable(actual), f"{name}.{attr} is not a method"
            assert _parameters(actual) == _parameters(expected), f"{name}.{attr} signature"
        else:
            assert actual == DELIBERATE_DEFAULTS.get(attr, expected), f"{name}.{attr} default"


def _parameters(function: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("owner", sorted(DOCUMENTED_ATTRIBUTES))
def test_documented_class_attributes(owner: str) -> None:
    """The explicit list, so that a name dir() missed cannot slip through."""
    for attr in DOCUMENTED_ATTRIBUTES[owner]:
        if not hasattr(getattr(stdlib, owner), attr):
            assert attr == "allow_reuse_port" and sys.version_info < (3, 11)
            continue
        expected = DELIBERATE_DEFAULTS.get(attr, getattr(getattr(stdlib, owner), attr))
        assert getattr(getattr(ours, owner), attr) == expected, f"{owner}.{attr}"


def test_threads_private_name_counts_zero_before_any_request() -> None:
    """Code written for stdlib reads ``len(server._threads)`` (stdlib's is a list)."""
    with ours.ThreadingTCPServer(("127.0.0.1", 0), ours.BaseRequestHandler) as server:
        assert len(server._threads) == 0


def test_selector_class_defaults_as_stdlib() -> None:
    assert ours.BaseServer.selector_class is stdlib._ServerSelector


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kind", KINDS)
def test_mro_has_stdlib_shape(kind: str, model: str) -> None:
    mine = server_class(ours, kind, model)
    theirs = server_class(stdlib, kind, model)
    assert mine.__name__ == theirs.__name__
    assert [c.__name__ for c in mine.__mro__] == [c.__name__ for c in theirs.__mro__]


@pytest.mark.parametrize(
    "name", ["BaseRequestHandler", "StreamRequestHandler", "DatagramRequestHandler"]
)
def test_handler_mro_has_stdlib_shape(name: str) -> None:
    assert [c.__name__ for c in getattr(ours, name).__mro__] == [
        c.__name__ for c in getattr(stdlib, name).__mro__
    ]


def test_combined_classes_are_distinct_types_per_module() -> None:
    """Our classes are our own: none is, or derives from, a stdlib class."""
    for name in ours.__all__:
        cls = getattr(ours, name)
        if not isinstance(cls, type):  # a function (listen_fds, plain_address...)
            continue
        assert not any(base.__module__ == "socketserver" for base in cls.__mro__), name
