"""A site for the web console's tests: a repository made by ``surety init`` + ``backup image``
(a small ext4 image named "test", like the VM of libvirt's test driver), a configuration
protecting "test" with a policy, users of each role, a verification with its proof, usage
history and a check, all in a real SQLite catalog."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from surety.app.repository import open_repository
from surety.catalog import Catalog, Verification
from surety.verify.probes import ProbeResult
from surety.verify.proof import Proof, VmProof, write_proof
from surety.web.auth import add_user
from tests.cli import PASSPHRASE, Cli, cli_for
from tests.integration import fskit

PASSWORD = "correct-battery-9"
USERS = {"ann": "admin", "otto": "operator", "vera": "viewer"}


@dataclass
class Site:
    tmp: Path
    cli: Cli
    config: Path
    catalog: Catalog
    point: str  # id of the verified point (the image backup)
    repo_id: str
    tree: Path | None  # the files in the image, when it is ext4
    run_root: Path | None = None  # the file browser's private run directories, when set


def make_site(tmp: Path, *, ext4: bool = False) -> Site:
    cli = cli_for(tmp / "repo", dict(os.environ))
    cli.run("init", "--chunk-size", "64K")
    image = tmp / "disk.img"
    tree = None
    if ext4:
        tree = tmp / "tree"
        tree.mkdir()
        (tree / "hello.txt").write_text("hello from the guest\n")
        (tree / "etc").mkdir()
        (tree / "etc" / "app.conf").write_bytes(os.urandom(200_000))
        fskit.make_ext4(image, tree)
    else:
        image.write_bytes(os.urandom(1 << 20))
    cli.run("backup", "image", image, "--name", "test")
    (tmp / "pass").write_text(PASSPHRASE + "\n")
    catalog_path = tmp / "catalog.sqlite"
    config = tmp / "surety.toml"
    config.write_text(
        f"""
[service]
libvirt_uri = "test:///default"
catalog = "{catalog_path}"

[repository.local]
location = "{tmp / "repo"}"
passphrase_file = "{tmp / "pass"}"

[policy.nightly]
repository = "local"
vms = ["test"]
schedule = "daily"
rpo = "1d"
retries = {{ attempts = 1, backoff = "1s" }}

[policy.nightly.verify]
schedule = "weekly"

[policy.nightly.check]
schedule = "weekly"
"""
    )
    catalog = Catalog(catalog_path)
    for name, role in USERS.items():
        add_user(catalog, name, role, PASSWORD)
    repo = open_repository(str(tmp / "repo"), PASSPHRASE)
    (point,) = repo.list_points("test")
    _verified(tmp, catalog, repo.config.id, point.id)
    now = datetime.now(UTC)
    for days, logical, stored in (
        (3, 1 << 20, 900_000),
        (2, 2 << 20, 1_100_000),
        (0, 3 << 20, 1_200_000),
    ):
        catalog.record_usage(repo.config.id, now - timedelta(days=days), logical, stored)
    catalog.record_check(repo.config.id, now, "ok", "12 packs, 40 chunks: no damage", "1/2")
    return Site(tmp, cli, config, catalog, point.id, repo.config.id, tree)


def _verified(tmp: Path, catalog: Catalog, repo_id: str, point: str) -> None:
    started = time.time() - 60
    vm = VmProof("test", point, "test-lab1", "crash", "2026-12-06T09:00:00+00:00")
    vm.result, vm.boot_seconds = "passed", 23.4
    vm.probes = [
        ProbeResult("agent", True, "guest-ping answered after 21.9 s", 21.9, started + 22),
        ProbeResult("tcp:5432", True, "connected to 10.250.0.2:5432", 0.1, started + 23),
        ProbeResult(
            "marker", True, "row 'before-snapshot' found in public.markers", 0.4, started + 24
        ),
    ]
    boot = [f"[{n:8.6f}] [\x1b[0;32m  OK  \x1b[0m] Reached unit {n}" for n in range(30)]
    wide = "[   21.002] " + "a very long kernel line " * 12
    vm.console_tail = "\r\n".join(
        [*boot, wide, "Debian GNU/Linux 12 test ttyS0", "", "test login:"]
    )
    proof = Proof("lab1", "test", started, [vm], notes=[], finished=started + 30)
    proof.event(started + 1, "test", "booted from the repository")
    proof.event(started + 23, "test", "guest agent answers")
    where = write_proof(proof, tmp / "proofs")
    catalog.record_verification(
        repo_id,
        Verification(
            point,
            "verified",
            proof.document()["finished"],
            str(where / "proof.json"),
            "agent ok; tcp:5432 ok; marker ok",
            23.4,
        ),
    )
    json.loads((where / "proof.json").read_text())  # whole
