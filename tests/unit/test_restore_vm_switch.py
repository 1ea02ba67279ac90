"""Switch-over of a VM restore: done in order, undone in reverse when a step fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from surety.core.errors import TargetError
from surety.core.progress import NullProgress
from surety.restore.vm_plan import ExistingDomain, TargetFacts, VmRestoreOptions, plan_vm_restore
from surety.restore.vm_switch import Staged, switch_over, temporary_name
from tests.unit.test_restore_vm_plan import UUID, _point

OLD_XML = "<domain><name>rv-probe</name></domain>"


class FakeDomain:
    def __init__(self, host: FakeHost, name: str, uuid: str, xml: str, running: bool) -> None:
        self.host, self.name, self._uuid, self._xml, self.running = host, name, uuid, xml, running

    def uuid(self) -> str:
        return self._uuid

    def xml(self, inactive: bool = False) -> str:
        return self._xml

    def is_running(self) -> bool:
        return self.running

    def destroy(self) -> None:
        self.host.log.append(f"destroy {self.name}")
        self.running = False

    def start(self) -> None:
        self.host.log.append(f"start {self.name}")
        self.running = True

    def undefine(self) -> None:
        self.host.log.append(f"undefine {self.name}")
        self.host.domains.pop(self._uuid)


class FakeHost:
    def __init__(self, fail_define: bool = False) -> None:
        self.domains: dict[str, FakeDomain] = {}
        self.networks: set[str] = set()
        self.log: list[str] = []
        self.fail_define = fail_define

    def find_domain(self, name: str | None = None, uuid: str | None = None) -> FakeDomain | None:
        return self.domains.get(uuid or "")

    def define_domain(self, xml: str) -> FakeDomain:
        if self.fail_define and xml != OLD_XML:
            raise TargetError("defining the VM: boom")
        self.log.append("define")
        domain = FakeDomain(self, "rv-probe", UUID, xml, False)
        self.domains[UUID] = domain
        return domain

    def create_network(self, xml: str) -> str:
        self.log.append("create network")
        self.networks.add("rv-net1")
        return "rv-net1"

    def remove_network(self, name: str) -> None:
        self.log.append(f"remove network {name}")
        self.networks.discard(name)


def _setup(tmp_path: Path, fail_define: bool) -> tuple[FakeHost, Any, list[Staged]]:
    disk = tmp_path / "rv-probe-vda.qcow2"
    disk.write_text("old disk")
    running = ExistingDomain("rv-probe", UUID, True, (str(disk),))
    facts = TargetFacts((running,), {}, {})
    options = VmRestoreOptions("p", storage=tmp_path, force=True)
    plan = plan_vm_restore(_point(), options, {"vda": 1}, facts)
    assert [name for name, _xml in plan.create_networks] == ["rv-net1"]
    host = FakeHost(fail_define)
    host.domains[UUID] = FakeDomain(host, "rv-probe", UUID, OLD_XML, True)
    staged = [Staged(temporary_name(disk), disk)]
    staged[0].temporary.write_text("restored disk")
    return host, plan, staged


def test_switch_over_replaces_the_vm_and_its_disk(tmp_path: Path) -> None:
    host, plan, staged = _setup(tmp_path, fail_define=False)
    outcome = switch_over(host, plan, staged, NullProgress())  # type: ignore[arg-type]
    assert host.log == ["create network", "destroy rv-probe", "undefine rv-probe", "define"]
    assert outcome.networks_created == ("rv-net1",)
    assert outcome.domain.xml() == plan.xml
    assert staged[0].final.read_text() == "restored disk"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rv-probe-vda.qcow2"]


def test_a_failed_define_puts_everything_back(tmp_path: Path) -> None:
    host, plan, staged = _setup(tmp_path, fail_define=True)
    with pytest.raises(TargetError, match="boom"):
        switch_over(host, plan, staged, NullProgress())  # type: ignore[arg-type]
    assert host.log == [
        "create network",
        "destroy rv-probe",
        "undefine rv-probe",
        "define",  # the old definition, again
        "start rv-probe",
        "remove network rv-net1",
    ]
    assert host.domains[UUID].xml() == OLD_XML
    assert host.domains[UUID].running
    assert not host.networks
    assert staged[0].final.read_text() == "old disk"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rv-probe-vda.qcow2"]
