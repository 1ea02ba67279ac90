"""The requester: drive writers and the snapshot provider through one instant.

    discover -> prepare -> [window opens] freeze apps -> freeze file systems
    -> snapshot -> thaw file systems -> thaw apps [window closes] -> post-thaw
    ... the backup job copies and commits ...
    after-commit (log truncation; only with the id of a committed point)

Failure policy (``QuiescePolicy.fallback``, the lowest level accepted):
``fail`` raises; ``filesystem`` drops a failed application writer and records
the fall-back; ``crash`` also accepts a failed file-system freeze. A writer
failure marked ``required`` (a `script` with "require success") always fails
the job. Thawing is unconditional and happens in ``finally``; a guardian
outside the process (injected as ``guard``) thaws the file systems if this
process dies or overruns the window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from surety.core.errors import SourceError, SuretyError
from surety.core.progress import Progress
from surety.quiesce.provider import SnapshotProvider
from surety.quiesce.writer import APPLICATION, FILESYSTEM, Writer, WriterFailed

__all__ = ["Guard", "QuiescePolicy", "Quiesced", "Requester", "SnapshotProvider"]

LEVELS = ("crash", FILESYSTEM, APPLICATION)


class Guard(Protocol):
    """The out-of-process watchdog: told when the window opens and when the guest is thawed."""

    def freezing(self) -> None: ...

    def thawed(self) -> None: ...


@dataclass(frozen=True)
class QuiescePolicy:
    wanted: str = FILESYSTEM  # crash | filesystem | application
    fallback: str = "fail"  # fail | filesystem | crash: lowest level accepted
    window: float = 10.0


@dataclass
class Quiesced:
    """What the instant reached: level, why, and per-writer records."""

    level: str = "crash"
    reason: str = "no guest help requested"
    frozen_seconds: float | None = None
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    snapshot: Any = None


class Requester:
    def __init__(
        self,
        writers: Sequence[Writer],
        provider: SnapshotProvider,
        policy: QuiescePolicy,
        progress: Progress,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.candidates = list(writers)
        self.provider, self.policy, self.progress = provider, policy, progress
        self.clock = clock
        self.active: list[Writer] = []  # discovered and not dropped
        self.prepared: list[Writer] = []
        self.result = Quiesced()
        self._fs_span: list[float] = []  # file-system freeze call .. thaw done

    # -- the instant ----------------------------------------------------------
    def snapshot(self, guard: Guard) -> Quiesced:
        """Quiesce, take the snapshot, thaw. Raises only when the policy says fail."""
        if self.policy.wanted == "crash":
            return self._crash_snapshot("no guest help requested")
        try:
            self._discover()
            self._prepare()
        except BaseException:
            self._thaw_all(guard)  # release whatever was already prepared
            raise
        return self._freeze_and_snapshot(guard)

    def _crash_snapshot(self, reason: str) -> Quiesced:
        self.progress.phase("snapshot")
        self.result.snapshot = self.provider.begin()
        self.result.level, self.result.reason = "crash", reason
        return self.result

    def _discover(self) -> None:
        self.progress.phase("discover")
        for writer in self.candidates:
            try:
                applies = writer.applies()
            except SuretyError as exc:
                self._failed(writer, exc, step="discover")
                continue
            if applies:
                self.active.append(writer)
            else:
                writer.record.state = "skipped"
        apps = [w for w in self.candidates if w.level == APPLICATION]
        if self.policy.wanted == APPLICATION and all(w.record.state == "skipped" for w in apps):
            raise SourceError(
                "--consistency application: no application writer applies to this VM "
                f"(looked for: {self._names(APPLICATION) or 'none installed'}); "
                "use --consistency filesystem, or add --pre-freeze/--post-thaw scripts"
            )

    def _names(self, level: str) -> str:
        return ", ".join(w.name for w in self.candidates if w.level == level)

    def _prepare(self) -> None:
        self.progress.phase("prepare")
        for writer in list(self.active):
            self.prepared.append(writer)
            try:
                with writer.record.timed("prepare"):
                    writer.prepare()
                writer.record.state = "prepared"
            except SuretyError as exc:
                self._failed(writer, exc, step="prepare")

    def _freeze_and_snapshot(self, guard: Guard) -> Quiesced:
        self.progress.phase("freeze")
        guard.freezing()
        opened = self.clock()
        window = self.policy.window
        # application writers freeze side by side and must be done early enough
        # to leave the file-system freeze and the snapshot their share of the window
        apps_deadline = opened + window - min(max(1.0, window * 0.25), window / 2)
        try:
            self._freeze_apps(apps_deadline)
            fs_frozen = self._freeze_filesystems(opened + window)
            frozen = self.clock()
            self.progress.phase("snapshot")
            self.result.snapshot = self.provider.begin()
            snapshot_at = self.clock()
        finally:
            self._thaw_all(guard)
        thawed = self.clock()
        self._post_thaw()
        return self._conclude(opened, frozen, snapshot_at, thawed, fs_frozen)

    def _freeze_apps(self, deadline: float) -> None:
        apps = [w for w in self.active if w.level == APPLICATION]
        if not apps:
            return

        def freeze(writer: Writer) -> SuretyError | None:
            try:
                with writer.record.timed("freeze"):
                    writer.freeze(deadline)
            except SuretyError as exc:
                return exc
            writer.record.state = "frozen"
            return None

        with ThreadPoolExecutor(max_workers=len(apps), thread_name_prefix="freeze") as pool:
            outcomes = list(pool.map(freeze, apps))
        for writer, error in zip(apps, outcomes, strict=True):
            if error is not None:
                self._failed(writer, error, step="freeze")

    def _freeze_filesystems(self, deadline: float) -> bool:
        self._fs_span = [time.monotonic()]
        frozen = False
        for writer in [w for w in self.active if w.level == FILESYSTEM]:
            try:
                with writer.record.timed("freeze"):
                    writer.freeze(deadline)
                writer.record.state = "frozen"
                frozen = True
            except SuretyError as exc:
                self._failed(writer, exc, step="freeze")
        return frozen

    def _thaw_all(self, guard: Guard) -> None:
        """File systems first (the agent refuses all else while frozen), then apps."""
        order = sorted(self.prepared, key=lambda w: w.level != FILESYSTEM)
        for writer in order:
            try:
                with writer.record.timed("thaw"):
                    writer.thaw()
            except SuretyError as exc:  # a writer's thaw must not stop the others'
                writer.record.warnings.append(f"thaw: {exc}")
                if writer.record.state == "frozen":
                    writer.record.state = "expired"
            if writer.record.state == "frozen":
                writer.record.state = "thawed"
            if writer.level == FILESYSTEM:
                guard.thawed()
                self._fs_span.append(time.monotonic())
        guard.thawed()

    def _post_thaw(self) -> None:
        for writer in self.active:
            post = getattr(writer, "post_thaw", None)
            if post is None:
                continue
            try:
                post()
            except SuretyError as exc:
                self._failed(writer, exc, step="post-thaw")

    def _conclude(
        self, opened: float, frozen: float, snapshot_at: float, thawed: float, fs_frozen: bool
    ) -> Quiesced:
        result = self.result
        result.frozen_seconds = round(thawed - opened, 3)
        result.timings = {
            "freeze_calls": round(frozen - opened, 3),
            "snapshot": round(snapshot_at - frozen, 3),
            "thaw_calls": round(thawed - snapshot_at, 3),
        }
        if len(self._fs_span) == 2:  # writes blocked at the file-system level
            result.timings["filesystems_frozen"] = round(self._fs_span[1] - self._fs_span[0], 3)
        late = snapshot_at - opened > self.policy.window
        if late or not fs_frozen:
            why = (
                f"the snapshot came {snapshot_at - opened:.1f} s after the freeze began, beyond "
                f"the {self.policy.window:g} s window (the guest was thawed on time)"
                if late
                else "the guest file systems were not frozen"
            )
            result.level = self._accept("crash", why)
        elif self.policy.wanted == APPLICATION:
            missed = [
                w.name
                for w in self.candidates
                if w.level == APPLICATION and w.record.state in ("failed", "expired")
            ]
            why = f"writer(s) {', '.join(missed)} did not hold their application at the snapshot"
            result.level = self._accept(FILESYSTEM, why, note=False) if missed else APPLICATION
        else:
            result.level = FILESYSTEM
        result.reason = self._reason(result.level)
        return result

    def _accept(self, level: str, why: str, note: bool = True) -> str:
        if LEVELS.index(level) < LEVELS.index(self._floor()):
            raise SourceError(f"cannot reach {self.policy.wanted} consistency: {why}")
        if note or not self.result.warnings:
            self.result.warnings.append(why)
        return level

    def _floor(self) -> str:
        return self.policy.wanted if self.policy.fallback == "fail" else self.policy.fallback

    def _reason(self, level: str) -> str:
        held = [
            f"{w.name} ({w.record.metadata.get('summary', 'quiesced')})"
            for w in self.active
            if w.level == APPLICATION and w.record.state == "thawed"
        ]
        frozen = f"guest file systems frozen for {self.result.frozen_seconds:.3f} s"
        parts = [f"{', '.join(held)} quiesced" if held and level == APPLICATION else "", frozen]
        if level == "crash":
            parts = []
        reason = "; ".join(p for p in parts if p)
        if self.result.warnings:
            fell = f"fell back to {level} consistency: " + "; ".join(self.result.warnings)
            reason = f"{fell}" + (f" ({reason})" if reason else "")
        return reason or "crash-consistent"

    # -- failures -------------------------------------------------------------
    def _failed(self, writer: Writer, exc: SuretyError, step: str) -> None:
        """Apply the policy to a writer's failure: raise, or drop it and record why."""
        writer.record.state = "failed"
        message = exc.detail if isinstance(exc, WriterFailed) else str(exc)
        writer.record.warnings.append(f"{step}: {message}")
        required = isinstance(exc, WriterFailed) and exc.required
        if writer in self.active:
            self.active.remove(writer)
        reachable = FILESYSTEM if writer.level == APPLICATION else "crash"
        if required or LEVELS.index(reachable) < LEVELS.index(self._floor()):
            raise SourceError(f"{writer.name} writer failed at {step}: {message}") from exc
        self.result.warnings.append(f"{writer.name} writer failed at {step}: {message}")

    # -- after the backup -----------------------------------------------------
    def after_commit(self, point_id: str, truncate_logs: bool) -> dict[str, Any]:
        """Only with a committed point: let writers truncate logs (and run after-commit)."""
        report: dict[str, Any] = {}
        for writer in self.active:
            if writer.record.state != "thawed":
                continue
            try:
                outcome = writer.after_commit(point_id, truncate_logs)
            except SuretyError as exc:
                outcome = {"done": False, "detail": str(exc)}
            if outcome:
                report[writer.name] = outcome
        return report

    def records(self) -> dict[str, Any]:
        return {w.name: w.record.as_dict() for w in self.candidates if w.record.state != "skipped"}

    def cleanup(self) -> None:
        for writer in self.candidates:
            with suppress(Exception):
                writer.cleanup()
