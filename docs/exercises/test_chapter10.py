"""Checks for chapter 10's exercises (docs/10-select-poll-epoll.md, "Exercises")."""

from __future__ import annotations

import selectors
import sys
from types import ModuleType

import pytest

SELECTORS = [
    getattr(selectors, name)
    for name in ("SelectSelector", "PollSelector", "EpollSelector", "KqueueSelector")
    if hasattr(selectors, name)
]


@pytest.mark.skipif(sys.platform == "win32", reason="Windows' select() has no such limit")
def test_chapter10_select_refuses_descriptor_1024(answers: ModuleType) -> None:
    assert answers.select_refuses_1024() == "filedescriptor out of range in select()"


@pytest.mark.parametrize("selector_class", SELECTORS, ids=lambda c: c.__name__)
def test_chapter10_a_closed_peer_reads_as_readable(
    answers: ModuleType, selector_class: type[selectors.BaseSelector]
) -> None:
    assert answers.events_after_peer_closes(selector_class) == selectors.EVENT_READ


@pytest.mark.parametrize("selector_class", SELECTORS, ids=lambda c: c.__name__)
def test_chapter10_selectors_are_level_triggered(
    answers: ModuleType, selector_class: type[selectors.BaseSelector]
) -> None:
    assert answers.reports_until_read(selector_class, 3) == 3
