"""``surety restore image`` and ``surety restore vm``.

``restore vm``'s use cases (libvirt, restore mode, the writers' procedures) are
imported when it runs: ``restore image`` never needs them, and a short restore's
CPU is much import time.
"""

from __future__ import annotations

from contextlib import closing
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from surety.cli.context import open_repo, show_notes
from surety.cli.options import (
    connect_option,
    json_option,
    network_map_option,
    settings_option,
)
from surety.cli.render import emit_json, out_console, progress_for
from surety.core.units import format_size
from surety.restore.image import ImageRestoreOptions, restore_image

if TYPE_CHECKING:
    from surety.restore.vm import VmRestoreResult

__all__ = ["COMMANDS"]


@click.group()
def restore() -> None:
    """Restore from restore points."""


@restore.command("image")
@click.argument("point")
@click.option("--disk", help="Disk to restore (needed when the point has several).")
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Path(path_type=Path),
    help="Target file (written sparse) or block device.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing target file.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["raw", "qcow2"]),
    default="raw",
    show_default=True,
    help="Image format of a file target.",
)
@json_option
@click.pass_context
def restore_image_command(
    ctx: click.Context,
    point: str,
    disk: str | None,
    target: Path,
    overwrite: bool,
    fmt: str,
    json_output: bool,
) -> None:
    """Restore one disk of POINT (id, id prefix or NAME@latest) to a file or device."""
    repo = open_repo(ctx)
    options = ImageRestoreOptions(point, target, disk, overwrite, format=fmt)
    with progress_for(json_output) as progress:
        result = restore_image(repo, options, progress)
    show_notes(repo)
    if json_output:
        emit_json(
            {
                "point": result.point.id,
                "disk": result.disk,
                "target": str(result.target),
                "size": result.size,
                "written": result.written,
            }
        )
        return
    out_console.print(
        f"restored {result.disk} of {result.point.id[:12]} to {result.target} "
        f"({format_size(result.size)}, {format_size(result.written)} data, "
        "every chunk verified)",
        highlight=False,
    )


@restore.command("vm")
@click.argument("point")
@click.option("--as", "name", metavar="NAME", help="Name of the restored VM [default: original].")
@click.option(
    "--identity",
    type=click.Choice(["in-place", "clone"]),
    help="in-place keeps name, UUID, MACs and genid (disaster recovery); clone gives new ones "
    "[default: in-place, or clone when --as names another VM].",
)
@click.option(
    "--storage",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for the disk files (NAME-vda.qcow2 ...) [default: beside each original disk].",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["qcow2", "raw"]),
    help="Image format of the disk files [default: each disk's original format].",
)
@network_map_option
@connect_option
@click.option("--start", is_flag=True, help="Start the VM once it is defined.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace a VM in the way (stopped if running) and existing files, once the restored "
    "disks are written and verified.",
)
@click.option(
    "--naive",
    is_flag=True,
    help="Boot the image as it is: no restore mode, no application restore procedure.",
)
@click.option(
    "--role",
    type=click.Choice(["replica", "standby", "primary", "source", "authoritative"]),
    help="What the restored member of a replicated application becomes: a replica of "
    "--partner (standby), or a new history of its own (primary) [default: replica with "
    "--partner, else primary]. A domain controller (samba-ad) rejoins a surviving DC by "
    "default; authoritative (or primary) restores the whole domain from it.",
)
@click.option("--partner", metavar="HOST[:PORT]", help="The surviving member to rejoin.")
@settings_option(
    "Option of a restore procedure, e.g. postgresql.user=replicator, mariadb.password_file=FILE"
)
@json_option
@click.pass_context
def restore_vm_command(
    ctx: click.Context,
    point: str,
    name: str | None,
    identity: str | None,
    storage: Path | None,
    fmt: str | None,
    network_map: tuple[tuple[str, str], ...],
    uri: str,
    start: bool,
    force: bool,
    naive: bool,
    role: str | None,
    partner: str | None,
    settings: dict[str, str],
    json_output: bool,
) -> None:
    """Restore a whole VM from POINT: its disks, firmware state and libvirt definition.

    Nothing is changed on the host until every disk is written and verified under a
    temporary name; a failure then rolls the switch-over back. Applications that a
    writer held at the snapshot are restored the way their vendors require: the VM
    boots with them held back (restore mode), each one's restore procedure runs,
    then they start (needs --start; --naive skips all of it).
    """
    from surety.app.hypervisor import connect_host  # noqa: PLC0415 -- see the module's docstring
    from surety.restore.mode import AppRestoreOptions, application_restore  # noqa: PLC0415
    from surety.restore.vm import VmRestoreOptions, restore_vm  # noqa: PLC0415

    repo = open_repo(ctx)
    options = VmRestoreOptions(
        point, name, identity, storage, fmt, network_map, start=start, force=force
    )
    with progress_for(json_output) as progress, closing(connect_host(uri)) as host:
        aware = application_restore(
            repo.resolve(point),
            AppRestoreOptions(naive, role, partner, settings),
            vm_name=name,
            start=start,
            progress=progress,
        )
        result = restore_vm(repo, options, progress, [aware] if aware else [], host=host)
    show_notes(repo)
    evidence = aware.evidence if aware else None
    if json_output:
        emit_json({**vm_result_document(result), "applications_restore": evidence})
        return
    _print_vm_result(result)
    _print_application_restore(evidence, naive)


