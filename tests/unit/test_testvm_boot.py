"""``testvm.wait_for_boot``: a QEMU that crashed while a test guest booted is started once
more; every other failure is raised as it was (CI met QEMU 7.2's TCG segfault a second into
a boot, which failed a whole scenario)."""

from __future__ import annotations

import libvirt
import pytest

from tests.guests import agent, testvm

CRASHED = (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED)
RUNNING = (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_BOOTED)


class Domain:
    """What wait_for_boot asks of a libvirt domain: its state, a start, a name."""

    def __init__(self, state: tuple[int, int]) -> None:
        self.now, self.starts = state, 0

    def state(self) -> list[int]:
        return list(self.now)

    def create(self) -> int:
        self.starts += 1
        self.now = RUNNING
        return 0

    def name(self) -> str:
        return "t1"


def _agent(monkeypatch: pytest.MonkeyPatch, answers: list[BaseException | float]) -> list[float]:
    """wait_for_agent answers with ``answers`` in turn (raising the exceptions); the timeouts
    it was given are returned."""
    given: list[float] = []

    def wait_for_agent(dom: Domain, timeout: float = 180.0) -> float:
        given.append(timeout)
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(agent, "wait_for_agent", wait_for_agent)
    return given


def test_a_crashed_qemu_is_started_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    dom = Domain(CRASHED)
    given = _agent(monkeypatch, [agent.AgentError("domain t1 is not running (state=5)"), 21.5])
    assert testvm.wait_for_boot(dom, 900.0) == 21.5
    assert dom.starts == 1
    assert given == [900.0, 900.0]


def test_a_second_crash_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    dom = Domain(CRASHED)
    second = agent.AgentError("domain t1 is not running (state=5)")
    _agent(monkeypatch, [agent.AgentError("first"), second])
    with pytest.raises(agent.AgentError) as caught:
        testvm.wait_for_boot(dom, 60.0)
    assert caught.value is second
    assert dom.starts == 1


@pytest.mark.parametrize(
    "state",
    [
        RUNNING,  # a guest that never answers: the timeout stands
        (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN),
        (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_UNKNOWN),  # a KVM emulation failure
    ],
)
def test_other_failures_are_raised_without_a_restart(
    monkeypatch: pytest.MonkeyPatch, state: tuple[int, int]
) -> None:
    dom = Domain(state)
    failure = agent.AgentTimeoutError("no answer")
    _agent(monkeypatch, [failure])
    with pytest.raises(agent.AgentError) as caught:
        testvm.wait_for_boot(dom, 60.0)
    assert caught.value is failure
    assert dom.starts == 0
