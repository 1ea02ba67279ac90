"""Application groups: which restore points boot together in the lab, in which order.

A group file is TOML::

    name = "orders"            # optional; shown in the proof
    timeout = 1800             # seconds for the whole verification (default 1800)

    [[vm]]                     # members boot in file order: dependencies first
    point = "db1@latest"       # a restore point (id, prefix or NAME@latest)
    name = "db1"               # optional: the member's name in the lab and proof
    boot_timeout = 300         # seconds until the guest agent answers (default 300)
    probes = ["heartbeat", "ping", "postgresql"]    # default: see below

    [[vm.probe]]               # probes with options (after the plain ones)
    kind = "tcp"
    port = 5432

    [[vm]]
    point = "db2@latest"
    probes = ["heartbeat", "postgresql", "replication"]

A member's next neighbour starts only after every probe of the member
passed. Without ``probes`` a member gets ``heartbeat``, ``ping`` (when it has
a NIC) and one probe per application writer that held its app at the
snapshot (``postgresql``, ``mariadb``). Parsing is pure; points are resolved
by the caller.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from surety.core.errors import UsageError
from surety.verify.probes import PROBE_KINDS, ProbeSpec

__all__ = ["ApplicationGroup", "Member", "default_probes", "load_group", "parse_group"]

# writer that held its app -> the probe that checks it, and the probe's default options.
# A DC verified alone has no partner in the lab: its replication is not judged by default
# (an application group names ``replication = true`` for its DCs).
APP_PROBES: dict[str, tuple[str, dict[str, Any]]] = {
    "postgresql": ("postgresql", {}),
    "mariadb": ("mariadb", {}),
    "samba-ad": ("ad", {"replication": False}),
}


@dataclass(frozen=True)
class Member:
    point: str
    name: str | None = None
    boot_timeout: float = 300.0
    probes: tuple[ProbeSpec, ...] | None = None  # None: the defaults for the point


@dataclass(frozen=True)
class ApplicationGroup:
    members: tuple[Member, ...]
    name: str = ""
    timeout: float = 1800.0


def load_group(path: Path) -> ApplicationGroup:
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"cannot read the group file {path}: {exc.strerror}") from exc
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from exc
    return parse_group(doc, str(path))


def parse_group(doc: dict[str, Any], where: str = "group") -> ApplicationGroup:
    unknown = set(doc) - {"name", "timeout", "vm"}
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    vms = doc.get("vm")
    if not isinstance(vms, list) or not vms:
        raise UsageError(f"{where}: no [[vm]] members")
    members = tuple(_member(vm, f"{where}: vm {n + 1}") for n, vm in enumerate(vms))
    names = [m.name or m.point for m in members]
    if len(set(names)) != len(names):
        raise UsageError(f"{where}: two members share a name (set name = ... apart)")
    return ApplicationGroup(
        members, str(doc.get("name", "")), _seconds(doc, "timeout", 1800, where)
    )


def _member(vm: Any, where: str) -> Member:
    if not isinstance(vm, dict) or not isinstance(vm.get("point"), str):
        raise UsageError(f'{where}: needs point = "<id, prefix or NAME@latest>"')
    unknown = set(vm) - {"point", "name", "boot_timeout", "probes", "probe"}
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    probes: list[ProbeSpec] | None = None
    if "probes" in vm or "probe" in vm:
        probes = [_probe({"kind": k}, where) for k in vm.get("probes", [])]
        probes += [_probe(p, where) for p in vm.get("probe", [])]
    name = vm.get("name")
    return Member(
        vm["point"],
        str(name) if name else None,
        _seconds(vm, "boot_timeout", 300, where),
        tuple(probes) if probes is not None else None,
    )


def _probe(spec: Any, where: str) -> ProbeSpec:
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind not in PROBE_KINDS:
        known = ", ".join(PROBE_KINDS)
        raise UsageError(f"{where}: unknown probe {kind!r} (known: {known})")
    options = {k: v for k, v in spec.items() if k not in ("kind", "timeout")}
    if kind == "tcp" and not isinstance(options.get("port"), int):
        raise UsageError(f"{where}: a tcp probe needs port = <number>")
    if kind == "script" and not isinstance(options.get("run"), str):
        raise UsageError(f'{where}: a script probe needs run = "<command>"')
    return ProbeSpec(kind, options, _seconds(spec, "timeout", 120, where))


def _seconds(doc: dict[str, Any], key: str, default: float, where: str) -> float:
    value = doc.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise UsageError(f"{where}: {key} must be a positive number of seconds")
    return float(value)


def default_probes(applications: dict[str, Any], has_nic: bool) -> tuple[ProbeSpec, ...]:
    """heartbeat, ping (with a NIC), and one probe per writer that held its app."""
    probes = [ProbeSpec("heartbeat")] + ([ProbeSpec("ping")] if has_nic else [])
    for app, (kind, options) in APP_PROBES.items():
        if (applications.get(app) or {}).get("state") == "thawed":
            probes.append(ProbeSpec(kind, dict(options), timeout=300))
    return tuple(probes)
