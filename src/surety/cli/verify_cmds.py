"""``surety verify``: boot restore points in an isolated lab and prove they work."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import click

from surety.app.catalog import open_catalog
from surety.app.hypervisor import connect_host
from surety.cli.context import open_repo, show_notes
from surety.cli.options import catalog_option, connect_option
from surety.cli.render import emit_json, out_console, progress_for
from surety.core.errors import UsageError, VerificationFailed
from surety.verify.application_group import ApplicationGroup, Member, load_group, parse_group
from surety.verify.run import VerifyOptions, verify

__all__ = ["COMMANDS"]


@click.command("verify")
@click.argument("points", nargs=-1)
@click.option(
    "--group",
    "group_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Application group file (TOML): members, boot order, probes.",
)
@click.option(
    "--probe",
    "probes",
    multiple=True,
    metavar="KIND",
    help="Probes for POINTS (repeatable; default: heartbeat, ping and the apps' probes).",
)
@click.option(
    "--timeout", type=float, default=1800, show_default=True, help="Seconds for everything."
)
@click.option(
    "--proofs",
    type=click.Path(path_type=Path, file_okay=False),
    default="/var/lib/surety/proofs",
    show_default=True,
    envvar="SURETY_PROOFS",
    help="Where proofs are written (one directory per verification).",
)
@catalog_option
@connect_option
@click.option("--json", "json_output", is_flag=True, help="Print the proof as JSON.")
@click.pass_context
def verify_cmd(
    ctx: click.Context,
    points: tuple[str, ...],
    group_file: Path | None,
    probes: tuple[str, ...],
    timeout: float,
    proofs: Path,
    catalog: Path,
    uri: str,
    json_output: bool,
) -> None:
    """Boot POINTS (in this order) or a --group in an isolated lab and probe them.

    Writes a proof (JSON + HTML) and marks each restore point verified or
    failed in the catalog (`surety points` shows it). Exit 16 if a probe failed.
    """
    group = _group(points, group_file, probes, timeout)
    repo = open_repo(ctx)
    with progress_for(json_output) as progress, closing(connect_host(uri)) as host:
        result = verify(
            repo, VerifyOptions(group, proofs), progress, host=host, catalog=open_catalog(catalog)
        )
    show_notes(repo)
    if json_output:
        emit_json({**result.proof, "proof_dir": str(result.proof_dir)})
    else:
        _render(result.proof)
        out_console.print(f"proof: {result.proof_dir / 'proof.html'}")
    if not result.passed:
        raise VerificationFailed(f"verification failed; see {result.proof_dir / 'proof.html'}")


def _group(
    points: tuple[str, ...], group_file: Path | None, probes: tuple[str, ...], timeout: float
) -> ApplicationGroup:
    if group_file is not None and points:
        raise UsageError("give restore points or --group FILE, not both")
    if group_file is not None:
        if probes:
            raise UsageError("--probe applies to POINTS; a group file names its own probes")
        return load_group(group_file)
    if not points:
        raise UsageError("nothing to verify: give restore points (NAME@latest, id) or --group FILE")
    doc: dict[str, object] = {
        "timeout": timeout,
        "vm": [{"point": p, **({"probes": list(probes)} if probes else {})} for p in points],
    }
    group = parse_group(doc, "command line")
    return ApplicationGroup(
        tuple(Member(m.point, m.name, m.boot_timeout, m.probes) for m in group.members), "", timeout
    )


def _render(proof: dict[str, object]) -> None:
    vms = proof.get("vms")
    for vm in vms if isinstance(vms, list) else []:
        style = "green" if vm["result"] == "passed" else "red"
        boot = f", agent after {vm['boot_seconds']} s" if vm.get("boot_seconds") else ""
        out_console.print(
            f"[{style}]{vm['result']}[/] {vm['name']} (point {vm['point'][:12]}{boot})"
            + (f": {vm['reason']}" if vm.get("reason") else ""),
            highlight=False,
        )
        for p in vm["probes"]:
            mark = "[green]ok[/]" if p["ok"] else "[red]FAILED[/]"
            out_console.print(
                f"  {mark} {p['probe']} ({p['seconds']:.1f} s): {p['evidence']}",
                highlight=False,
                soft_wrap=True,
            )


COMMANDS = [verify_cmd]
