"""Stop requests: immediate outside a deferred section, recorded inside one."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from surety.core import interrupts


def _handler(signum: int, frame: FrameType | None) -> None:
    interrupts.request_stop()


@pytest.fixture
def sigterm_requests_stop() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.usefixtures("sigterm_requests_stop")
def test_a_signal_outside_a_section_interrupts_at_once() -> None:
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.usefixtures("sigterm_requests_stop")
def test_a_signal_inside_a_section_is_recorded_and_the_block_completes() -> None:
    steps = []
    with interrupts.deferred() as section:
        os.kill(os.getpid(), signal.SIGTERM)
        steps.append("after the signal")
        assert section.requested
    steps.append("after the section")
    assert steps == ["after the signal", "after the section"]
    with pytest.raises(KeyboardInterrupt):  # the section is closed: a new request stops
        os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.usefixtures("sigterm_requests_stop")
def test_a_quiet_section_records_nothing_and_nested_sections_all_see_a_request() -> None:
    with interrupts.deferred() as quiet:
        pass
    assert not quiet.requested
    with interrupts.deferred() as outer:
        with interrupts.deferred() as inner:
            os.kill(os.getpid(), signal.SIGTERM)
        assert inner.requested
        assert outer.requested


def test_a_section_closes_when_its_block_raises() -> None:
    with pytest.raises(ValueError, match="boom"), interrupts.deferred():
        raise ValueError("boom")
    with pytest.raises(KeyboardInterrupt):
        interrupts.request_stop()
