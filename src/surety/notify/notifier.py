"""``Notifier``: which targets are told what, and when.

* A finished run (``run_finished``) goes to the targets its policy names in
  ``notify`` whose ``events`` include the run's event (failed or interrupted:
  ``failure``; succeeded with a warning, skipped, missed: ``warning``;
  succeeded: ``success``). With ``only_last_retry`` (the default) a failure is
  sent only when no retry is left (``last_attempt``).
* An RPO violation (``rpo_check``) is sent once per VM per violation: the key
  is the VM and its newest point, so a new violation after a new point is sent
  again. De-duplicated per target in the catalog (``notified``/``mark_notified``),
  so a restart of the service does not repeat it.
* The daily summary (``daily_summary``) is sent once a day per target with a
  ``daily_summary`` time, at the first call at or after that local time (the
  service's time zone); its key is the local date.

Every target is tried; delivery failures are gathered into one
``NotificationError`` raised at the end (a failed target is not marked as
notified, so RPO and summary messages are tried again on the next call).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo

from surety.catalog.runs import Run, RunResult
from surety.config.model import Config, NotificationTarget
from surety.notify.email import send_email
from surety.notify.events import (
    Event,
    NotificationError,
    event_kind,
    rpo_event,
    run_event,
    summary_event,
)
from surety.notify.webhook import send_webhook

__all__ = ["Notifier", "NotifyCatalog", "RpoStatus", "Sender"]

Sender = Callable[[NotificationTarget, Event], None]
SENDERS: dict[str, Sender] = {"email": send_email, "webhook": send_webhook}
SUMMARY_SPAN = timedelta(hours=24)


class NotifyCatalog(Protocol):
    """What the notifier needs of the catalog (``surety.catalog.Catalog`` has it)."""

    def notified(self, target: str, key: str) -> str | None: ...

    def mark_notified(self, target: str, key: str, at: str) -> None: ...

    def runs(
        self,
        *,
        job: str | None = None,
        policy: str | None = None,
        vm: str | None = None,
        states: Sequence[str] | None = None,
        limit: int = 100,
    ) -> list[Run]: ...


class RpoStatus(Protocol):
    """What ``rpo_check`` reads of a VM's status (``surety.jobs.status.VmStatus``)."""

    @property
    def vm(self) -> str: ...

    @property
    def policy(self) -> str | None: ...

    @property
    def rpo_met(self) -> bool | None: ...

    @property
    def last_point(self) -> str | None: ...


class Notifier:
    def __init__(
        self,
        config: Config,
        catalog: NotifyCatalog,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        senders: Mapping[str, Sender] | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.clock = clock
        self.senders = dict(senders or SENDERS)

    def run_finished(self, run: Run, result: RunResult, last_attempt: bool) -> list[str]:
        """Tell the policy's targets about ``run``; returns the names of the targets told."""
        kind = event_kind(result.status)
        if kind is None:
            return []
        event = run_event(run, result, self.clock())
        chosen = [
            target
            for target in self._targets_of(run.policy)
            if kind in target.events
            and not (kind == "failure" and target.only_last_retry and not last_attempt)
        ]
        return self._deliver(chosen, event)

    def rpo_check(self, statuses: Iterable[RpoStatus]) -> list[str]:
        """One ``rpo`` message per VM per violation and target; returns ``target:vm`` sent."""
        now = self.clock()
        sent: list[str] = []
        failures: list[str] = []
        for status in statuses:
            if status.rpo_met is not False or status.policy is None:
                continue
            policy = self.config.policies.get(status.policy)
            key = f"rpo:{status.vm}:{status.last_point or '-'}"
            event = rpo_event(
                status.vm,
                status.policy,
                policy.rpo if policy else None,
                last_point=status.last_point,
                last_point_at=getattr(status, "last_point_at", None),
                now=now,
            )
            targets = [t for t in self._targets_of(status.policy) if "rpo" in t.events]
            for target in targets:
                if self.catalog.notified(target.name, key) is not None:
                    continue
                if self._send(target, event, failures):
                    self.catalog.mark_notified(target.name, key, _iso(now))
                    sent.append(f"{target.name}:{status.vm}")
        _raise(failures)
        return sent

    def daily_summary(self, now: datetime | None = None) -> list[str]:
        """Send each due daily summary (once per local day); returns the targets sent to."""
        now = now or self.clock()
        local = now.astimezone(self._tz())
        sent: list[str] = []
        failures: list[str] = []
        for target in self.config.notifications.values():
            if not target.daily_summary or local.strftime("%H:%M") < _hhmm(target.daily_summary):
                continue
            day = local.date().isoformat()
            key = f"summary:{day}"
            if self.catalog.notified(target.name, key) is not None:
                continue
            runs = self._runs_since(now - SUMMARY_SPAN, self._policies_of(target.name))
            if self._send(target, summary_event(target.name, day, runs, now), failures):
                self.catalog.mark_notified(target.name, key, _iso(now))
                sent.append(target.name)
        _raise(failures)
        return sent

    # -- helpers ------------------------------------------------------------------

    def _targets_of(self, policy_name: str) -> list[NotificationTarget]:
        policy = self.config.policies.get(policy_name)
        names = policy.notify if policy else ()
        return [self.config.notifications[n] for n in names if n in self.config.notifications]

    def _policies_of(self, target: str) -> list[str]:
        """The policies naming ``target``; every policy when none does (a catch-all target)."""
        naming = [p.name for p in self.config.policies.values() if target in p.notify]
        return naming or list(self.config.policies)

    def _runs_since(self, since: datetime, policies: list[str]) -> list[Run]:
        runs: list[Run] = []
        for policy in policies:
            for run in self.catalog.runs(policy=policy, limit=10_000):
                when = run.ended or run.started or run.scheduled_for
                if when and datetime.fromisoformat(when) >= since:
                    runs.append(run)
        return sorted(runs, key=lambda r: r.id)

    def _tz(self) -> tzinfo | None:
        name = self.config.service.timezone
        return ZoneInfo(name) if name else None

    def _deliver(self, targets: list[NotificationTarget], event: Event) -> list[str]:
        failures: list[str] = []
        sent = [t.name for t in targets if self._send(t, event, failures)]
        _raise(failures)
        return sent

    def _send(self, target: NotificationTarget, event: Event, failures: list[str]) -> bool:
        sender = self.senders.get(target.kind)
        try:
            if sender is None:
                raise NotificationError(
                    f"notification target {target.name}: unknown kind {target.kind!r}"
                )
            sender(target, event)
        except NotificationError as exc:
            failures.append(str(exc))
            return False
        return True


def _hhmm(text: str) -> str:
    hours, _, minutes = text.strip().partition(":")
    return f"{int(hours):02d}:{int(minutes or 0):02d}"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds")


def _raise(failures: list[str]) -> None:
    if failures:
        raise NotificationError("; ".join(failures))
