"""``fsfreeze``: the file-system-level writer (qemu-guest-agent's fs-freeze).

Freezing flushes every guest file system and blocks new writes until the
thaw; the agent also runs the guest's own fsfreeze hooks. It is the last
writer to freeze and the first to thaw. A failed thaw is not fatal here: the
guardian outside the job keeps retrying it until the window ends.
"""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any, ClassVar

from surety.core.errors import SourceError
from surety.quiesce.channel import GuestChannel
from surety.quiesce.writer import FILESYSTEM, QuiesceJob, WriterRecord

__all__ = ["FsFreezeWriter"]


class FsFreezeWriter:
    name: ClassVar[str] = "fsfreeze"
    level: ClassVar[str] = FILESYSTEM

    def __init__(self, guest: GuestChannel, job: QuiesceJob) -> None:
        self.guest, self.job = guest, job
        self.record = WriterRecord()

    def applies(self) -> bool:
        self.guest.ping(timeout=5)
        return True

    def prepare(self) -> None:
        pass

    def freeze(self, deadline: float) -> None:
        left = max(1, int(deadline - time.monotonic()))
        count = self.guest.freeze_filesystems(left)
        self.record.metadata.update(filesystems=count, summary=f"{count} file system(s)")

    def thaw(self) -> None:
        with suppress(SourceError):
            self.guest.thaw_filesystems()

    def after_commit(self, point_id: str, truncate_logs: bool) -> dict[str, Any]:
        return {}

    def cleanup(self) -> None:
        pass
