"""Proofs: what a verification saw, as JSON (for machines) and HTML (for people).

The JSON document (``proof.json``, ``format`` 1)::

    {"format": 1, "lab": "<id>", "group": "<name>", "result": "passed" | "failed",
     "started": iso, "finished": iso, "seconds": float, "notes": [...],
     "vms": [{"name", "point", "vm", "consistency", "point_finished",
              "result": "passed" | "failed" | "not started",
              "boot_seconds": float | null,      # CPUs running -> agent answers
              "network": ["eth0 re-addressed to ..."],
              "probes": [{"probe", "ok", "evidence", "seconds", "finished"}],
              "console_tail": "...", "reason": "...",
              "truncation": {"<writer>": {"done": bool, "detail": "..."}}}],
     "timeline": [{"at": iso, "vm": name, "event": text}]}

``proof.html`` is the same, readable: a verdict, one table per VM, the
timeline of boot and probes, and the tail of each VM's serial console. Both
are written to a fresh directory, then renamed into place: a proof that
exists is whole.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from surety.verify.probes import ProbeResult

__all__ = ["PROOF_FORMAT", "Proof", "VmProof", "write_proof"]

PROOF_FORMAT = 1


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


@dataclass
class VmProof:
    name: str
    point: str
    vm: str
    consistency: str
    point_finished: str
    result: str = "not started"
    boot_seconds: float | None = None
    network: list[str] = field(default_factory=list)
    probes: list[ProbeResult] = field(default_factory=list)
    console_tail: str = ""
    reason: str = ""
    truncation: dict[str, Any] = field(default_factory=dict)  # after-verify log truncation

    @property
    def passed(self) -> bool:
        return self.result == "passed"


@dataclass
class Proof:
    lab: str
    group: str
    started: float
    vms: list[VmProof] = field(default_factory=list)
    timeline: list[tuple[float, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    finished: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.vms) and all(vm.passed for vm in self.vms)

    def event(self, at: float, vm: str, what: str) -> None:
        self.timeline.append((at, vm, what))

    def document(self) -> dict[str, Any]:
        return {
            "format": PROOF_FORMAT,
            "lab": self.lab,
            "group": self.group,
            "result": "passed" if self.passed else "failed",
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "seconds": round(self.finished - self.started, 1),
            "notes": self.notes,
            "vms": [{**asdict(vm), "probes": [asdict(p) for p in vm.probes]} for vm in self.vms],
            "timeline": [
                {"at": _iso(at), "vm": vm, "event": what} for at, vm, what in sorted(self.timeline)
            ],
        }


def write_proof(proof: Proof, proofs_root: Path) -> Path:
    """Write ``proof.json`` and ``proof.html`` into a new directory; returns it."""
    proofs_root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromtimestamp(proof.started, UTC).strftime("%Y%m%dT%H%M%SZ")
    final = proofs_root / f"{stamp}-{proof.lab}"
    staging = Path(tempfile.mkdtemp(prefix=".proof-", dir=proofs_root))
    doc = proof.document()
    (staging / "proof.json").write_text(json.dumps(doc, indent=2) + "\n")
    (staging / "proof.html").write_text(render_html(doc))
    for path in (staging / "proof.json", staging / "proof.html"):
        with path.open("rb") as f:
            os.fsync(f.fileno())
    os.chmod(staging, 0o755)  # noqa: S103 - proofs are meant to be read (mkdtemp made it 0700)
    staging.rename(final)
    return final


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
.passed{color:#176117}.failed{color:#a01010}.skipped{color:#777}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;
text-align:left;vertical-align:top}pre{background:#f4f4f4;padding:.6em;overflow-x:auto;font-size:85%}
"""


def render_html(doc: dict[str, Any]) -> str:
    e = html.escape
    verdict = doc["result"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>surety proof {e(doc['lab'])}: {e(verdict)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Verification <span class='{e(verdict)}'>{e(verdict.upper())}</span></h1>",
        f"<p>Lab {e(doc['lab'])}{' - group ' + e(doc['group']) if doc['group'] else ''}; "
        f"{e(doc['started'])} to {e(doc['finished'])} ({doc['seconds']} s).</p>",
    ]
    parts += [f"<p class='skipped'>{e(note)}</p>" for note in doc["notes"]]
    for vm in doc["vms"]:
        parts.append(_vm_heading(vm))
        if vm["network"]:
            parts.append("<p>Network: " + e("; ".join(vm["network"])) + "</p>")
        if vm["probes"]:
            parts.append(_probe_table(vm["probes"]))
        for writer, done in vm["truncation"].items():
            parts.append(
                f"<p>Log truncation after verification ({e(writer)}): {e(done['detail'])}</p>"
            )
        if vm["console_tail"]:
            parts.append("<details><summary>serial console (last lines)</summary>")
            parts.append(f"<pre>{e(vm['console_tail'])}</pre></details>")
    parts.append("<h2>Timeline</h2><table><tr><th>time (UTC)</th><th>VM</th><th>event</th></tr>")
    parts += [
        f"<tr><td>{e(t['at'])}</td><td>{e(t['vm'])}</td><td>{e(t['event'])}</td></tr>"
        for t in doc["timeline"]
    ]
    parts.append("</table></body></html>\n")
    return "\n".join(parts)


def _vm_heading(vm: dict[str, Any]) -> str:
    e = html.escape
    boot = vm["boot_seconds"]
    return (
        f"<h2>{e(vm['name'])} <span class='{e(vm['result'].split()[0])}'>{e(vm['result'])}</span>"
        f"</h2><p>Restore point <code>{e(vm['point'])}</code> of VM {e(vm['vm'])}, "
        f"{e(vm['consistency'])}-consistent, taken {e(vm['point_finished'])}. "
        + (f"Guest agent answered {boot:.1f} s after start. " if boot else "")
        + e(vm["reason"])
        + "</p>"
    )


def _probe_table(probes: list[dict[str, Any]]) -> str:
    e = html.escape
    rows = ["<table><tr><th>probe</th><th>result</th><th>seconds</th><th>evidence</th></tr>"]
    for p in probes:
        verdict = ("passed", "passed") if p["ok"] else ("failed", "FAILED")
        rows.append(
            f"<tr><td>{e(p['probe'])}</td><td class='{verdict[0]}'>{verdict[1]}</td>"
            f"<td>{p['seconds']:.1f}</td><td>{e(p['evidence'])}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)
