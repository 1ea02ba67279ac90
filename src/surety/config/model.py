"""The configuration as the rest of surety sees it: frozen, validated, typed.

``surety.config.load`` turns ``surety.toml`` into these objects (or a list of
problems, each naming the file, the line and the key path). Nothing else reads
TOML. Durations are ``timedelta``; schedules are parsed ``Schedule`` objects
in the configured time zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from surety.schedule import Schedule

__all__ = [
    "CheckRule",
    "Config",
    "NotificationTarget",
    "Policy",
    "RepositoryConfig",
    "Retention",
    "RetryRule",
    "Selection",
    "ServiceSettings",
    "VerifyRule",
    "WebConsole",
]

EVENTS = ("failure", "warning", "success", "rpo")
"""What a notification target can be sent: a run failed (after its retries, or each
attempt), a run succeeded with a warning (e.g. a fall-back to a lower consistency
level), a run succeeded, a VM's RPO is violated."""


@dataclass(frozen=True)
class Selection:
    """Which VMs a policy covers: names or glob patterns ("all" = "*"), minus excludes,
    plus every VM carrying one of ``tags`` in its libvirt metadata."""

    vms: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RetryRule:
    attempts: int = 3  # runs in all, the first included
    backoff: timedelta = timedelta(minutes=5)  # before the 2nd attempt; doubles each time


@dataclass(frozen=True)
class Retention:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: timedelta | None = None  # keep every point younger than this


@dataclass(frozen=True)
class RepositoryConfig:
    name: str
    location: str  # a path or s3://BUCKET[/PREFIX]
    passphrase_file: Path | None = None
    # s3:// only: what every job using this repository gets instead of the environment's
    endpoint: str | None = None  # AWS_ENDPOINT_URL
    region: str | None = None  # AWS_DEFAULT_REGION
    profile: str | None = None  # a profile of the AWS shared credentials/config files
    credentials_file: Path | None = None  # AWS_SHARED_CREDENTIALS_FILE
    ca_bundle: Path | None = None  # AWS_CA_BUNDLE: a private CA's certificates
    # a copy target's own retention (applied to the copies after each copy run)
    retention: Retention | None = None
    prune: bool = False

    @property
    def s3_settings(self) -> dict[str, str]:
        """The S3 settings given (name -> value), for the wiring in ``surety.app``."""
        given = {
            "endpoint": self.endpoint,
            "region": self.region,
            "profile": self.profile,
            "credentials_file": self.credentials_file,
            "ca_bundle": self.ca_bundle,
        }
        return {key: str(value) for key, value in given.items() if value is not None}


@dataclass(frozen=True)
class VerifyRule:
    schedule: Schedule
    group: Path | None = None  # an application group file; None: the policy's VMs' latest points


@dataclass(frozen=True)
class CheckRule:
    schedule: Schedule
    read_data_parts: int = 0  # m of a rolling --read-data-subset n/m (0: structure only)


@dataclass(frozen=True)
class Policy:
    name: str
    repository: str  # a RepositoryConfig name
    selection: Selection
    schedule: Schedule
    consistency: str = "filesystem"  # crash | filesystem | application
    on_quiesce_failure: str = "fail"  # fail | filesystem | crash
    truncate_logs: str = "never"  # never | after-commit | after-verify
    freeze_window: float = 10.0
    writers: tuple[str, ...] | None = None
    pre_freeze: str | None = None
    post_thaw: str | None = None
    after_commit: str | None = None
    script_failure: str = "fail"
    start_window: timedelta = timedelta(hours=1)  # a missed slot still runs within this
    retries: RetryRule = RetryRule()
    timeout: timedelta = timedelta(hours=6)  # one VM's job
    rpo: timedelta | None = None
    rto: timedelta | None = None  # recovery time target: proven by the lab's boot-to-ready
    retention: Retention | None = None
    prune: bool = False  # prune after retention forgot points
    verify: VerifyRule | None = None
    check: CheckRule | None = None
    copy_to: str | None = None  # a RepositoryConfig name: each new point is copied there
    notify: tuple[str, ...] = ()  # NotificationTarget names


@dataclass(frozen=True)
class NotificationTarget:
    name: str
    kind: str  # email | webhook
    events: frozenset[str] = frozenset({"failure", "rpo"})
    only_last_retry: bool = True  # a failure is sent when no retry is left
    daily_summary: str | None = None  # "HH:MM" local time, or None
    # email
    smtp_host: str = "localhost"
    smtp_port: int = 25
    starttls: bool = False
    username: str | None = None
    password_file: Path | None = None
    sender: str = "surety@localhost"
    recipients: tuple[str, ...] = ()
    # webhook
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServiceSettings:
    libvirt_uri: str = "qemu:///system"
    catalog: Path | None = None  # None: the default catalog
    max_jobs: int = 2  # concurrent jobs on this host (at most one per VM)
    timezone: str | None = None  # IANA name; None: the host's
    tick: float = 5.0  # seconds between scheduling passes


@dataclass(frozen=True)
class WebConsole:
    """``[web]``: the web console that ``surety service`` starts beside its loop."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8470
    tls_cert: Path | None = None
    tls_key: Path | None = None
    idle_mounts: float = 120.0  # seconds before an unused file-browser mount closes


@dataclass(frozen=True)
class Config:
    path: Path
    service: ServiceSettings
    repositories: dict[str, RepositoryConfig]
    policies: dict[str, Policy]
    notifications: dict[str, NotificationTarget]
    web: WebConsole = WebConsole()
