"""``script``: the user's own pre-freeze / post-thaw / after-commit commands.

Each command runs in the guest as ``sh -c CMD`` through the agent (as the
agent's user, root). pre-freeze runs inside the freeze window, just before the
file systems freeze, with the time left as its deadline; post-thaw right after
the thaw; after-commit only once the restore point is committed. With
``script_failure = fail`` ("require success") a failing or hanging command
fails the job; with ``ignore`` it is recorded as a warning.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from surety.core.errors import SourceError
from surety.quiesce.channel import GuestChannel
from surety.quiesce.writer import APPLICATION, QuiesceJob, WriterFailed, WriterRecord

__all__ = ["ScriptWriter"]

AFTER_TIMEOUT = 600.0


class ScriptWriter:
    name: ClassVar[str] = "script"
    level: ClassVar[str] = APPLICATION

    def __init__(self, guest: GuestChannel, job: QuiesceJob) -> None:
        self.guest, self.job = guest, job
        self.record = WriterRecord()
        self.record.metadata["commands"] = {
            step: command
            for step, command in (
                ("pre-freeze", job.pre_freeze),
                ("post-thaw", job.post_thaw),
                ("after-commit", job.after_commit),
            )
            if command
        }
        self.record.metadata["on_failure"] = job.script_failure

    def applies(self) -> bool:
        return bool(self.record.metadata["commands"])

    def prepare(self) -> None:
        pass

    def freeze(self, deadline: float) -> None:
        self._run("pre-freeze", self.job.pre_freeze, deadline - time.monotonic())
        self.record.metadata["summary"] = "pre-freeze script" if self.job.pre_freeze else "scripts"

    def thaw(self) -> None:
        pass

    def post_thaw(self) -> None:
        self._run("post-thaw", self.job.post_thaw, AFTER_TIMEOUT)

    def after_commit(self, point_id: str, truncate_logs: bool) -> dict[str, Any]:
        if not self.job.after_commit:
            return {}
        try:
            self._run("after-commit", self.job.after_commit, AFTER_TIMEOUT)
        except WriterFailed as exc:
            return {"done": False, "detail": str(exc), "required": True}
        return {"done": True, "detail": "after-commit script succeeded"}

    def cleanup(self) -> None:
        pass

    def _run(self, step: str, command: str | None, timeout: float) -> None:
        if not command:
            return
        try:
            with self.record.timed(step):
                result = self.guest.run(["sh", "-c", command], timeout=max(0.5, timeout))
            problem = None if result.ok else f"exit {result.exitcode}: {result.text()[-300:]}"
        except SourceError as exc:
            problem = str(exc)
        if problem is None:
            return
        message = f"{step} script {command!r} failed ({problem})"
        if self.job.script_failure == "ignore":
            self.record.warnings.append(message + "; ignored as asked")
            return
        raise WriterFailed(self.name, message, required=True)
