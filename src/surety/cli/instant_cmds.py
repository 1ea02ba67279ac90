"""``surety instant-recover``: run a VM from a restore point now, move it to storage later."""

from __future__ import annotations

import time
from contextlib import closing
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from surety.app.hypervisor import connect_host
from surety.cli.context import open_repo, show_notes
from surety.cli.options import connect_option, json_option, network_map_option, option_stack
from surety.cli.render import emit_json, out_console, progress_for
from surety.core.units import format_size
from surety.restore.instant import (
    DEFAULT_ROOT,
    FinishOptions,
    InstantOptions,
    InstantResult,
    InstantVm,
    ResumeOptions,
    abort_instant,
    finish_instant,
    instant_status,
    resume_instant,
    start_instant,
)

__all__ = ["COMMANDS"]


class _DefaultToStart(click.Group):
    """``surety instant-recover POINT ...`` means ``surety instant-recover start POINT ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["start", *args]
        return super().parse_args(ctx, args)


root_option = click.option(
    "--instant-dir",
    "root",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_ROOT,
    envvar="SURETY_INSTANT_DIR",
    hidden=True,
    help="Where instant VMs keep their records and overlays.",
)
_wait_options = option_stack(
    click.option(
        "--no-wait", is_flag=True, help="Return once the VM runs; do not wait for its agent."
    ),
    click.option(
        "--ready-command",
        metavar="CMD",
        help="Shell command run in the guest until it succeeds: the application is ready "
        "(e.g. 'pg_isready -q').",
    ),
    click.option(
        "--timeout",
        type=float,
        default=900,
        show_default=True,
        help="Seconds to wait for the guest.",
    ),
)
"""How ``start`` and ``resume`` wait for the guest and its application."""


@click.group("instant-recover", cls=_DefaultToStart)
def instant() -> None:
    """Run a VM straight from a restore point (POINT), then finish or abort it.

    \b
    surety instant-recover POINT [--as NAME]      start it on overlays over the repository
    surety instant-recover finish NAME --storage DIR   move its disks while it runs
    surety instant-recover abort NAME             stop it and discard its writes
    surety instant-recover resume NAME            start it again after it stopped
    surety instant-recover list
    """


@instant.command("start")
@click.argument("point")
@click.option("--as", "name", metavar="NAME", help="Name of the VM [default: original].")
@click.option(
    "--identity",
    type=click.Choice(["in-place", "clone"]),
    help="in-place keeps name, UUID, MACs and genid; clone gives new ones "
    "[default: in-place, or clone when --as names another VM].",
)
@network_map_option
@_wait_options
@connect_option
@root_option
@json_option
@click.pass_context
def start_command(
    ctx: click.Context,
    point: str,
    name: str | None,
    identity: str | None,
    network_map: tuple[tuple[str, str], ...],
    no_wait: bool,
    ready_command: str | None,
    timeout: float,
    uri: str,
    root: Path,
    json_output: bool,
) -> None:
    """Start a VM from POINT on local overlays over the repository (served over NBD)."""
    began = time.monotonic()
    repo = open_repo(ctx)
    options = InstantOptions(
        point, name, identity, network_map, root, not no_wait, ready_command, timeout
    )
    with progress_for(json_output) as progress, closing(connect_host(uri)) as host:
        result = start_instant(repo, options, progress, began, host=host)
    show_notes(repo)
    if json_output:
        emit_json(_start_document(result))
        return
    _print_started(result)


def _start_document(result: InstantResult) -> dict[str, Any]:
    return {
        **_vm_document(result.vm),
        "seconds_to_start": round(result.seconds_to_start, 2),
        "seconds_to_ping": _rounded(result.seconds_to_ping),
        "seconds_to_ready": _rounded(result.seconds_to_ready),
        "notes": list(result.notes),
    }


def _vm_document(vm: InstantVm) -> dict[str, Any]:
    document = asdict(vm)
    for disk, entry in zip(vm.disks, document["disks"], strict=True):
        entry["socket"] = disk.socket
    return document


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _print_started(result: InstantResult) -> None:
    vm = result.vm
    kind = f"clone of {vm.point_name}" if vm.identity == "clone" else "in place"
    lines = [f"instant VM {vm.name} ({kind}) runs from restore point {vm.point[:12]}"]
    lines += [
        f"  {d.target}  {d.copy} (its copy)"
        if d.on_copy
        else f"  {d.target}  {d.overlay} over the repository ({format_size(d.size)})"
        for d in vm.disks
    ]
    timing = f"  running after {result.seconds_to_start:.1f} s"
    if result.seconds_to_ping is not None:
        timing += f", guest agent answered after {result.seconds_to_ping:.1f} s"
    if result.seconds_to_ready is not None:
        timing += f", ready after {result.seconds_to_ready:.1f} s"
    lines.append(timing)
    lines.append(
        f"  next: `surety instant-recover finish {vm.name} --storage DIR` (keep it) "
        f"or `surety instant-recover abort {vm.name}` (discard it)"
    )
    out_console.print("\n".join(lines), highlight=False)


@instant.command("finish")
@click.argument("name")
@click.option(
    "--storage",
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for the disks (NAME-vda.qcow2 ...); a rerun may leave it out.",
)
@connect_option
@root_option
@json_option
def finish_command(
    name: str, storage: Path | None, uri: str, root: Path, json_output: bool
) -> None:
    """Move the running instant VM NAME to --storage while it runs, then define it."""
    with progress_for(json_output) as progress, closing(connect_host(uri)) as host:
        result = finish_instant(FinishOptions(name, storage, root), progress, host=host)
    if json_output:
        emit_json(
            {
                **_vm_document(result.vm),
                "copied": result.copied,
                "seconds": round(result.seconds, 2),
            }
        )
        return
    lines = [f"finished {name} in {result.seconds:.1f} s: defined, the repository is not used"]
    lines += [f"  {d.target}  {d.copy}" for d in result.vm.disks]
    out_console.print("\n".join(lines), highlight=False)


@instant.command("abort")
@click.argument("name")
@connect_option
@root_option
@json_option
def abort_command(name: str, uri: str, root: Path, json_output: bool) -> None:
    """Stop the instant VM NAME and discard it (its writes, overlays and servers)."""
    with closing(connect_host(uri)) as host:
        record = abort_instant(name, root, host=host)
    if json_output:
        emit_json({"name": record.name, "aborted": True})
        return
    out_console.print(f"aborted {name}: stopped, overlays and servers removed", highlight=False)


@instant.command("resume")
@click.argument("name")
@_wait_options
@connect_option
@root_option
@json_option
@click.pass_context
def resume_command(
    ctx: click.Context,
    name: str,
    no_wait: bool,
    ready_command: str | None,
    timeout: float,
    uri: str,
    root: Path,
    json_output: bool,
) -> None:
    """Start the instant VM NAME again after it stopped (power-off, host reboot).

    Its writes are kept; NBD servers that are gone are started again, which needs
    the repository: the one recorded at start (a path or s3://...) unless --repo
    names another.
    """
    options = ResumeOptions(name, root, not no_wait, ready_command, timeout)
    with progress_for(json_output) as progress, closing(connect_host(uri)) as host:
        result = resume_instant(
            options, lambda location: open_repo(ctx, location), progress, host=host
        )
    if json_output:
        emit_json(_start_document(result))
        return
    _print_started(result)


@instant.command("list")
@connect_option
@root_option
@json_option
def list_command(uri: str, root: Path, json_output: bool) -> None:
    """Instant VMs on this host and their state."""
    with closing(connect_host(uri)) as host:
        found = instant_status(root, host=host)
    if json_output:
        emit_json(
            [
                {**_vm_document(s.vm), "running": s.running, "servers_alive": s.servers_alive}
                for s in found
            ]
        )
        return
    if not found:
        out_console.print("no instant VMs")
        return
    for status in found:
        vm = status.vm
        out_console.print(
            f"{vm.name:<20} {vm.phase:<10} {'running' if status.running else 'not running':<12} "
            f"point {vm.point[:12]}  servers {status.servers_alive}/{len(vm.disks)}",
            highlight=False,
        )


COMMANDS = [instant]
