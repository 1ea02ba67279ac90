"""``surety status`` and ``surety jobs list|history|log|run``: what is protected, what runs
when, what happened; start a job now.

``status`` exits ``NEEDS_ATTENTION_EXIT`` (20) when a person is needed, so
monitoring systems can run it. ``jobs run`` hands the job to the running service
(a request in the catalog) when one beats; otherwise it runs in the foreground.
"""

from __future__ import annotations

import os
from contextlib import closing
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from surety.app.catalog import open_catalog
from surety.app.facts import run_json
from surety.app.hypervisor import connect_host
from surety.app.status import StatusReport, gather_jobs, gather_status, read_domains, this_host
from surety.catalog import Catalog, Run
from surety.cli.options import config_option, json_option
from surety.cli.render import emit_json, err_console, out_console
from surety.config import load_config, select_vms
from surety.config.model import Config
from surety.core.errors import UsageError
from surety.jobs.spec import JobSpec
from surety.jobs.status import VmStatus, live_heartbeat

__all__ = ["COMMANDS", "NEEDS_ATTENTION_EXIT"]

NEEDS_ATTENTION_EXIT = 20
"""``surety status``'s exit code when something needs a person: a VM unprotected, its last
run failed, its RPO violated, or no service running while policies exist."""

_STYLE = {
    "ok": "green",
    "warning": "yellow",
    "gone": "dim",
    "unprotected": "red",
    "failed": "red",
    "rpo-violated": "red",
}


def _config(path: Path) -> Config:
    return load_config(path)


def _catalog(config: Config) -> Catalog:
    return open_catalog(config.service.catalog)


@click.command("status")
@config_option
@json_option
@click.pass_context
def status_cmd(ctx: click.Context, config: Path, json_output: bool) -> None:
    """Every VM of this host: policy (or unprotected), last and last verified restore point,
    RPO, next run, last error; and whether the service runs.

    Exit 20 when something needs a person (monitoring systems run this)."""
    settings = _config(config)
    with closing(connect_host(settings.service.libvirt_uri)) as host:
        report = gather_status(settings, host=host, catalog=_catalog(settings), now=_now())
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    if json_output:
        emit_json([s.to_json() for s in report.statuses])
        _service_line(report, err_console.print)
    else:
        _render_status(report)
    if report.attention:
        ctx.exit(NEEDS_ATTENTION_EXIT)


def _render_status(report: StatusReport) -> None:
    table = Table(box=None, pad_edge=False)
    for column in ("VM", "RUN", "POLICY", "STATE", "LAST POINT", "CONSISTENCY", "VERIFIED"):
        table.add_column(column)
    for column in ("RPO", "NEXT RUN", "LAST ERROR"):
        table.add_column(column)
    for s in report.statuses:
        table.add_row(
            s.vm,
            "yes" if s.running else "no",
            s.policy or "-",
            f"[{_STYLE.get(s.state, 'white')}]{s.state}[/]",
            _point(s.last_point, s.last_point_at),
            s.last_consistency or "-",
            (s.last_verified_point or "-")[:12],
            {True: "met", False: "VIOLATED", None: "-"}[s.rpo_met],
            _local(s.next_run),
            _error(s),
        )
    if report.statuses:
        out_console.print(table)
    else:
        out_console.print("no VMs on this host and no restore points")
    _service_line(report, out_console.print)


def _service_line(report: StatusReport, print_line: Any) -> None:
    beat = report.heartbeat
    if beat is None:
        print_line(f"service: [red]not running[/] on {report.host} (start `surety service`)")
    else:
        print_line(
            f"service: running on {beat.host} (pid {beat.pid}, last beat {_local(beat.beat)})"
        )


def _point(point: str | None, at: str | None) -> str:
    return f"{point[:12]} ({_local(at)})" if point else "-"


def _error(s: VmStatus) -> str:
    text = s.last_error or ""
    if s.hint:
        text += f" - {s.hint}" if text else s.hint
    return text or "; ".join(s.notes) or ""


