"""Issue 15's "done when" on a real running guest, every reader from an immutable S3 repository.

One flow, one restore point, steps as separate tests in order (each needs the
ones before it). The bucket is made the way docs/storage.md tells an
administrator to: owned by the maintenance identity, with Object Lock, and the
policy of ``surety s3 policy --apply``; every surety command then runs with the
**backup identity only** (the maintenance keys are not in its environment), as
on a backup host:

1. ``surety init s3://BUCKET/PREFIX --immutable-days 1``;
2. ``backup vm`` of the running session guest after a known file was written in
   it (its digest recorded); ``points --json`` shows the point locked;
3. ``restore image --disk vda --to raw`` from S3: the file's digest (debugfs);
4. ``files ls``/``files get`` of that file straight from the S3 point (nbdkit);
5. ``copy POINT --to LOCAL``: the point is there and restores the same file;
6. the attack, with the backup identity's keys (boto3): every object of the
   point refuses a delete and takes an overwrite; the locked versions stay, and
   deleting one by version id is refused to both identities; ``restore image``
   from S3 is byte-exact again and says it read the locked versions;
7. ``instant-recover`` of the attacked point (detached nbdkit servers reading the
   bucket): the clone's agent answers and the file is there; after a power-off
   and a host reboot (servers killed) ``resume`` serves the bucket again; ``finish``
   moves its disks to local storage while it runs and lets the bucket go (no
   server, not even a lock object), and the VM boots from its own disk;
8. ``verify --probe heartbeat`` of the attacked point in the lab.

Locks are shortened with ``SURETY_TESTING_LOCK_SECONDS`` (a "day" is
``LOCK_SECONDS``) but still cover the whole flow: the bucket keeps the locked
versions a while after the module (the server's data directory is CI's scratch).
Each step's wall time is printed at the end of the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt
import pytest
from botocore.exceptions import ClientError

from tests.cli import PASSPHRASE, Cli, cli_for, without_surety
from tests.guests import agent, testvm
from tests.processes import alive
from tests.s3.fixtures import remove_bucket
from tests.s3.server import S3Server
from tests.vm.conftest import SUMMARY, Guest, server_pids

pytestmark = pytest.mark.vm

LOCK_SECONDS = "1200"  # one "day" = 20 min: the point stays locked through the whole flow
PREFIX = "hosts/kvm01"
MARKER = "/root/s3-marker.bin"
BOOT_TIMEOUT = 900  # TCG guests beside CI's


@dataclass
class Flow:
    """What the steps share: the S3 repository's CLI (backup identity) and the point."""

    guest: Guest
    cli: Cli
    bucket: str
    work: Path
    clients: dict[str, Any]
    instant_dir: Path
    digest: str = ""
    point: str = ""
    raw: Path | None = None
    started: float = field(default_factory=time.monotonic)

    def need_point(self) -> str:
        if not self.point:
            pytest.fail("no restore point: the backup step failed", pytrace=False)
        return self.point


def _env(server: S3Server, bucket: str, work: Path, identity: str) -> dict[str, str]:
    env = without_surety(os.environ, ("SURETY_", "AWS_"))
    env.update(server.environ(identity))  # type: ignore[arg-type]
    if identity == "backup":  # a backup host never holds the maintenance keys
        env.pop("SURETY_S3_MAINT_ACCESS_KEY_ID")
        env.pop("SURETY_S3_MAINT_SECRET_ACCESS_KEY")
    env.update(
        SURETY_REPOSITORY=f"s3://{bucket}/{PREFIX}",
        SURETY_PASSPHRASE=PASSPHRASE,
        SURETY_CATALOG=str(work / "catalog.sqlite"),
        SURETY_TESTING_LOCK_SECONDS=LOCK_SECONDS,
    )
    return env


@pytest.fixture(scope="module")
def flow(
    guest: Guest, s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Flow]:
    work = tmp_path_factory.mktemp("s3-vm")
    bucket = f"surety-vm-{secrets.token_hex(5)}"
    clients = {"backup": s3_server.client("backup"), "maintenance": s3_server.client("maintenance")}
    owner = clients["maintenance"]
    owner.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    instant_dir = testvm.VM_ROOT / f"instant-{bucket}"
    try:
        maint = Cli(work, _env(s3_server, bucket, work, "maintenance"))
        users = ("--backup-user", "surety-backup", "--maintenance-user", "surety-maint")
        maint.run("s3", "policy", *users, "--apply")
        cli = Cli(work, _env(s3_server, bucket, work, "backup"))
        cli.env["SURETY_INSTANT_DIR"] = str(instant_dir)
        yield Flow(guest, cli, bucket, work, clients, instant_dir)
    finally:
        remove_bucket(owner, bucket)  # best effort: the locked versions stay until they expire
        for client in clients.values():
            client.close()
        shutil.rmtree(instant_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _timed(request: pytest.FixtureRequest) -> Iterator[None]:
    began = time.monotonic()
    yield
    SUMMARY.append(f"s3 vm flow: {request.node.name}: {time.monotonic() - began:.1f} s")


def _debugfs_digest(image: Path, path: str) -> str:
    proc = subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(image)], capture_output=True, check=False
    )
    return hashlib.sha256(proc.stdout).hexdigest()


