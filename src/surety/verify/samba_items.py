"""Item-level recovery for Samba AD: objects of a restore point, re-created on a live DC.

``extract_ad_items`` (``surety items samba-ad``):

1. **Check** what needs no VM: every ``--dn`` is a DN, the target file
   (``items.check_target``); then the point: the ``samba-ad`` writer held it
   (``items.recorded_app``) and every DN is below its base DN.
2. With ``apply_to``, the live DC is checked *before* the lab boots: its guest
   agent answers, its directory holds the point's base DN, and none of the
   DNs exist there (``TargetError``, exit 11, and nothing is done).
3. **Boot** the point in the lab (isolated, throwaway overlay) and wait for its
   guest agent. ``samba-ad-dc.service`` is stopped there, and each object is
   read from the point's own ``sam.ldb`` as root with ``ldbsearch -H
   PRIVATE/sam.ldb -b DN -s base '*' memberOf`` (``-s sub`` for a subtree).
   Why offline: it needs no credentials and no network, it does not depend on
   a DC starting cleanly alone in the lab (its partners are out of reach),
   and with samba stopped nothing writes the database while it is read. A DN
   the point does not hold is a ``PathNotFound`` (exit 12) naming it.
4. **Plan** (``samba_ad_items.recreate_objects``: parents first, memberships
   after every add) and write the LDIF to the target atomically
   (``items.atomic_file``).
5. **Apply** (optional): ``ldbmodify -H PRIVATE/sam.ldb FILE`` as root on the
   live DC through its guest agent. Why not LDAP: the agent already is root on
   the DC, so no password has to enter the guest; a local ``ldbmodify``
   applies the whole file in *one transaction* (all objects or none, while
   over LDAP every record stands alone); and the DC's own directory modules
   issue the new SIDs from its RID pool, as ``samba-tool user create -H
   sam.ldb`` does, and replicate the adds like any other change. The new SIDs
   are read back and reported.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from surety.core.errors import LabError, PathNotFound, SuretyError, TargetError, UsageError
from surety.core.progress import Progress
from surety.hypervisor.guest_agent import AgentChannel
from surety.hypervisor.port import HypervisorHost
from surety.quiesce.channel import GuestChannel
from surety.quiesce.writers.samba_ad import parse_ldif as parse_records
from surety.quiesce.writers.samba_ad_items import ItemPlan, check_dn, recreate_objects
from surety.repo.manifest import Manifest
from surety.repo.repository import Repository
from surety.verify.dumptools import one_line
from surety.verify.items import (
    Clock,
    atomic_file,
    check_target,
    guest_output,
    lab_vm,
    recorded_app,
)

__all__ = [
    "AdItemsOptions",
    "AdItemsResult",
    "LiveDc",
    "apply_plan",
    "check_ad_options",
    "extract_ad_items",
    "live_dc",
    "open_live_dc",
    "read_objects",
    "refuse_existing",
    "write_and_apply",
]

NAME = "samba-ad"
UNIT = "samba-ad-dc.service"
DEFAULT_PRIVATE = "/var/lib/samba/private"
NO_SUCH_OBJECT = 32  # LDB_ERR_NO_SUCH_OBJECT: ldbsearch's exit for a base DN that is not there


@dataclass(frozen=True)
class AdItemsOptions:
    point: str
    dns: tuple[str, ...]
    target: Path
    subtree: bool = False  # each DN and every object below it
    force: bool = False
    timeout: float = 900.0  # boot, to the guest agent
    apply_to: str | None = None  # a running DC VM (libvirt name)


@dataclass(frozen=True)
class LiveDc:
    """A running DC of the point's domain, reached through its guest agent."""

    vm: str
    channel: GuestChannel
    private_dir: str

    @property
    def sam(self) -> str:
        return f"{self.private_dir}/sam.ldb"


@dataclass(frozen=True)
class AdItemsResult:
    point: Manifest
    plan: ItemPlan
    path: Path
    size: int
    sha256: str
    lab: str
    seconds: dict[str, float]  # boot, read, apply (if applied), total
    apply_commands: dict[str, str]  # how to apply the file by hand
    applied_to: str | None = None
    new_sids: dict[str, str] = field(default_factory=dict)  # DN -> its new objectSid

    def document(self) -> dict[str, Any]:
        return {
            "point": self.point.id,
            "vm": self.point.name,
            "app": NAME,
            "objects": [
                {
                    "dn": o.dn,
                    "object_class": o.classes[-1] if o.classes else None,
                    "old_sid": o.old_sid or None,
                    "new_sid": self.new_sids.get(o.dn),
                    "dropped": o.dropped,
                    "cannot_come_back": o.notes,
                }
                for o in self.plan.objects
            ],
            "memberships": [{"group": g, "member": m} for g, m in self.plan.memberships],
            "path": str(self.path),
            "bytes": self.size,
            "sha256": self.sha256,
            "lab": self.lab,
            "seconds": self.seconds,
            "apply_commands": self.apply_commands,
            "applied_to": self.applied_to,
        }


