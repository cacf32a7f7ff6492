"""Checks for chapter 12's exercises (docs/12-many-cores-many-machines.md, "Exercises").

The package's own encoders and parser (minisocketserver.proxy_protocol) are the oracle.
"""

from __future__ import annotations

import sys
from types import ModuleType

import pytest

from minisocketserver.proxy_protocol import encode_v1, encode_v2, parse_header

ADDRESSES = [(("192.0.2.10", 51234), ("198.51.100.1", 443)),
             (("0.0.0.0", 0), ("255.255.255.255", 65535))]


@pytest.mark.parametrize(("source", "destination"), ADDRESSES)
def test_chapter12_a_v2_header_by_hand(
    answers: ModuleType, source: tuple[str, int], destination: tuple[str, int]
) -> None:
    header = answers.v2_tcp4(source, destination)
    assert header == encode_v2(source, destination)
    parsed = parse_header(header)
    assert parsed is not None and parsed.source == source


@pytest.mark.parametrize(("source", "destination"), ADDRESSES)
def test_chapter12_a_v1_line_read(
    answers: ModuleType, source: tuple[str, int], destination: tuple[str, int]
) -> None:
    assert answers.v1_source(encode_v1(source, destination)) == source


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 192.0.2.10 198.51.100.1 51234 443\n",       # LF alone
    b"PROXY TCP4 192.0.2.10 198.51.100.1 051234 443\r\n",    # a leading zero
    b"PROXY TCP4 192.0.2.010 198.51.100.1 51234 443\r\n",    # in an octet too
    b"PROXY TCP4 192.0.2.10 198.51.100.1 65536 443\r\n",     # no such port
    b"PROXY TCP6 ::1 ::1 51234 443\r\n",                     # another family
    b"PROXY TCP4 192.0.2.10 198.51.100.1 51234\r\n",         # a field missing
    b"PROXY  TCP4 192.0.2.10 198.51.100.1 51234 443\r\n",    # two spaces
    b"PROXY TCP4 192.0.2.10 198.51.100.1 51234 443" + b" " * 62 + b"\r\n",  # 108 bytes
])
def test_chapter12_a_bad_v1_line_is_refused(answers: ModuleType, line: bytes) -> None:
    assert answers.v1_source(line) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT's hash is Linux's")
def test_chapter12_reuseport_spreads_the_connections(answers: ModuleType) -> None:
    counts = answers.reuseport_spread(2, 40)
    assert len(counts) == 2 and sum(counts) == 40
    # Each listener gets some: all 40 on one has a chance of 2 in 2**40.
    assert min(counts) > 0, counts
