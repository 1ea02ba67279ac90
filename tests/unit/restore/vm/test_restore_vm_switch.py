"""Switch-over of a VM restore: done in order, undone in reverse when a step fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from surety.core.errors import TargetError
from surety.core.progress import NullProgress
from surety.restore.vm.plan import ExistingDomain, TargetFacts, VmRestoreOptions, plan_vm_restore
from surety.restore.vm.switch import Staged, switch_over, temporary_name
from surety.testing.fake_hypervisor import FakeHypervisor
from tests.unit.restore.vm.test_restore_vm_plan import UUID, _point

OLD_XML = f"<domain><name>rv-probe</name><uuid>{UUID}</uuid></domain>"


def _setup(tmp_path: Path, fail_define: bool) -> tuple[FakeHypervisor, Any, list[Staged]]:
    disk = tmp_path / "rv-probe-vda.qcow2"
    disk.write_text("old disk")
    running = ExistingDomain("rv-probe", UUID, True, (str(disk),))
    facts = TargetFacts((running,), {}, {})
    options = VmRestoreOptions("p", storage=tmp_path, force=True)
    plan = plan_vm_restore(_point(), options, {"vda": 1}, facts)
    assert [name for name, _xml in plan.create_networks] == ["rv-net1"]
    host = FakeHypervisor()
    host.add_domain(OLD_XML)
    if fail_define:
        host.inject("define_domain", TargetError("defining the VM: boom"))
    staged = [Staged(temporary_name(disk), disk)]
    staged[0].temporary.write_text("restored disk")
    return host, plan, staged


def test_switch_over_replaces_the_vm_and_its_disk(tmp_path: Path) -> None:
    host, plan, staged = _setup(tmp_path, fail_define=False)
    outcome = switch_over(host, plan, staged, NullProgress())
    assert host.events == [
        "create network rv-net1",
        "destroy rv-probe",
        "undefine rv-probe",
        "define rv-probe",
    ]
    assert outcome.networks_created == ("rv-net1",)
    assert outcome.domain.xml() == plan.xml
    assert (outcome.domain.is_persistent(), outcome.domain.is_running()) == (True, False)
    assert list(host.networks()) == ["rv-net1"]
    assert staged[0].final.read_text() == "restored disk"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rv-probe-vda.qcow2"]


def test_a_failed_define_puts_everything_back(tmp_path: Path) -> None:
    host, plan, staged = _setup(tmp_path, fail_define=True)
    with pytest.raises(TargetError, match="boom"):
        switch_over(host, plan, staged, NullProgress())
    assert host.events == [
        "create network rv-net1",
        "destroy rv-probe",
        "undefine rv-probe",
        "define rv-probe",  # the old definition, again
        "start rv-probe",
        "remove network rv-net1",
    ]
    restored = host.domain("rv-probe")
    assert restored.xml(inactive=True) == OLD_XML
    assert (restored.uuid(), restored.is_running(), restored.is_persistent()) == (UUID, True, True)
    assert not host.networks()
    assert staged[0].final.read_text() == "old disk"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rv-probe-vda.qcow2"]