def _keys(client: Any, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}/")
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def _oldest_version(client: Any, bucket: str, key: str) -> dict[str, Any]:
    answer = client.list_object_versions(Bucket=bucket, Prefix=key)
    versions = [v for v in answer.get("Versions", []) if v["Key"] == key]
    return min(versions, key=lambda v: v["LastModified"])


def _refused(call: Any, **arguments: Any) -> str:
    with pytest.raises(ClientError) as refused:
        call(**arguments)
    return str(refused.value.response["Error"]["Code"])


def test_init_an_immutable_s3_repository_with_the_backup_identity(flow: Flow) -> None:
    assert "SURETY_S3_MAINT_ACCESS_KEY_ID" not in flow.cli.env
    flow.cli.run("init", "--immutable-days", "1")
    keys = _keys(flow.clients["backup"], flow.bucket)
    assert f"{PREFIX}/config" in keys
    head = flow.clients["backup"].head_object(Bucket=flow.bucket, Key=f"{PREFIX}/config")
    assert head["ObjectLockMode"] == "COMPLIANCE"


def test_backup_of_the_running_guest_is_a_locked_point(flow: Flow) -> None:
    flow.guest.sh(f"head -c 4M /dev/urandom > {MARKER} && sync")
    flow.digest = flow.guest.sh(f"sha256sum {MARKER}").stdout.split()[0].decode()
    assert flow.guest.dom.isActive()
    began = time.monotonic()
    point = flow.cli.json("backup", "vm", flow.guest.name, "--consistency", "filesystem")
    SUMMARY.append(
        f"s3 vm flow: backup vm to S3: {time.monotonic() - began:.1f} s, "
        f"{point.get('read_bytes', 0) / 2**20:.0f} MiB read"
    )
    assert point["consistency"] == "filesystem", point
    flow.point = point["id"]
    (listed,) = flow.cli.json("points")
    assert listed["id"] == flow.point
    assert listed["kind"] == "vm"
    until = datetime.fromisoformat(listed["locked_until"])
    assert until > datetime.now(UTC)
    assert "locked until" in flow.cli.run("points").stdout


def test_restore_image_from_s3_holds_the_file(flow: Flow) -> None:
    point = flow.need_point()
    flow.raw = flow.work / "vda.img"
    out = flow.cli.run("restore", "image", point, "--disk", "vda", "--to", flow.raw, timeout=900)
    assert "every chunk verified" in out.stdout
    assert _debugfs_digest(flow.raw, MARKER) == flow.digest


def test_files_reads_the_file_straight_from_the_s3_point(flow: Flow) -> None:
    point = flow.need_point()
    listing = flow.cli.json("files", "ls", point, "/root")
    sizes = {e["path"]: e.get("size") for e in listing["entries"]}
    assert sizes.get(MARKER) == 4 << 20, sizes
    flow.cli.run("files", "get", point, MARKER, "--to", flow.work / "got")
    got = flow.work / "got" / Path(MARKER).name
    assert hashlib.sha256(got.read_bytes()).hexdigest() == flow.digest


def test_copy_to_a_local_repository_is_restorable(flow: Flow) -> None:
    point = flow.need_point()
    local = cli_for(flow.work / "local", {**os.environ, "SURETY_CATALOG": str(flow.work / "l.db")})
    local.run("init")
    copy = Cli(flow.cli.repo, {**flow.cli.env, "SURETY_TO_PASSPHRASE": PASSPHRASE})
    done = copy.json("copy", point, "--to", local.repo)
    (copied,) = done["points"]
    assert copied["status"] == "copied", done
    (there,) = local.json("points")
    assert there["id"] == copied["target_point"]
    assert there["name"] == flow.guest.name
    restored = flow.work / "local-vda.img"
    local.run("restore", "image", there["id"], "--to", restored, timeout=900)
    try:
        assert _debugfs_digest(restored, MARKER) == flow.digest
    finally:
        restored.unlink()


def test_the_backup_identity_cannot_delete_or_replace_the_point(flow: Flow) -> None:
    point = flow.need_point()
    attacker, owner, bucket = flow.clients["backup"], flow.clients["maintenance"], flow.bucket
    keys = [k for k in _keys(attacker, bucket) if "/locks/" not in k]
    assert any("/data/" in k for k in keys)
    assert any("/points/" in k for k in keys)
    originals = {key: _oldest_version(attacker, bucket, key) for key in keys}
    for key in keys:  # the bucket policy: no delete; an overwrite goes through, unlocked
        assert _refused(attacker.delete_object, Bucket=bucket, Key=key) == "AccessDenied"
        attacker.put_object(Bucket=bucket, Key=key, Body=b"ransom note")
    pack = next(k for k in keys if "/data/" in k)
    version = originals[pack]["VersionId"]
    for client in (attacker, owner):  # the lock itself: refused to the owner too
        code = _refused(client.delete_object, Bucket=bucket, Key=pack, VersionId=version)
        assert code == "AccessDenied"
    for key, original in originals.items():
        still = _oldest_version(owner, bucket, key)
        assert still["VersionId"] == original["VersionId"]
        head = owner.head_object(Bucket=bucket, Key=key, VersionId=still["VersionId"])
        assert head["ObjectLockMode"] == "COMPLIANCE"

    assert flow.raw is not None
    again = flow.work / "vda-after-attack.img"
    out = flow.cli.run("restore", "image", point, "--disk", "vda", "--to", again, timeout=900)
    try:
        assert "read its locked version" in out.stderr
        assert "replaced by one without a lock" in out.stderr
        assert subprocess.run(["cmp", str(flow.raw), str(again)], check=False).returncode == 0
    finally:
        again.unlink()
        flow.raw.unlink()


