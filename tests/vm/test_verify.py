"""``surety verify`` on real guests: restore points booted from the repository in a lab.

The points come from ``lab_points`` (tests/vm/conftest.py): a good
application-consistent PostgreSQL point taken under load, and a later one
whose ``victim`` table was damaged on disk before the backup.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from surety.app.repository import open_repository
from surety.core.progress import NullProgress
from surety.hypervisor import labnet
from surety.hypervisor.libvirt_host import connect
from surety.verify.lab import open_lab
from tests.cli import PASSPHRASE
from tests.guests import agent, apps
from tests.vm.conftest import Guest, LabPoints

pytestmark = pytest.mark.vm

DECOY = "10.0.2.99"
"""An address held by *another* lab's prober while the verification runs."""


def _host_ipv4() -> list[str]:
    argv = ["ip", "-4", "-o", "addr", "show"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    found = [line.split()[3].split("/")[0] for line in out.splitlines()]
    return [a for a in found if not a.startswith("127.")]


def _lab_domains(vm: str = "") -> list[str]:
    """Lab VMs on the host; with ``vm``, only the labs' copies of that VM."""
    host = connect("qemu:///system")
    try:
        names = [n for n in host.domain_names() if n.startswith("surety-lab-")]
        return [n for n in names if not vm or n.endswith(f"-{vm}")]
    finally:
        host.close()


def _new(names: list[str], before: set[str]) -> list[str]:
    return [n for n in names if n not in before]


def _isolation_script(targets: list[str], port: int, prober: str) -> str:
    """Exit 0 only if every outside target stays silent (and the in-lab prober answers)."""
    lines = [
        "set -u; bad=0",
        f"ping -c1 -W3 {prober} >/dev/null && echo 'prober {prober}: answers (in the lab)' "
        f"|| {{ echo 'prober {prober}: SILENT'; bad=1; }}",
    ]
    for target in targets:
        lines.append(
            f"if ping -c1 -W2 {target} >/dev/null 2>&1; then echo '{target}: ANSWERS'; bad=1; "
            f"else echo '{target}: silent'; fi"
        )
        lines.append(
            f"if timeout 5 bash -c 'exec 3<>/dev/tcp/{target}/{port}' 2>/dev/null; "
            f"then echo '{target}:{port}: CONNECTED'; bad=1; "
            f"else echo '{target}:{port}: refused'; fi"
        )
    lines.append("exit $bad")
    return "\n".join(lines)


def _write_group(path: Path, point: str, script: str) -> Path:
    escaped = script.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    path.write_text(
        f'name = "isolation"\n\n[[vm]]\npoint = "{point}"\nname = "db"\n'
        'probes = ["heartbeat", "ping", "postgresql"]\n\n'
        '[[vm.probe]]\nkind = "tcp"\nport = 5432\n\n'
        f'[[vm.probe]]\nkind = "script"\nname = "isolation"\nrun = """\n{escaped}\n"""\n'
    )
    return path


def _verify(lab_points: LabPoints, *args: str, tmp: Path) -> tuple[int, dict[str, Any], str]:
    proc = lab_points.cli.run(
        "verify", *args, "--proofs", tmp / "proofs", "--json", check=False, timeout=900
    )
    doc = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    return proc.returncode, doc, proc.stderr


def _start_source(lab_points: LabPoints) -> Guest:
    """Boot the (powered-off) source VM of the lab points again, PostgreSQL up."""
    conn = agent.connect()
    conn.lookupByName(lab_points.source).create()
    guest = Guest(lab_points.source, conn)
    agent.wait_for_agent(guest.dom)
    apps.wait_postgresql_ready(guest)
    return guest


def test_good_point_passes_isolated_and_a_killed_run_is_reaped(
    lab_points: LabPoints, tmp_path: Path
) -> None:
    source = _start_source(lab_points)  # the good point truncates its logs after verification
    archive_before = apps.wal_segments(source)
    listener = socket.create_server(("0.0.0.0", 0))  # the guest must NOT reach it
    port = listener.getsockname()[1]
    repo = open_repository(str(lab_points.cli.repo), PASSPHRASE)
    host = connect("qemu:///system")
    before = set(_lab_domains())
    try:
        # Another lab, alive the whole time, with an address the guest will try.
        with open_lab(host, repo, NullProgress()) as other:
            labnet.add_probe_address(other.netns, ipaddress.IPv4Interface(f"{DECOY}/24"))

            # 1. A verification killed with -9 while its VM runs leaves things behind.
            killed = subprocess.Popen(
                [sys.executable, "-m", "surety", "verify", lab_points.good,
                 "--proofs", str(tmp_path / "killed")],
                env=lab_points.cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            # (other tests' labs, and CI's replication lane, may run beside this one: only lab
            # VMs of this source, made here, are asserted on)
            deadline = time.monotonic() + 120
            while not (left := _new(_lab_domains(lab_points.source), before)) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.5)
            assert left, "the killed verification never started its VM"
            os.kill(killed.pid, signal.SIGKILL)
            killed.wait()
            killed_labs = {name.split("-")[2] for name in left}
            assert set(_lab_domains()) >= set(left), "a lab VM should outlive a kill -9"
            assert killed_labs <= set(labnet.lab_namespaces())

            # 2. The next verification reaps it, keeps the live lab, passes, isolated.
            prober = lab_points.address.rsplit(".", 1)[0] + ".254"
            targets = [*_host_ipv4(), "10.0.2.2", DECOY]
            group = _write_group(
                tmp_path / "group.toml", lab_points.good, _isolation_script(targets, port, prober)
            )
            code, proof, stderr = _verify(lab_points, "--group", str(group), tmp=tmp_path)
            assert code == 0, stderr
            # reaped: by this run ("cleaned up after interrupted lab(s)") or any lab opened since
            assert not set(left) & set(_lab_domains())
            assert not killed_labs & set(labnet.lab_namespaces())
            assert proof["lab"] not in labnet.lab_namespaces()
            assert other.id in labnet.lab_namespaces()
    finally:
        host.close()
        listener.close()

    assert proof["result"] == "passed"
    (vm,) = proof["vms"]
    probes = {p["probe"]: p for p in vm["probes"]}
    assert all(p["ok"] for p in probes.values()), probes
    assert "marker" in probes["postgresql"]["evidence"]
    assert "no corruption" in probes["postgresql"]["evidence"]
    assert f"{lab_points.address.split('/')[0]}:5432 accepted" in probes["tcp:5432"]["evidence"]
    isolation = probes["script:isolation"]["evidence"]
    for target in targets:
        assert f"{target}: silent" in isolation
        assert f"{target}:{port}: refused" in isolation
    assert f"prober {prober}: answers" in isolation
    proof_dir = Path(proof["proof_dir"])
    assert "PASSED" in (proof_dir / "proof.html").read_text()
    assert json.loads((proof_dir / "proof.json").read_text())["result"] == "passed"
    listed = json.loads(lab_points.cli.run("points", "--json").stdout)
    status = {p["id"]: p["verification"] for p in listed}
    assert status[lab_points.good]["status"] == "verified"

    # Only now, after the verification passed, the WAL archive is truncated, up to the redo.
    (point,) = [p for p in listed if p["id"] == lab_points.good]
    redo = point["applications"]["postgresql"]["clusters"][0]["redo_wal_file"]
    assert [s for s in archive_before if s < redo], "nothing older than the redo to truncate"
    archive_after = apps.wal_segments(source)
    source.dom.destroy()
    assert archive_after == [s for s in archive_before if s >= redo] + [
        s for s in archive_after if s not in archive_before
    ]
    assert "archived WAL file(s) before" in vm["truncation"]["postgresql"]["detail"]
    assert other.id not in labnet.lab_namespaces()


def test_damaged_point_fails_with_the_probes_evidence(
    lab_points: LabPoints, tmp_path: Path
) -> None:
    code, proof, stderr = _verify(lab_points, lab_points.damaged, tmp=tmp_path)
    assert code == 16, stderr
    assert "verification failed" in stderr
    (vm,) = proof["vms"]
    assert vm["result"] == "failed"
    probes = {p["probe"]: p for p in vm["probes"]}
    assert probes["heartbeat"]["ok"]
    assert probes["ping"]["ok"]
    assert not probes["postgresql"]["ok"]
    evidence = probes["postgresql"]["evidence"]
    assert "pg_amcheck" in evidence
    assert "victim" in evidence or "invalid page" in evidence
    html = (Path(proof["proof_dir"]) / "proof.html").read_text()
    assert "FAILED" in html
    assert "pg_amcheck" in html
    listed = json.loads(lab_points.cli.run("points", "--json").stdout)
    status = {p["id"]: p["verification"] for p in listed}
    assert status[lab_points.damaged]["status"] == "failed"
    assert not [n for n in _lab_domains() if proof["lab"] in n]
    assert proof["lab"] not in labnet.lab_namespaces()
