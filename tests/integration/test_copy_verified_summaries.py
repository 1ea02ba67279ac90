"""``copy --verified-only`` on a host whose catalog knows no verification (after a disaster):
the repository's own verification summaries (docs/dr.md) decide."""

from __future__ import annotations

import os
import time
from pathlib import Path

from surety.app.repository import open_repository
from surety.core.progress import NullProgress
from surety.verify.probes import ProbeResult
from surety.verify.proof import Proof, VmProof
from surety.verify.summary import record_in_repository
from tests.cli import PASSPHRASE
from tests.integration.test_copy_cli import _as_target, _pair, _two_points


def test_verified_only_falls_back_to_the_repositorys_summaries(tmp_path: Path) -> None:
    source, target = str(tmp_path / "source"), str(tmp_path / "target")
    cli = _pair(source, target, tmp_path, dict(os.environ))
    _two_points(cli, tmp_path)
    good, bad = cli.json("points")
    proof = Proof("lab-1", "web01", time.time() - 60)
    for point, ok in ((good, True), (bad, False)):
        vm = VmProof("web01", point["id"], "web01", "crash", point["finished"])
        vm.result = "passed" if ok else "failed"
        vm.probes.append(ProbeResult("agent", ok, "guest-ping", 0.1, time.time()))
        proof.vms.append(vm)
    proof.finished = time.time()
    record_in_repository(open_repository(source, PASSPHRASE), proof, NullProgress())
    report = cli.json("copy", "--all", "--verified-only", "--to", target)  # an empty catalog
    statuses = {p["point"]: (p["status"], p["reason"]) for p in report["points"]}
    assert statuses[good["id"]] == ("copied", "")
    assert statuses[bad["id"]][0] == "not verified"
    assert statuses[bad["id"]][1].startswith("latest verification: failed")
    copies = _as_target(cli, target).json("points")
    assert [c["source"]["copied_from"]["point"] for c in copies] == [good["id"]]