def test_instant_recovery_serves_the_attacked_point_from_s3(
    flow: Flow, libvirt_conn: libvirt.virConnect
) -> None:
    point = flow.need_point()
    flow.guest.dom.destroy()  # the original is gone; frees the CPU for the clone
    name = f"{flow.guest.name}-s3i"
    storage = testvm.VM_ROOT / f"s3-store-{secrets.token_hex(3)}"
    testvm.make_public_dir(storage)
    try:
        proc = flow.cli.run(
            "instant-recover", point, "--as", name, "--json", "--timeout", str(BOOT_TIMEOUT),
            timeout=BOOT_TIMEOUT + 60,
        )  # fmt: skip
        started = json.loads(proc.stdout)
        SUMMARY.append(
            f"s3 vm flow: instant recovery from S3: running after {started['seconds_to_start']} "
            f"s, guest-ping after {started['seconds_to_ping']} s"
        )
        assert started["seconds_to_ping"] is not None
        clone = Guest(name, libvirt_conn)
        assert clone.sh(f"sha256sum {MARKER}").stdout.split()[0].decode() == flow.digest
        clone.sh("echo written-in-the-clone > /root/after.txt && sync")
        assert [v["name"] for v in flow.cli.json("instant-recover", "list")] == [name]
        assert [k for k in _keys(flow.clients["backup"], flow.bucket) if "/locks/" in k]

        # power-off and a host reboot (its servers killed): resume serves the bucket again
        servers = server_pids(started)
        libvirt_conn.lookupByName(name).destroy()
        for pid in servers:
            os.kill(pid, signal.SIGKILL)
        flow.cli.run("instant-recover", "resume", name, "--timeout", str(BOOT_TIMEOUT),
                     timeout=BOOT_TIMEOUT + 60)  # fmt: skip
        assert clone.sh("cat /root/after.txt").stdout.decode().strip() == "written-in-the-clone"

        # finish: the disks move to local storage while it runs; the bucket is let go
        done = json.loads(
            flow.cli.run(
                "instant-recover", "finish", name, "--storage", storage, "--json",
                timeout=BOOT_TIMEOUT,
            ).stdout
        )  # fmt: skip
        copy = storage / f"{name}-vda.qcow2"
        assert [d["copy"] for d in done["disks"]] == [str(copy)]
        dom = libvirt_conn.lookupByName(name)
        assert dom.isActive()
        assert dom.isPersistent()
        assert f"<source file='{copy}'" in dom.XMLDesc(0)
        assert not any(alive(pid) for pid in servers)
        assert flow.cli.json("instant-recover", "list") == []
        deadline = time.monotonic() + 30  # the servers release their shared locks as they exit
        while [k for k in _keys(flow.clients["backup"], flow.bucket) if "/locks/" in k]:
            assert time.monotonic() < deadline, "the instant VM's servers left their locks"
            time.sleep(1)
        dom.destroy()  # it boots from its own disk now, the bucket not needed
        dom.create()
        agent.wait_for_agent(dom, timeout=BOOT_TIMEOUT)
        clone = Guest(name, libvirt_conn)
        assert clone.sh(f"sha256sum {MARKER}").stdout.split()[0].decode() == flow.digest
        assert clone.sh("cat /root/after.txt").stdout.decode().strip() == "written-in-the-clone"
        SUMMARY.append(f"s3 vm flow: instant recovery finished: {done['copied']} bytes copied")
    finally:
        try:
            testvm.down(name)
        finally:
            shutil.rmtree(storage, ignore_errors=True)


def test_verify_boots_the_attacked_point_in_the_lab(flow: Flow) -> None:
    point = flow.need_point()
    proc = flow.cli.run(
        "verify", point, "--probe", "heartbeat", "--proofs", flow.work / "proofs", "--json",
        "--timeout", str(BOOT_TIMEOUT), check=False, timeout=BOOT_TIMEOUT + 120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proof = json.loads(proc.stdout)
    assert proof["result"] == "passed", proof
    (vm,) = proof["vms"]
    assert [(p["probe"], p["ok"]) for p in vm["probes"]] == [("heartbeat", True)]
    (listed,) = flow.cli.json("points")
    assert listed["verification"]["status"] == "verified"
    SUMMARY.append(f"s3 vm flow: the whole module: {time.monotonic() - flow.started:.0f} s")
