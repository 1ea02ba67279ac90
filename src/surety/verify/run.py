"""``surety verify``: boot restore points in a lab, probe them, write the proof.

1. **Resolve** every member's restore point first (a typo fails before any VM starts).
2. **Lab** (``verify.lab``): a private namespace; members boot in group order.
   For each: wait for the guest agent (``boot_timeout``), give its NICs their
   addresses (``verify.addressing``), then run its probes. A member that fails
   stops the group: later members depend on it and are recorded "not started".
3. **Teardown** always (``open_lab``'s ``finally``), then the **proof** is
   written (``verify.proof``) and every point is marked ``verified`` or
   ``failed`` in the catalog and, as a sealed summary, in the repository
   itself (``verify.summary``: what disaster recovery reads without a catalog).
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from pathlib import Path

from surety.catalog import Catalog, Verification
from surety.core.errors import LabError, SuretyError, UsageError
from surety.core.progress import Progress
from surety.hypervisor import labnet
from surety.hypervisor.port import GuestAgentError, HypervisorHost
from surety.repo.manifest import Manifest
from surety.repo.repository import Repository
from surety.verify import addressing
from surety.verify.application_group import ApplicationGroup, Member, default_probes
from surety.verify.lab import Lab, LabVm, open_lab
from surety.verify.probes import ProbeContext, ProbeSpec, run_probe
from surety.verify.proof import Proof, VmProof, write_proof
from surety.verify.summary import record_in_repository
from surety.verify.truncation import truncate_after_verify

__all__ = ["VerifyOptions", "VerifyResult", "verify"]

ADDRESS_SECONDS = 120.0
"""How long one lab NIC may take to carry its addresses (a guest still booting)."""


@dataclass(frozen=True)
class VerifyOptions:
    group: ApplicationGroup
    proofs: Path = Path("/var/lib/surety/proofs")


@dataclass(frozen=True)
class VerifyResult:
    passed: bool
    proof_dir: Path
    proof: dict[str, object] = field(default_factory=dict)


def verify(
    repo: Repository,
    options: VerifyOptions,
    progress: Progress,
    *,
    host: HypervisorHost,
    catalog: Catalog,
) -> VerifyResult:
    """Verify ``options.group`` in a lab on ``host`` (the caller's, left open).

    Every point's verdict is recorded in ``catalog``.
    """
    group = options.group
    points = [repo.resolve(m.point) for m in group.members]
    for point in points:
        if point.kind != "vm" or "domain.xml" not in point.config:
            raise UsageError(
                f"restore point {point.id[:12]} ({point.name}) is a disk image, not a VM: "
                "only VM restore points boot in the lab"
            )
    proof = Proof("", group.name, time.time())
    proof.vms = [_vm_proof(m, p) for m, p in zip(group.members, points, strict=True)]
    deadline = time.monotonic() + group.timeout
    try:
        with open_lab(host, repo, progress) as lab:
            proof.lab = lab.id
            _run_group(lab, group, points, proof, deadline)
    except LabError as exc:
        proof.notes.append(f"the lab failed: {exc}")
        for vm_proof in proof.vms:
            if vm_proof.result in ("not started", "running"):
                vm_proof.result, vm_proof.reason = "failed", str(exc)
    _truncate_logs(host, points, proof, progress)
    proof.finished = time.time()
    proof_dir = write_proof(proof, options.proofs / repo.config.id)
    _record(catalog, repo.config.id, proof, proof_dir)
    record_in_repository(repo, proof, progress)
    return VerifyResult(proof.passed, proof_dir, proof.document())


def _truncate_logs(
    host: HypervisorHost, points: list[Manifest], proof: Proof, progress: Progress
) -> None:
    """Only now, and only for passed points that asked for it (``after-verify``)."""
    for point, vm_proof in zip(points, proof.vms, strict=True):
        if vm_proof.passed:
            vm_proof.truncation = truncate_after_verify(host, point)
        elif point.source.get("truncate_logs") == "after-verify":
            vm_proof.truncation = {"all": {"done": False, "detail": "not verified: logs kept"}}
        for name, done in vm_proof.truncation.items():
            progress.note(f"{vm_proof.name}: log truncation ({name}): {done.get('detail')}")


def _vm_proof(member: Member, point: Manifest) -> VmProof:
    return VmProof(
        member.name or point.name,
        point.id,
        point.name,
        point.consistency,
        point.finished.isoformat(timespec="seconds"),
    )


def _run_group(
    lab: Lab, group: ApplicationGroup, points: list[Manifest], proof: Proof, deadline: float
) -> None:
    taken: list[ipaddress.IPv4Address] = []
    for member, point, vm_proof in zip(group.members, points, proof.vms, strict=True):
        vm_proof.result = "running"
        try:
            vm = lab.boot(point, vm_proof.name)
        except SuretyError as exc:
            vm_proof.result, vm_proof.reason = "failed", f"could not boot in the lab: {exc}"
            proof.event(time.time(), vm_proof.name, vm_proof.reason)
            vm = None
        if vm is None:
            _skip_rest(proof, vm_proof)
            return
        try:
            _verify_member(lab, vm, member, vm_proof, taken, deadline)
        finally:
            vm_proof.console_tail = vm.console_tail()
            for at, what in vm.events:
                proof.event(at, vm.name, what)
        if not vm_proof.passed:
            _skip_rest(proof, vm_proof)
            return


def _skip_rest(proof: Proof, failed: VmProof) -> None:
    for later in proof.vms[proof.vms.index(failed) + 1 :]:
        later.reason = f"not started: {failed.name} failed before it"


def _verify_member(  # noqa: PLR0917 - one step of _run_group, all of it needed
    lab: Lab,
    vm: LabVm,
    member: Member,
    vm_proof: VmProof,
    taken: list[ipaddress.IPv4Address],
    deadline: float,
) -> None:
    boot_deadline = min(deadline, vm.started + member.boot_timeout)
    if not _wait_for_agent(vm, boot_deadline):
        vm_proof.result = "failed"
        vm_proof.reason = f"the guest agent did not answer within {member.boot_timeout:.0f} s"
        vm.event(vm_proof.reason)
        return
    vm_proof.boot_seconds = round(time.monotonic() - vm.started, 1)
    vm.event(f"guest agent answered ({vm_proof.boot_seconds} s after start)")
    address = _address(lab, vm, vm_proof, taken, deadline)
    probes = member.probes or default_probes(vm.point.applications, bool(vm.macs))
    ctx = ProbeContext(vm.channel, lab.netns, address, vm.point.applications, vm.point.source)
    for wanted in probes:
        left = deadline - time.monotonic()
        spec = ProbeSpec(wanted.kind, wanted.options, max(1.0, min(wanted.timeout, left)))
        lab.progress.note(f"{vm.name}: probe {spec.label}")
        result = run_probe(spec, ctx)
        vm_proof.probes.append(result)
        vm.events.append(
            (result.finished, f"probe {result.probe}: {'passed' if result.ok else 'FAILED'}")
        )
    failed = [p.probe for p in vm_proof.probes if not p.ok]
    vm_proof.result = "failed" if failed else "passed"
    if failed:
        vm_proof.reason = f"failed probe(s): {', '.join(failed)}"


def _wait_for_agent(vm: LabVm, deadline: float) -> bool:
    while time.monotonic() < deadline:
        try:
            vm.channel.ping(timeout=3)
            return True
        except SuretyError:
            time.sleep(1)
    return False


def _address(
    lab: Lab, vm: LabVm, vm_proof: VmProof, taken: list[ipaddress.IPv4Address], deadline: float
) -> str | None:
    """Give every lab NIC its addresses and the prober one in each subnet; the VM's first."""
    recorded = vm.point.source.get("guest_network") or []
    first: str | None = None
    for number, (mac, production) in enumerate(zip(vm.macs, vm.production_macs, strict=True)):
        wanted = addressing.wanted_addresses(recorded, production, 10 + len(taken) + number)
        try:
            left = max(10.0, min(ADDRESS_SECONDS, deadline - time.monotonic()))
            how = addressing.readdress(vm.channel, vm.domain.agent, mac, wanted, left)
        except (TimeoutError, GuestAgentError) as exc:
            vm_proof.network.append(f"NIC {mac}: {exc}")
            continue
        vm_proof.network.append(how)
        vm.event(how)
        for address in wanted:
            taken.append(address.ip)
            first = first or str(address.ip)
        for address in wanted:
            labnet.add_probe_address(lab.netns, addressing.prober_address(address.network, taken))
    return first


def _record(catalog: Catalog, repository: str, proof: Proof, proof_dir: Path) -> None:
    at = proof.document()["finished"]
    for vm in proof.vms:
        status = "verified" if vm.passed else "failed"
        summary = (
            "; ".join(f"{p.probe} {'ok' if p.ok else 'FAILED'}" for p in vm.probes) or vm.reason
        )
        catalog.record_verification(
            repository,
            Verification(
                vm.point, status, str(at), str(proof_dir / "proof.json"), summary, vm.boot_seconds
            ),
        )
