"""Log truncation deferred until a restore point is verified (``--truncate-logs after-verify``).

A job that asks for it keeps the app's logs (PostgreSQL's WAL archive,
MariaDB's binary logs) after the commit; only a verification in which every
probe of the point passed lets the writers truncate - on the *production*
VM (found by the point's libvirt UUID), up to what the point covers, from
the metadata the point recorded. A failed verification truncates nothing.
A truncation that fails is reported in the proof; it never turns a passed
verification into a failed one (the point is as good as the probes said).
"""

from __future__ import annotations

from typing import Any

from surety.core.errors import SuretyError
from surety.hypervisor.guest_agent import AgentChannel
from surety.hypervisor.port import HypervisorHost
from surety.quiesce.writer import load_writers
from surety.repo.manifest import Manifest

__all__ = ["truncate_after_verify"]

BASE = ("fsfreeze", "script")


def truncate_after_verify(host: HypervisorHost, point: Manifest) -> dict[str, Any]:
    """Truncate the logs the passed ``point`` covers; ``{}`` when it did not ask for it."""
    if point.source.get("truncate_logs") != "after-verify":
        return {}
    apps = {
        name: meta
        for name, meta in point.applications.items()
        if name not in BASE and meta.get("state") == "thawed"
    }
    if not apps:
        return {}
    domain = host.find_domain(uuid=point.source.get("uuid"))
    if domain is None or not domain.is_running():
        why = "is gone" if domain is None else "is not running"
        return {name: {"done": False, "detail": f"the source VM {why}: logs kept"} for name in apps}
    channel = AgentChannel(domain)
    report: dict[str, Any] = {}
    for name, meta in apps.items():
        try:
            factory: Any = load_writers([name])[name]
            truncate = getattr(factory, "truncate_recorded", None)
            if truncate is None:
                report[name] = {"done": False, "detail": "this writer truncates nothing"}
                continue
            report[name] = truncate(channel, meta)
        except SuretyError as exc:
            report[name] = {"done": False, "detail": f"truncation failed: {exc}"}
    return report