def _local(iso: str | None) -> str:
    """An ISO time as local time to the minute, for tables."""
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _now() -> datetime:
    return datetime.now(UTC)


@click.group("jobs")
def jobs_group() -> None:
    """Jobs of the policies: what runs when, what happened, start one now."""


@jobs_group.command("list")
@config_option
@json_option
def jobs_list(config: Path, json_output: bool) -> None:
    """Every job (POLICY:KIND): the VMs it covers, schedule, next run, last run."""
    settings = _config(config)
    with closing(connect_host(settings.service.libvirt_uri)) as host:
        rows = gather_jobs(settings, host=host, catalog=_catalog(settings), now=_now())
    if json_output:
        emit_json([row.to_json() for row in rows])
        return
    table = Table(box=None, pad_edge=False)
    for column in ("JOB", "VMS", "SCHEDULE", "NEXT RUN", "LAST RUN"):
        table.add_column(column)
    for row in rows:
        last = f"{row.last_run_state} ({_local(row.last_run_ended)})" if row.last_run_state else "-"
        table.add_row(row.job, ", ".join(row.vms) or "-", row.schedule, _local(row.next_run), last)
    out_console.print(table if rows else "no policies in the configuration")


@jobs_group.command("history")
@click.argument("name", required=False)
@click.option("--vm", help="Only runs for this VM.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@config_option
@json_option
def jobs_history(
    name: str | None, vm: str | None, limit: int, config: Path, json_output: bool
) -> None:
    """Runs, newest first: of job NAME (POLICY:KIND), or of a policy NAME, or all."""
    catalog = _catalog(_config(config))
    job, policy = (name, None) if name and ":" in name else (None, name)
    runs = catalog.runs(job=job, policy=policy, vm=vm, limit=limit)
    if json_output:
        emit_json([run_json(run) for run in runs])
        return
    table = Table(box=None, pad_edge=False)
    for column in ("ID", "JOB", "VM", "TRY", "STATE", "STARTED", "ENDED", "POINT", "ERROR"):
        table.add_column(column)
    for run in runs:
        result = run.result
        table.add_row(
            str(run.id),
            run.job,
            run.vm or "-",
            str(run.attempt),
            f"[{_STYLE.get(_state_style(run.state), 'white')}]{run.state}[/]",
            _local(run.started),
            _local(run.ended),
            (result.point or "-")[:12] if result else "-",
            (result.error or "") if result else "",
        )
    out_console.print(table if runs else "no runs recorded yet")


def _state_style(state: str) -> str:
    if state in ("failed", "interrupted"):
        return "failed"
    return "ok" if state == "succeeded" else "warning"


@jobs_group.command("log")
@click.argument("run_id", type=int)
@config_option
@json_option
def jobs_log(run_id: int, config: Path, json_output: bool) -> None:
    """One run: its result, its log lines and its last progress."""
    catalog = _catalog(_config(config))
    run = catalog.run(run_id)
    lines, progress = catalog.run_log(run_id), catalog.progress(run_id)
    if json_output:
        emit_json({**run_json(run), "log": lines, "progress": progress})
        return
    out_console.print(
        f"run {run.id}: {run.job} {run.vm or ''} attempt {run.attempt} on {run.host}: "
        f"[bold]{run.state}[/] (started {_local(run.started)}, ended {_local(run.ended)})",
        highlight=False,
    )
    result = run.result
    if result is not None:
        for label, value in (
            ("point", result.point),
            ("consistency", result.consistency),
            ("error", result.error),
            ("what to do", result.hint),
        ):
            if value:
                out_console.print(f"  {label}: {value}", highlight=False, soft_wrap=True)
        for warning in result.warnings:
            out_console.print(f"  [yellow]warning:[/] {warning}", highlight=False)
    if progress is not None and run.state == "running":
        total = f"/{progress['total']}" if progress["total"] else ""
        out_console.print(f"  progress: {progress['phase']} {progress['done']}{total}")
    for line in lines:
        out_console.print(line, highlight=False, soft_wrap=True, markup=False)


@jobs_group.command("run")
@click.argument("name")
@click.option("--vm", help="Only this VM of the policy (backup and copy jobs).")
@config_option
@json_option
@click.pass_context
def jobs_run(
    ctx: click.Context, name: str, vm: str | None, config: Path, json_output: bool
) -> None:
    """Start job NAME (POLICY:KIND, or POLICY for its backup) now: handed to the running
    service when there is one, else run here in the foreground (exit 1 if a run failed)."""
    settings = _config(config)
    job = _job_name(settings, name)
    catalog = _catalog(settings)
    beat = live_heartbeat(catalog.heartbeats(), this_host(), _now())
    if beat is not None:
        request = catalog.request_run(job, vm, by=f"cli (pid {os.getpid()})")
        if json_output:
            emit_json({"request": request, "job": job, "vm": vm, "service": asdict(beat)})
            return
        out_console.print(
            f"{job}{f' for {vm}' if vm else ''}: handed to the service (pid {beat.pid} on "
            f"{beat.host}): run ids follow in `surety jobs history`",
            highlight=False,
        )
        return
    runs = _run_here(settings, JobSpec.for_job(job, vm), catalog)
    if json_output:
        emit_json([run_json(run) for run in runs])
    else:
        for run in runs:
            result = run.result
            out_console.print(
                f"run {run.id}: {run.job} {run.vm or ''}: {run.state}"
                + (f" (point {result.point[:12]})" if result and result.point else "")
                + (f": {result.error}" if result and result.error else ""),
                highlight=False,
                soft_wrap=True,
            )
    if any(run.state == "failed" for run in runs):
        ctx.exit(1)


def _run_here(settings: Config, spec: JobSpec, catalog: Catalog) -> list[Run]:
    """Each run of ``spec`` in this process, recorded in the catalog as the service does."""
    # the service worker's wiring (backup, verify, check) is imported only to run a job here
    from surety.service.worker import run_one  # noqa: PLC0415

    vms: list[str | None] = [spec.vm]
    if spec.kind == "backup" and spec.vm is None:
        with closing(connect_host(settings.service.libvirt_uri)) as host:
            tags = {n: t for n, (_, t) in read_domains(host).items()}
        vms = list(select_vms(settings.policies[spec.policy].selection, tags))
        if not vms:
            raise UsageError(f"policy {spec.policy} selects no VM on this host")
    runs = []
    for vm in vms:
        one = JobSpec(spec.job, spec.kind, spec.policy, vm)
        run_id = catalog.create_run(
            job=one.job, kind=one.kind, policy=one.policy, vm=vm, host=this_host()
        )
        catalog.mark_running(run_id, os.getpid())
        catalog.append_log(run_id, f"started by hand in the foreground (pid {os.getpid()})")
        err_console.print(f"run {run_id}: {one.job} {vm or ''} ...", highlight=False)
        catalog.finish_run(run_id, run_one(one, run_id, settings, catalog))
        runs.append(catalog.run(run_id))
    return runs


def _job_name(config: Config, name: str) -> str:
    """``name`` as a job of the configuration: POLICY:KIND, or POLICY for its backup."""
    policy_name, _, kind = name.partition(":")
    kind = kind or "backup"
    policy = config.policies.get(policy_name)
    if policy is None:
        known = ", ".join(sorted(config.policies)) or "none"
        raise UsageError(f"no policy {policy_name!r} in {config.path} (policies: {known})")
    attribute = {"verify": "verify", "check": "check", "copy": "copy_to"}.get(kind)
    if kind not in ("backup", "verify", "check", "copy") or (
        attribute is not None and getattr(policy, attribute) is None
    ):
        raise UsageError(f"policy {policy_name} has no {kind} job (`surety jobs list`)")
    return f"{policy_name}:{kind}"


COMMANDS = [status_cmd, jobs_group]