def check_ad_options(options: AdItemsOptions) -> None:
    """What can be refused before the repository is opened: the DNs and the target."""
    if not options.dns:
        raise UsageError("give at least one --dn")
    for dn in options.dns:
        if why := check_dn(dn):
            raise UsageError(why)
    if len({dn.lower() for dn in options.dns}) != len(options.dns):
        raise UsageError("a --dn is given twice")
    check_target(options.target, options.force)


def extract_ad_items(
    repo: Repository, options: AdItemsOptions, progress: Progress, *, host: HypervisorHost
) -> AdItemsResult:
    """Read the objects from a lab on ``host``, write the LDIF, apply it if asked."""
    check_ad_options(options)
    point = repo.resolve(options.point)
    meta = recorded_app(point, NAME)
    base = str(meta.get("base_dn") or "")
    if not base:
        raise UsageError(f"restore point {point.id[:12]}: its samba-ad metadata has no base_dn")
    for dn in options.dns:
        if why := check_dn(dn, base):
            raise UsageError(why)
    live = open_live_dc(host, options.apply_to, base, options.dns) if options.apply_to else None
    private = str(meta.get("private_dir") or DEFAULT_PRIVATE)
    clock = Clock(time.monotonic())
    with lab_vm(host, repo, point, progress, options.timeout, clock) as (lab_id, vm):
        text = read_objects(vm.channel, private, options.dns, options.subtree, progress)
        clock.lap("read")
    return write_and_apply(options, point, text, live, clock, progress, lab_id)


