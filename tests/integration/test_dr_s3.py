"""Disaster recovery from the bucket alone (docs/dr.md), against a real radosgw.

A host backs up into an S3 bucket and verifies: the verification's summary is
written into the repository by the code path ``surety verify`` uses. Then a
*fresh* host - an empty catalog, an empty home, nothing but the bucket, its
credentials and the passphrase - lists the points with their verified state
(``surety points``) and restores them byte-exact: an image with ``surety restore
image``, a VM with the ``restore vm`` use case on a (fake) hypervisor.
"""

from __future__ import annotations

import filecmp
import os
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from surety.app.repository import open_repository
from surety.core.progress import NullProgress
from surety.repo.manifest import DiskRecord, Manifest
from surety.repo.repository import Repository
from surety.restore.vm import VmRestoreOptions, restore_vm
from surety.testing.fake_hypervisor import FakeHypervisor
from surety.verify.probes import ProbeResult
from surety.verify.proof import Proof, VmProof
from surety.verify.summary import record_in_repository
from tests.cli import PASSPHRASE, Cli
from tests.integration.conftest import write_image
from tests.s3.fixtures import S3Bucket
from tests.unit.backup.test_pipeline import CHUNK, MemoryDisk, _backup
from tests.unit.hypervisor.test_restore_xml import DOMAIN, NETWORK

VM_DISK = random.Random(15).randbytes(6 * CHUNK) + bytes(2 * CHUNK)


def _fresh_host_cli(bucket: S3Bucket, location: str, home: Path) -> Cli:
    """A host that has only the bucket's credentials and the passphrase: empty home and catalog."""
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SURETY_", "XDG_"))}
    env.update(bucket.environ("backup"))
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local/share"),
        SURETY_CATALOG=str(home / "catalog.sqlite"),
        SURETY_CACHE_DIR=str(home / "cache"),  # a fresh host has no index cache either
        SURETY_REPOSITORY=location,
        SURETY_PASSPHRASE=PASSPHRASE,
    )
    return Cli(home, env)


def _proof(points: list[Manifest], passed: list[bool]) -> Proof:
    """The proof ``verify`` builds (booting needs guests; the rest is the same code)."""
    now = time.time()
    proof = Proof("lab-dr", "dr", now - 40)
    for point, ok in zip(points, passed, strict=True):
        vm = VmProof(
            point.name, point.id, point.name, point.consistency, point.finished.isoformat()
        )
        vm.result, vm.boot_seconds = ("passed" if ok else "failed"), 21.5
        vm.probes.append(ProbeResult("agent", True, "guest-ping answered", 0.1, now))
        vm.probes.append(ProbeResult("tcp:5432", ok, "connected to 10.0.0.10:5432", 0.2, now))
        if not ok:
            vm.reason = "failed probe(s): tcp:5432"
        proof.vms.append(vm)
    proof.finished = now
    return proof


def _vm_point(repo: Repository) -> Manifest:
    image = _backup(repo, MemoryDisk(VM_DISK))
    now = datetime.now(UTC)
    point_id = repo.commit(
        Manifest(
            name="db1",
            kind="vm",
            started=now,
            finished=now,
            host="kvm01",
            disks=(DiskRecord("vda", len(VM_DISK), repo.put_image(image), "/nowhere/vda.raw"),),
            consistency="filesystem",
            config={"domain.xml": DOMAIN, "network/rv-net1.xml": NETWORK},
            source={"uuid": "d97958ed-ccc5-4a61-903d-aef83abeb5a0"},
        )
    )
    return repo.points_get(point_id)


def _open_here(bucket: S3Bucket, location: str, monkeypatch: pytest.MonkeyPatch) -> Repository:
    for name, value in bucket.environ("backup").items():
        monkeypatch.setenv(name, value)
    return open_repository(location, PASSPHRASE)


def _close(repo: Repository) -> None:
    inner: Any = getattr(repo.storage, "inner", None)
    if inner is not None:
        inner.client.close()


def test_a_fresh_host_lists_verified_points_and_restores_from_the_bucket_alone(
    s3_bucket: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    location = f"s3://{s3_bucket.name}/hosts/kvm01"
    old = _fresh_host_cli(s3_bucket, location, tmp_path / "old-host")
    old.run("init", "--chunk-size", "64K")
    image = tmp_path / "web01.img"
    write_image(image, 6 << 20, 3)
    old.run("backup", "image", image, "--name", "web01")
    repo = _open_here(s3_bucket, location, monkeypatch)
    try:
        web01 = repo.resolve("web01@latest")
        db1 = _vm_point(repo)
        written = record_in_repository(repo, _proof([web01, db1], [True, False]), NullProgress())
        assert len(written) == 2
    finally:
        _close(repo)

    # the disaster: the old host, its catalog and its proofs are gone
    new = _fresh_host_cli(s3_bucket, location, tmp_path / "new-host")
    listed = {p["name"]: p for p in new.json("points")}
    assert set(listed) == {"web01", "db1"}
    assert listed["web01"]["verification"] is None  # this host's catalog knows nothing
    verified = listed["web01"]["verified"]
    assert (verified["verdict"], verified["boot_seconds"]) == ("passed", 21.5)
    assert [(p["probe"], p["ok"]) for p in verified["probes"]] == [
        ("agent", True),
        ("tcp:5432", True),
    ]
    assert listed["db1"]["verified"]["verdict"] == "failed"
    rows = {line.split()[1]: line for line in new.run("points").stdout.splitlines()[1:-1]}
    assert "verified" in rows["web01"]
    assert "failed" in rows["db1"]
    assert not (tmp_path / "new-host" / "proofs").exists()

    restored = tmp_path / "restored.img"
    new.run("restore", "image", "web01@latest", "--to", restored)
    assert filecmp.cmp(image, restored, shallow=False)

    repo = _open_here(s3_bucket, location, monkeypatch)
    try:
        host, target = FakeHypervisor(), tmp_path / "vms"
        host.add_network(NETWORK)
        target.mkdir()
        options = VmRestoreOptions(db1.id, name="db1-dr", storage=target, format="raw")
        restore_vm(repo, options, NullProgress(), [], host=host)
        [disk] = list(target.iterdir())
        assert disk.read_bytes() == VM_DISK
        assert host.domain("db1-dr").is_persistent()
    finally:
        _close(repo)
    check = new.run("check", "--read-data")
    assert "verification summary" not in check.stdout + check.stderr