def _print_application_restore(evidence: dict[str, Any] | None, naive: bool) -> None:
    if naive:
        out_console.print("  naive restore: the image booted as it is (no restore procedure)")
        return
    if not evidence:
        return
    mode = evidence.get("restore_mode") or {}
    if mode.get("held"):
        out_console.print(
            f"  restore mode: held {', '.join(mode['held'])} on {mode.get('on')}; "
            f"agent answered after {mode.get('agent_after_seconds')} s",
            highlight=False,
        )
    for app, found in evidence.get("procedures", {}).items():
        summary = found.get("summary") or "; ".join(
            c.get("summary", "") for c in found.get("clusters", [])
        )
        out_console.print(f"  {app}: {summary}", highlight=False)


def vm_result_document(result: VmRestoreResult) -> dict[str, Any]:
    """Everything a later restore procedure needs, as JSON."""
    return {
        **asdict(result.vm),
        "point_name": result.point.name,
        "started": result.started,
        "written": result.written,
        "networks": result.networks,
        "networks_created": list(result.networks_created),
        "replaced": [asdict(d) for d in result.replaced],
        "superseded_files": list(result.superseded_files),
        "dropped_disks": list(result.dropped_disks),
        "seconds": round(result.seconds, 3),
    }


def _print_vm_result(result: VmRestoreResult) -> None:
    vm = result.vm
    lines = [
        f"restored VM {vm.name} ({vm.identity}"
        + (f" of {vm.original_name}" if vm.identity == "clone" else "")
        + f") from {vm.point[:12]} ({vm.consistency}-consistent) in {result.seconds:.1f} s",
        f"  uuid {vm.uuid}" + (f", genid {vm.genid}" if vm.genid else ""),
    ]
    lines += [f"  {d.target}  {d.path} ({d.format}, {format_size(d.size)})" for d in vm.disks]
    lines.append(f"  {format_size(result.written)} data written, every chunk verified")
    lines += [
        f"  nic {n.mac}"
        + (f" on network {n.network}" if n.network else f" ({n.type})")
        + (f" (was {n.original_mac})" if n.original_mac and n.original_mac != n.mac else "")
        for n in vm.nics
    ]
    lines += [f"  replaced VM {d.name}" for d in result.replaced]
    lines += [f"  recreated network {n}" for n in result.networks_created]
    lines += [f"  no longer used (left in place): {f}" for f in result.superseded_files]
    lines.append(
        "  started" if result.started else f"  defined, not started (virsh start {vm.name})"
    )
    out_console.print("\n".join(lines), highlight=False)


COMMANDS = [restore]
