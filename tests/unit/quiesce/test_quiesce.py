"""The requester's state machine and policies, with fake writers and a fake guest."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from surety.core.errors import SourceError
from surety.core.progress import NullProgress
from surety.quiesce.coordinator import QuiescePolicy, Requester
from surety.quiesce.writer import APPLICATION, QuiesceJob, WriterFailed, WriterRecord
from surety.quiesce.writers.fsfreeze import FsFreezeWriter
from surety.quiesce.writers.script import ScriptWriter
from surety.testing.fake_guest import FakeGuest, GuestResult


class Log(list[str]):
    pass


class AppWriter:
    """An application writer that logs its steps and fails where told."""

    level: ClassVar[str] = APPLICATION

    def __init__(self, name: str, log: Log, fail_at: str = "", applies: bool = True) -> None:
        self.name = name  # type: ignore[misc]
        self.log, self.fail_at, self._applies = log, fail_at, applies
        self.record = WriterRecord()

    def _step(self, step: str) -> None:
        self.log.append(f"{self.name}.{step}")
        if step == self.fail_at:
            raise WriterFailed(self.name, f"{step} went wrong")

    def applies(self) -> bool:
        self._step("discover")
        return self._applies

    def prepare(self) -> None:
        self._step("prepare")

    def freeze(self, deadline: float) -> None:
        self._step("freeze")

    def thaw(self) -> None:
        self.log.append(f"{self.name}.thaw")
        if self.fail_at == "expire":
            self.record.state = "expired"
        if self.fail_at == "thaw":
            raise WriterFailed(self.name, "thaw went wrong")

    def after_commit(self, point_id: str, truncate_logs: bool) -> dict[str, Any]:
        self.log.append(f"{self.name}.after_commit({point_id},{truncate_logs})")
        return {"done": truncate_logs, "detail": "truncated" if truncate_logs else "kept"}

    def cleanup(self) -> None:
        self.log.append(f"{self.name}.cleanup")


class Provider:
    def __init__(self, guest: FakeGuest, log: Log) -> None:
        self.guest, self.log = guest, log

    def begin(self) -> dict[str, str]:
        self.log.append(f"snapshot(frozen={self.guest.frozen})")
        return {"vda": "export"}


class Guard:
    def __init__(self, log: Log) -> None:
        self.log = log

    def freezing(self) -> None:
        self.log.append("guard.freezing")

    def thawed(self) -> None:
        self.log.append("guard.thawed")


def make(
    *writers: AppWriter,
    wanted: str = APPLICATION,
    fallback: str = "fail",
    guest: FakeGuest | None = None,
    clock: Any = None,
) -> tuple[Requester, Log, FakeGuest]:
    log = writers[0].log if writers else Log()
    guest = guest or FakeGuest()
    fs = FsFreezeWriter(guest, QuiesceJob(token="t"))
    kwargs = {"clock": clock} if clock else {}
    requester = Requester(
        [*writers, fs],
        Provider(guest, log),
        QuiescePolicy(wanted, fallback, window=10),
        NullProgress(),
        **kwargs,
    )
    return requester, log, guest


def snapshot(requester: Requester, log: Log) -> Any:
    return requester.snapshot(Guard(log))


def test_steps_run_in_order_and_the_snapshot_sees_a_frozen_guest() -> None:
    log = Log()
    requester, _, guest = make(AppWriter("pg", log), AppWriter("maria", log))
    result = snapshot(requester, log)
    assert result.level == "application"
    assert log == [
        "pg.discover",
        "maria.discover",
        "pg.prepare",
        "maria.prepare",
        "guard.freezing",
        *sorted(["pg.freeze", "maria.freeze"], key=log.index),
        "snapshot(frozen=True)",
        "guard.thawed",  # the file systems thaw first
        "pg.thaw",
        "maria.thaw",
        "guard.thawed",
    ]
    assert not guest.frozen
    assert guest.thaws == 1
    assert "pg (quiesced), maria (quiesced) quiesced" in result.reason
    assert requester.records()["pg"]["state"] == "thawed"


def test_logs_are_truncated_only_through_after_commit() -> None:
    log = Log()
    requester, _, _ = make(AppWriter("pg", log))
    snapshot(requester, log)
    assert not any("after_commit" in entry for entry in log)
    report = requester.after_commit("point1", truncate_logs=True)
    assert log[-1] == "pg.after_commit(point1,True)"
    assert report == {"pg": {"done": True, "detail": "truncated"}}


def test_a_failed_writer_is_never_asked_to_truncate() -> None:
    log = Log()
    requester, _, _ = make(AppWriter("pg", log), AppWriter("maria", log, "freeze"), fallback=FS)
    snapshot(requester, log)
    requester.after_commit("p", truncate_logs=True)
    assert "pg.after_commit(p,True)" in log
    assert not any(e.startswith("maria.after_commit") for e in log)


FS = "filesystem"


def test_writer_failure_with_fallback_records_filesystem_and_thaws_everyone() -> None:
    log = Log()
    requester, _, guest = make(AppWriter("pg", log), AppWriter("maria", log, "freeze"), fallback=FS)
    result = snapshot(requester, log)
    assert result.level == "filesystem"
    assert "fell back to filesystem consistency: maria writer failed at freeze" in result.reason
    assert {"pg.thaw", "maria.thaw"} <= set(log)
    assert requester.records()["maria"]["state"] == "failed"
    assert requester.records()["maria"]["warnings"] == ["freeze: freeze went wrong"]
    assert not guest.frozen


@pytest.mark.parametrize("step", ["discover", "prepare", "freeze"])
def test_writer_failure_without_fallback_fails_the_job_and_thaws(step: str) -> None:
    log = Log()
    requester, _, guest = make(AppWriter("pg", log), AppWriter("maria", log, step))
    with pytest.raises(SourceError, match=f"maria writer failed at {step}: {step} went wrong"):
        snapshot(requester, log)
    assert not any(e.startswith("snapshot") for e in log)
    prepared = [w for w in ("pg", "maria") if f"{w}.prepare" in log]
    assert all(f"{w}.thaw" in log for w in prepared)
    assert not guest.frozen


def test_an_expired_writer_lowers_the_level() -> None:
    log = Log()
    requester, _, _ = make(AppWriter("pg", log, "expire"), fallback=FS)
    result = snapshot(requester, log)
    assert result.level == "filesystem"
    assert "pg did not hold their application" in result.reason


def test_a_failing_thaw_does_not_stop_the_other_thaws() -> None:
    log = Log()
    requester, _, guest = make(AppWriter("pg", log, "thaw"), AppWriter("maria", log), fallback=FS)
    result = snapshot(requester, log)
    assert "maria.thaw" in log
    assert not guest.frozen
    assert result.level == "filesystem"
    assert requester.records()["pg"]["warnings"] == ["thaw: pg writer: thaw went wrong"]


def test_no_applicable_writer_says_so() -> None:
    log = Log()
    requester, _, _ = make(AppWriter("pg", log, applies=False))
    with pytest.raises(SourceError, match="no application writer applies to this VM"):
        snapshot(requester, log)


def test_failed_fs_freeze_falls_back_to_crash_only_when_allowed() -> None:
    log = Log()
    requester, _, _ = make(wanted=FS, fallback="crash", guest=FakeGuest(fail_freeze=True))
    result = snapshot(requester, log)
    assert result.level == "crash"
    assert "fell back to crash consistency: fsfreeze writer failed at freeze" in result.reason
    requester, _, _ = make(wanted=FS, guest=FakeGuest(fail_freeze=True))
    with pytest.raises(SourceError, match="fsfreeze writer failed at freeze"):
        snapshot(requester, Log())


def test_unreachable_agent_fails_or_falls_back() -> None:
    requester, _, _ = make(wanted=FS, guest=FakeGuest(reachable=False))
    with pytest.raises(SourceError, match="guest agent guest-ping"):
        snapshot(requester, Log())
    requester, _, _ = make(wanted=FS, fallback="crash", guest=FakeGuest(reachable=False))
    assert snapshot(requester, Log()).level == "crash"


def test_a_snapshot_beyond_the_window_is_crash_consistent() -> None:
    ticks = iter([0.0, 0.1, 12.0, 12.1])
    log = Log()
    requester, _, _ = make(AppWriter("pg", log), fallback="crash", clock=lambda: next(ticks))
    result = snapshot(requester, log)
    assert result.level == "crash"
    assert "beyond the 10 s window" in result.reason
    ticks = iter([0.0, 0.1, 12.0, 12.1])
    requester, _, _ = make(AppWriter("pg", Log()), clock=lambda: next(ticks))
    with pytest.raises(SourceError, match="cannot reach application consistency"):
        snapshot(requester, Log())


def test_crash_consistency_asks_nothing_of_the_guest() -> None:
    log = Log()
    requester, _, guest = make(AppWriter("pg", log), wanted="crash")
    assert snapshot(requester, log).level == "crash"
    assert log == ["snapshot(frozen=False)"]
    assert guest.freezes == 0


def script_writer(guest: FakeGuest, failure: str = "fail", **commands: str) -> ScriptWriter:
    return ScriptWriter(guest, QuiesceJob(token="t", script_failure=failure, **commands))


def test_script_writer_require_success_fails_the_job_whatever_the_fallback() -> None:
    guest = FakeGuest(handlers={"exit 3": lambda _argv: GuestResult(3, stderr=b"boom")})
    requester = Requester(
        [script_writer(guest, pre_freeze="exit 3"), FsFreezeWriter(guest, QuiesceJob("t"))],
        Provider(guest, Log()),
        QuiescePolicy(APPLICATION, "crash"),
        NullProgress(),
    )
    with pytest.raises(SourceError, match=r"pre-freeze script 'exit 3' failed \(exit 3: boom\)"):
        requester.snapshot(Guard(Log()))
    assert not guest.frozen


def test_script_writer_ignore_failure_records_a_warning() -> None:
    ran: list[str] = []
    guest = FakeGuest(
        handlers={
            "exit 3": lambda _argv: GuestResult(3),
            "touch x": lambda _argv: ran.append("post") or GuestResult(0),
        }
    )
    writer = script_writer(guest, "ignore", pre_freeze="exit 3", post_thaw="touch x")
    requester = Requester(
        [writer, FsFreezeWriter(guest, QuiesceJob("t"))],
        Provider(guest, Log()),
        QuiescePolicy(APPLICATION),
        NullProgress(),
    )
    assert requester.snapshot(Guard(Log())).level == "application"
    assert ran == ["post"]
    (warning,) = requester.records()["script"]["warnings"]
    assert "pre-freeze script 'exit 3' failed" in warning
    assert "ignored" in warning


def test_after_commit_script_runs_only_after_commit() -> None:
    guest = FakeGuest(handlers={"*": lambda _argv: GuestResult(0)})
    writer = script_writer(guest, after_commit="date > /run/x")
    requester = Requester(
        [writer, FsFreezeWriter(guest, QuiesceJob("t"))],
        Provider(guest, Log()),
        QuiescePolicy(FS),
        NullProgress(),
    )
    requester.snapshot(Guard(Log()))
    assert ["sh", "-c", "date > /run/x"] not in guest.commands
    report = requester.after_commit("p", truncate_logs=False)
    assert ["sh", "-c", "date > /run/x"] in guest.commands
    assert report["script"]["done"] is True
