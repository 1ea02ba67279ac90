"""``surety restore image`` and ``surety restore vm``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from surety.cli.context import open_repo, show_notes
from surety.cli.render import emit_json, out_console, progress_for
from surety.core.units import format_size
from surety.restore.image import ImageRestoreOptions, restore_image
from surety.restore.vm import VmRestoreOptions, VmRestoreResult, restore_vm

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
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
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


def _network_map(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        old, sep, new = value.partition("=")
        if not sep or not old or not new:
            raise click.BadParameter(f"{value!r} is not OLD=NEW")
        pairs.append((old, new))
    return tuple(pairs)


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
@click.option(
    "--network-map",
    "network_map",
    multiple=True,
    metavar="OLD=NEW",
    callback=_network_map,
    help="Attach NICs of network OLD to the existing network NEW (repeatable).",
)
@click.option(
    "--connect",
    "-c",
    "uri",
    default="qemu:///system",
    show_default=True,
    envvar="LIBVIRT_DEFAULT_URI",
    help="libvirt connection URI.",
)
@click.option("--start", is_flag=True, help="Start the VM once it is defined.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace a VM in the way (stopped if running) and existing files, once the restored "
    "disks are written and verified.",
)
@click.option("--json", "json_output", is_flag=True, help="Machine-readable output.")
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
    json_output: bool,
) -> None:
    """Restore a whole VM from POINT: its disks, firmware state and libvirt definition.

    Nothing is changed on the host until every disk is written and verified under a
    temporary name; a failure then rolls the switch-over back.
    """
    repo = open_repo(ctx)
    options = VmRestoreOptions(
        point, name, identity, storage, fmt, network_map, uri, start=start, force=force
    )
    with progress_for(json_output) as progress:
        result = restore_vm(repo, options, progress)
    show_notes(repo)
    if json_output:
        emit_json(vm_result_document(result))
        return
    _print_vm_result(result)


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
