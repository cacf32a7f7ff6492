"""Rude clients against every stream model: resets, half-closes, slow and deaf clients.

Issue 5, item 1.  Each scenario (tests/fault_scenarios.py) runs against
every model in tests/fault_models.py and ends with a normal client that
must be answered; the ``no_leaks`` fixture then checks that descriptors,
threads and child processes are back to their baseline.  The clients run
in a process of their own (tests/fault_clients.py), so that a reset is a
real RST even for a forking server's inherited descriptors.
"""

from __future__ import annotations

from collections.abc import Iterator

import fault_scenarios as scenarios
import pytest
from fault_clients import ClientHost
from fault_models import MODELS, Model
from support import Resources

import minisocketserver as socketserver


@pytest.fixture(scope="module")
def host() -> Iterator[ClientHost]:
    clients = ClientHost()
    yield clients
    clients.stop()


@pytest.fixture(autouse=True)
def _fresh_clients(host: ClientHost) -> Iterator[None]:
    yield
    host.close_all()  # a failed test must not leave clients to the next one


models = pytest.mark.parametrize("model", MODELS, ids=str)


@models
@pytest.mark.timeout(30)
def test_resets_before_during_and_after_a_request(
    model: Model, host: ClientHost, no_leaks: Resources
) -> None:
    tally = scenarios.resets(model, host)
    assert tally.faults == 200 and tally.lost == 0
    # Every report is a client going away under its handler, nothing else.
    assert set(tally.reports) <= {"ConnectionResetError", "BrokenPipeError", "finish"}


@models
@pytest.mark.timeout(20)
def test_half_closed_clients_still_get_their_reply(
    model: Model, host: ClientHost, no_leaks: Resources
) -> None:
    tally = scenarios.half_close(model, host)
    assert tally.answered == tally.expected == 51
    assert set(tally.reports) <= {"finish"}


@models
@pytest.mark.timeout(30)
def test_slow_clients_are_timed_out_and_do_not_block_others(
    model: Model, host: ClientHost, no_leaks: Resources
) -> None:
    tally = scenarios.slowloris(model, host)
    assert tally.lost == 0
    # A stream handler's read times out; a multiplexed connection just ends.
    assert set(tally.reports) <= {"TimeoutError", "finish"}


@models
@pytest.mark.timeout(30)
def test_a_client_that_never_reads_does_not_hold_its_handler_forever(
    model: Model, host: ClientHost, no_leaks: Resources
) -> None:
    assert scenarios.never_reads(model, host).lost == 0


@models
@pytest.mark.timeout(20)
def test_a_handler_exception_goes_to_handle_error_and_closes_the_connection(
    model: Model, host: ClientHost, no_leaks: Resources
) -> None:
    assert scenarios.handler_raises(model, host).lost == 0


MULTIPLEXING = [m for m in MODELS if m.multiplexed]


@models
@pytest.mark.timeout(20)
def test_pipelined_requests_from_a_late_reader_lose_no_reply(
    model: Model, host: ClientHost, no_leaks: Resources
) -> None:
    """200 requests for 64 KiB each, read only at the end: all 13 MB arrive."""
    assert scenarios.backpressure(model, host).lost == 0


@pytest.mark.parametrize("model", MULTIPLEXING, ids=str)
@pytest.mark.timeout(20)
def test_multiplexing_backpressure_bounds_the_queue_of_a_client_that_never_reads(
    model: Model, host: ClientHost, no_leaks: Resources
) -> None:
    tally = scenarios.backpressure(model, host)
    # The queue may pass the high-water mark by one reply, not by the whole
    # pipeline.
    high_water = socketserver.MultiplexedRequestHandler.write_high_water
    assert tally.peak_pending <= high_water + scenarios.REPLY_SIZE, tally.peak_pending
