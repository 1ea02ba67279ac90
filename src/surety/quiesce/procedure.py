"""Application restore procedures: how a writer's application comes back from a restore point.

A restored member of a replicated application must not re-use history its
peers already saw (PostgreSQL WAL positions on the same timeline, MariaDB GTIDs
under the same server identity). Booting the image is therefore not enough:
the application is held back at first boot (*restore mode*), its procedure
reconfigures it while it is down, then starts it and checks its own success.

The restore use case drives every procedure that applies, in this order:

    [offline, before first boot]  hold ``hold_units`` (they do not start at boot)
    [booted, apps held]           configure()   - the app is down: edit its files
    [hold lifted]                 start()       - start it, do the online steps,
                                                  prove success; returns evidence

Procedures are plugins (entry-point group ``surety.restore_procedures``), keyed
by the writer name that recorded the application in the restore point; they
act in the guest only through a ``GuestChannel``. ``configure`` and ``start``
raise ``WriterFailed`` with what went wrong and the application's own words
(log lines); the evidence they return is stored with the restore result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Protocol

from surety.core.errors import UsageError
from surety.quiesce.channel import GuestChannel

__all__ = [
    "ProcedureFactory",
    "RestoreProcedure",
    "RestoreRequest",
    "canonical_role",
    "load_procedures",
    "request_role",
]

ENTRY_POINT_GROUP = "surety.restore_procedures"
REPLICA, PRIMARY = "replica", "primary"
ROLE_ALIASES = {
    "standby": REPLICA,
    "source": PRIMARY,
    "master": PRIMARY,
    "slave": REPLICA,
    "authoritative": PRIMARY,  # a directory (samba-ad): the whole domain comes back from this one
}


@dataclass(frozen=True)
class RestoreRequest:
    """What the operator asks of every application procedure of one restored VM."""

    point_id: str
    vm_name: str
    role: str = "primary"  # REPLICA: rejoin ``partner``; PRIMARY: become a new history alone
    partner: str | None = None  # the surviving member to rejoin: host or host:port
    settings: Mapping[str, str] = field(default_factory=dict)  # "writer.option" -> value
    asked_role: str | None = None  # --role as given (None: chosen by --partner); see samba-ad

    def setting(self, writer: str, option: str, default: str | None = None) -> str | None:
        return self.settings.get(f"{writer}.{option}", default)


class RestoreProcedure(Protocol):
    """One application's restore procedure (see the module docstring for the order)."""

    name: ClassVar[str]
    hold_units: ClassVar[tuple[str, ...]]  # systemd units held back at first boot

    def configure(self) -> None: ...

    def start(self) -> dict[str, Any]: ...


class ProcedureFactory(Protocol):
    name: ClassVar[str]
    hold_units: ClassVar[tuple[str, ...]]

    def __call__(
        self, guest: GuestChannel, recorded: Mapping[str, Any], request: RestoreRequest
    ) -> RestoreProcedure: ...


def load_procedures(recorded: Mapping[str, Any]) -> dict[str, ProcedureFactory]:
    """The installed procedures for the applications a restore point recorded.

    ``recorded`` is the point's ``applications`` (writer name -> metadata); only
    writers that held their application at the snapshot count.
    """
    installed = {e.name: e for e in entry_points(group=ENTRY_POINT_GROUP)}
    found: dict[str, ProcedureFactory] = {}
    for name, meta in recorded.items():
        if name in installed and isinstance(meta, Mapping) and meta.get("state") == "thawed":
            found[name] = installed[name].load()
    return found


def canonical_role(role: str) -> str:
    """``standby`` -> ``replica``, ``authoritative`` -> ``primary``; unknown words unchanged."""
    return ROLE_ALIASES.get(role, role)


def request_role(role: str | None, partner: str | None) -> str:
    """The canonical role: ``replica`` (with a partner) or ``primary``; vendor words accepted."""
    canonical = ROLE_ALIASES.get(role or "", role) or (REPLICA if partner else PRIMARY)
    if canonical not in (REPLICA, PRIMARY):
        raise UsageError(
            f"unknown --role {role!r} (replica|standby or primary|source|authoritative)"
        )
    if canonical == REPLICA and not partner:
        raise UsageError(
            "--role replica needs --partner HOST: the surviving member the restored one rejoins"
        )
    if canonical == PRIMARY and partner:
        raise UsageError("--partner is for --role replica (a primary rejoins nobody)")
    return canonical
