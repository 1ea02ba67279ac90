"""When may an agent command be sent again? Only when libvirt never sent it.

libvirt says "Guest agent not available for now" both when its guest-sync
timed out (the command never left the host) and when the command itself went
unanswered. CI saw the second case retried: a repeated guest-exec-status found
its process already reaped ("Invalid parameter 'pid'").
"""

from __future__ import annotations

import libvirt

from surety.hypervisor.libvirt_host import never_sent


class Refusal:
    """What libvirt raises, reduced to the two things never_sent reads."""

    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message

    def get_error_code(self) -> int:
        return self.code

    def get_error_message(self) -> str:
        return self.message


UNSYNCED = Refusal(libvirt.VIR_ERR_AGENT_UNRESPONSIVE, "Guest agent not available for now")


def test_a_guest_sync_that_timed_out_sent_nothing() -> None:
    assert never_sent(UNSYNCED, elapsed=5.0, timeout=10)
    assert never_sent(UNSYNCED, elapsed=1.0, timeout=30)


def test_a_command_that_waited_its_whole_timeout_was_sent() -> None:
    assert not never_sent(UNSYNCED, elapsed=10.2, timeout=10)
    assert not never_sent(UNSYNCED, elapsed=9.6, timeout=10)


def test_other_refusals_are_never_sent_again() -> None:
    gone = Refusal(libvirt.VIR_ERR_AGENT_UNRESPONSIVE, "Guest agent disappeared")
    invalid = Refusal(libvirt.VIR_ERR_INTERNAL_ERROR, "Invalid parameter 'pid'")
    assert not never_sent(gone, elapsed=0.1, timeout=10)
    assert not never_sent(invalid, elapsed=0.1, timeout=10)