def write_and_apply(  # noqa: PLR0917 - the steps after the lab, in order
    options: AdItemsOptions,
    point: Manifest,
    text: str,
    live: LiveDc | None,
    clock: Clock,
    progress: Progress,
    lab_id: str = "",
) -> AdItemsResult:
    """Plan the objects read from the point (``text``), write the LDIF, apply it on ``live``."""
    try:
        plan = recreate_objects(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    data = plan.ldif.encode()
    with atomic_file(options.target, options.force) as out:
        out.write(data)
    new_sids: dict[str, str] = {}
    if live is not None:
        progress.phase(f"samba-ad: adding {len(plan.objects)} object(s) on {live.vm}")
        new_sids = apply_plan(live, plan)
        clock.lap("apply")
    clock.laps["total"] = round(time.monotonic() - clock.start, 1)
    meta = point.applications[NAME]
    return AdItemsResult(
        point, plan, options.target, len(data), hashlib.sha256(data).hexdigest(), lab_id,
        clock.laps, apply_commands(meta, options.target), live.vm if live else None, new_sids,
    )  # fmt: skip


def apply_commands(meta: dict[str, Any], path: Path) -> dict[str, str]:
    """The file applied by hand: as root on a DC (one transaction), or over LDAP."""
    host = str(meta.get("dns_host_name") or "DC")
    return {
        "on_dc": shlex.join(["ldbmodify", "-H", f"{DEFAULT_PRIVATE}/sam.ldb", str(path)]),
        "over_ldap": shlex.join(["ldbmodify", "-H", f"ldap://{host}", "-U", "Administrator",
                                 str(path)]),
    }  # fmt: skip


def read_objects(
    channel: GuestChannel, private_dir: str, dns: Sequence[str], subtree: bool, progress: Progress
) -> str:
    """The LDIF of ``dns`` (and what is below them with ``subtree``) from the point's sam.ldb."""
    progress.phase("samba-ad: reading the objects from the point's directory")
    with suppress(SuretyError):  # nothing may write sam.ldb while it is read
        channel.run(["systemctl", "stop", UNIT], timeout=180)
    sam = f"{private_dir}/sam.ldb"
    texts = []
    for dn in dns:
        scope = "sub" if subtree else "base"
        found = _search(channel, sam, dn, scope, ["*", "memberOf"])
        if found is None:
            raise PathNotFound(f"the restore point's directory holds no object {dn}")
        texts.append(found)
    return "\n\n".join(texts)


def _search(
    channel: GuestChannel, sam: str, dn: str, scope: str, attrs: Sequence[str]
) -> str | None:
    """``ldbsearch`` of ``dn`` in ``sam`` as root; ``None`` if there is no such object."""
    argv = ["ldbsearch", "-H", sam, "-b", dn, "-s", scope, *attrs]
    try:
        out = channel.run(argv, timeout=300)
    except SuretyError as exc:
        raise LabError(f"ldbsearch in {channel.name}: {exc}") from exc
    text = out.stdout.decode(errors="replace")
    if out.exitcode == NO_SUCH_OBJECT or (out.ok and not _records(text)):
        return None
    if not out.ok:
        message = one_line(out.stderr.decode(errors="replace") or text)
        raise LabError(f"ldbsearch {dn} in {channel.name} failed (exit {out.exitcode}): {message}")
    _check_complete(text, dn, channel.name)
    return text


def _records(text: str) -> int:
    """How many objects ``ldbsearch`` output holds (its ``dn:`` lines; referrals are not)."""
    return sum(line.startswith("dn:") for line in text.splitlines())


def _check_complete(text: str, dn: str, where: str) -> None:
    """``ldbsearch`` ends with ``# N entries``: an output without it, or with fewer records,
    was cut (the guest agent keeps at most 16 MiB of a command's output)."""
    said = re.search(r"^# (\d+) entries$", text, re.M)
    if said is None or int(said.group(1)) != _records(text):
        raise LabError(
            f"the LDIF of {dn} read in {where} is incomplete ({_records(text)} records, "
            f"ldbsearch said {said.group(1) if said else 'nothing'}; the guest agent keeps at "
            "most 16 MiB of output): ask for fewer objects at once"
        )


def open_live_dc(host: HypervisorHost, vm: str, base: str, dns: Sequence[str]) -> LiveDc:
    """The running DC ``vm``: its agent answers, it holds ``base``, and none of ``dns``."""
    try:
        channel = AgentChannel(host.domain(vm))
        channel.ping(timeout=10)
    except SuretyError as exc:
        raise TargetError(f"--apply-to {vm}: {exc}") from exc
    return live_dc(vm, channel, base, dns)


def live_dc(vm: str, channel: GuestChannel, base: str, dns: Sequence[str]) -> LiveDc:
    """``open_live_dc`` past the agent: any ``GuestChannel`` onto a running DC."""
    private = DEFAULT_PRIVATE
    with suppress(SuretyError):
        out = channel.run(["testparm", "-s", "--parameter-name=private dir"], timeout=60)
        if out.ok and out.stdout.strip().startswith(b"/"):
            private = out.stdout.decode(errors="replace").strip()
    dc = LiveDc(vm, channel, private)
    if _exists(dc, base) is False:
        raise TargetError(f"{vm} does not hold {base}: not a DC of the restore point's domain")
    refuse_existing(dc, dns)
    return dc


def refuse_existing(dc: LiveDc, dns: Sequence[str]) -> None:
    """``TargetError`` naming the objects ``dc`` already holds (nothing is replaced)."""
    there = [dn for dn in dns if _exists(dc, dn)]
    if there:
        more = f" (and {len(there) - 1} more)" if len(there) > 1 else ""
        raise TargetError(
            f"{there[0]}{more} already exists on {dc.vm}: delete it there first "
            "or ask only for what is gone; nothing was changed"
        )


def _exists(dc: LiveDc, dn: str) -> bool:
    try:
        return _search(dc.channel, dc.sam, dn, "base", ["dn"]) is not None
    except LabError as exc:
        raise TargetError(str(exc).replace("ldbsearch", "ldbsearch on the live DC", 1)) from None


def apply_plan(dc: LiveDc, plan: ItemPlan) -> dict[str, str]:
    """Add ``plan`` on ``dc`` in one ``ldbmodify`` transaction; the new SIDs by DN."""
    refuse_existing(dc, [o.dn for o in plan.objects])
    mktemp = ["mktemp", "-d", "/tmp/surety-items.XXXXXXXX"]  # noqa: S108 - mktemp -d: 0700, unique
    workdir = guest_output(dc.channel, mktemp, "mktemp", where=dc.vm, error=TargetError)
    try:
        path = f"{workdir}/items.ldif"
        try:
            dc.channel.write_file(path, plan.ldif.encode())
            out = dc.channel.run(["ldbmodify", "-H", dc.sam, path], timeout=600)
        except SuretyError as exc:
            raise TargetError(f"ldbmodify on {dc.vm}: {exc}") from exc
        if not out.ok:
            message = one_line(out.stderr.decode(errors="replace") or out.text())
            raise TargetError(
                f"ldbmodify on {dc.vm} failed (exit {out.exitcode}): {message}; "
                "nothing was added (one transaction)"
            )
    finally:
        with suppress(SuretyError):
            dc.channel.run(["rm", "-rf", "--", workdir], timeout=60)
    sids: dict[str, str] = {}
    for made in plan.objects:
        found = _search(dc.channel, dc.sam, made.dn, "base", ["objectSid"]) or ""
        sid = next((r["objectSid"][0] for r in parse_records(found) if r.get("objectSid")), "")
        if sid:
            sids[made.dn] = sid
    return sids
