"""Item-level recovery: tables of a restore point, dumped by the app's own tools.

``extract_items`` (``surety items postgresql|mariadb``):

1. **Check** everything that needs no VM: the names (``verify.dumptools``),
   the target file (refused if it exists, unless ``force``), the restore point
   and that a writer held the application at its instant (``state ==
   "thawed"``; otherwise the error lists what the point holds).
2. **Boot** the point in a lab (``verify.lab``: isolated, throwaway overlay)
   and wait for the guest agent, then for the application to accept
   connections - both within ``timeout``.
3. **Dump** inside the guest into a private directory under ``/tmp`` with the
   app's tool (``pg_dump -t``, ``mysqldump``); a failure (no such table or
   database) is a ``LabError`` carrying the tool's message on one line.
4. **Copy** the dump out through the guest agent in 1 MiB pieces to a
   temporary name beside the target, compare its size and SHA-256 with the
   guest's, fsync, and only then give it the target's name (``os.link``, so a
   file that appeared meanwhile is not replaced without ``force``).

The lab is torn down in ``finally`` (``open_lab``); a failed or interrupted
extraction leaves no file under the target's name.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from surety.core.errors import LabError, SuretyError, TargetError, UsageError
from surety.core.progress import Progress
from surety.core.units import GiB, MiB, format_size
from surety.hypervisor.port import HypervisorHost
from surety.quiesce.channel import GuestChannel
from surety.repo.manifest import Manifest
from surety.repo.repository import Repository
from surety.verify import dumptools
from surety.verify.dumptools import DumpRequest
from surety.verify.lab import LabVm, open_lab

__all__ = [
    "Clock",
    "ItemsOptions",
    "ItemsResult",
    "atomic_file",
    "check_options",
    "check_target",
    "console_on_failure",
    "copy_out",
    "extract_items",
    "guest_output",
    "lab_vm",
    "recorded_app",
    "wait_for_agent",
]

PIECE = MiB  # guest-file-read count per call


@dataclass(frozen=True)
class ItemsOptions:
    point: str
    request: DumpRequest
    target: Path
    force: bool = False
    timeout: float = 900.0  # boot + the app accepting connections
    dump_timeout: float = 3600.0
    max_bytes: int = 2 * GiB
    port: int | None = None  # PostgreSQL: which recorded cluster (default: the first)


@dataclass(frozen=True)
class ItemsResult:
    point: Manifest
    request: DumpRequest
    path: Path
    size: int
    sha256: str
    lab: str
    seconds: dict[str, float]  # boot (to the agent), app_ready, dump, copy, total

    def document(self) -> dict[str, Any]:
        return {
            "point": self.point.id,
            "vm": self.point.name,
            "app": self.request.app,
            "database": self.request.database,
            "tables": list(self.request.tables),
            "format": self.request.format,
            "path": str(self.path),
            "bytes": self.size,
            "sha256": self.sha256,
            "lab": self.lab,
            "seconds": self.seconds,
        }


def check_options(options: ItemsOptions) -> None:
    """What can be refused before the repository is opened: the names and the target."""
    dumptools.check_request(options.request)
    check_target(options.target, options.force)


def extract_items(
    repo: Repository, options: ItemsOptions, progress: Progress, *, host: HypervisorHost
) -> ItemsResult:
    """Dump the asked items from a lab on ``host`` (the caller's, left open)."""
    check_options(options)
    point = repo.resolve(options.point)
    port = 0
    if options.request.app == "postgresql":
        port = dumptools.cluster_port(recorded_app(point, "postgresql"), options.port)
    else:
        recorded_app(point, options.request.app)
    clock = Clock(time.monotonic())
    with lab_vm(host, repo, point, progress, options.timeout, clock) as (lab_id, vm):
        with console_on_failure(vm, progress):
            _wait(vm.channel, clock.start + options.timeout, options, port, clock)
        size, digest = _dump_and_copy(vm.channel, vm.domain, options, port, clock, progress)
    clock.laps["total"] = round(time.monotonic() - clock.start, 1)
    return ItemsResult(point, options.request, options.target, size, digest, lab_id, clock.laps)


def recorded_app(point: Manifest, app: str) -> dict[str, Any]:
    """The writer metadata of ``app`` if a writer held it at the point's instant."""
    meta = point.applications.get(app) or {}
    if meta.get("state") == "thawed":
        return dict(meta)
    held = sorted(a for a, m in point.applications.items() if (m or {}).get("state") == "thawed")
    has = ", ".join(held) or "none"
    why = f"its {app} writer ended {meta.get('state')!r}" if meta else f"no {app} writer ran"
    raise UsageError(
        f"restore point {point.id[:12]} ({point.name}) holds no quiesced {app}: {why} "
        f"(applications held: {has})"
    )


def check_target(target: Path, force: bool) -> None:
    """Refuse a target that exists (unless ``force``), is not a file, or has no directory."""
    if not target.parent.is_dir():
        raise TargetError(f"{target.parent} is not a directory")
    if target.is_dir():
        raise TargetError(f"{target} is a directory; give a file name")
    if (target.exists() or target.is_symlink()) and not force:
        raise TargetError(f"{target} exists; remove it or use --force to replace it")


@contextmanager
def lab_vm(  # noqa: PLR0917 - the lab's inputs, then its deadline
    host: HypervisorHost,
    repo: Repository,
    point: Manifest,
    progress: Progress,
    timeout: float,
    clock: Clock,
) -> Iterator[tuple[str, LabVm]]:
    """``point`` booted in a new lab on ``host``, its guest agent answering within ``timeout``
    of ``clock.start`` (lap ``boot``): (the lab's id, the VM). The lab goes when the block ends."""
    with open_lab(host, repo, progress) as lab:
        vm = lab.boot(point)
        with console_on_failure(vm, progress):
            wait_for_agent(vm.channel, clock.start + timeout, timeout, clock)
        yield lab.id, vm


@contextmanager
def console_on_failure(vm: LabVm, progress: Progress) -> Iterator[None]:
    """The last console lines of ``vm`` as notes when the block raises a ``LabError``."""
    try:
        yield
    except LabError:
        for line in vm.console_tail(3).splitlines():
            progress.note(f"{vm.name} console: {line}")
        raise


class Clock:
    """Seconds per step: each lap runs from the end of the previous one."""

    def __init__(self, start: float) -> None:
        self.start = self.mark = start
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.laps[name], self.mark = round(now - self.mark, 1), now


def _wait(
    channel: GuestChannel, deadline: float, options: ItemsOptions, port: int, clock: Clock
) -> None:
    """The application accepts connections before ``deadline``."""
    app, limit = options.request.app, f"{options.timeout:.0f} s"
    last: list[str] = []
    if not _until(deadline, lambda: _answers(channel, dumptools.ready_argv(app, port), last)):
        where = f" on port {port}" if app == "postgresql" else ""
        seen = f" (last: {last[-1]})" if last and last[-1] else ""
        raise LabError(f"{app} did not accept connections{where} within {limit}{seen}")
    clock.lap("app_ready")


def wait_for_agent(channel: GuestChannel, deadline: float, timeout: float, clock: Clock) -> None:
    """The guest agent answers before ``deadline`` (lap ``boot``), or a ``LabError``."""
    if not _until(deadline, lambda: _pings(channel)):
        raise LabError(f"the guest agent of the restored VM did not answer within {timeout:.0f} s")
    clock.lap("boot")


def _until(deadline: float, ready: Callable[[], bool]) -> bool:
    while time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    return False


def _pings(channel: GuestChannel) -> bool:
    try:
        channel.ping(timeout=3)
    except SuretyError:
        return False
    return True


def _answers(channel: GuestChannel, argv: list[str], last: list[str]) -> bool:
    try:
        out = channel.run(argv, timeout=30)
    except SuretyError as exc:
        last.append(str(exc))
        return False
    last.append(dumptools.one_line(out.text(), 200))
    return out.ok


class AgentFiles(Protocol):
    """The raw guest-agent call ``guest-file-*`` go through (``GuestAgent.agent``)."""

    def agent(
        self, command: str, arguments: dict[str, Any] | None = None, timeout: int = 10
    ) -> Any: ...


def _dump_and_copy(  # noqa: PLR0917 - one step of extract_items
    channel: GuestChannel,
    files: AgentFiles,
    options: ItemsOptions,
    port: int,
    clock: Clock,
    progress: Progress,
) -> tuple[int, str]:
    request = options.request
    progress.phase(f"{request.app}: dumping {', '.join(request.tables)}")
    workdir = guest_output(channel, dumptools.tempdir_argv(request.app), "mktemp").strip()
    try:
        path = f"{workdir}/dump"
        tool = dumptools.dump_argv(request, port, path)
        guest_output(channel, tool, dumptools.DUMP_TOOLS[request.app], options.dump_timeout)
        clock.lap("dump")
        size = int(guest_output(channel, ["stat", "-c", "%s", path], "stat"))
        if size > options.max_bytes:
            raise LabError(
                f"the dump is {format_size(size)}, above the limit of "
                f"{format_size(options.max_bytes)}; dump fewer tables at once"
            )
        digest = guest_output(channel, ["sha256sum", path], "sha256sum", 600).split()[0]
        progress.phase("copying the dump out", size)
        with atomic_file(options.target, options.force) as out:
            copied = copy_out(files, path, out, progress)
            if copied.digest != digest or copied.size != size:
                raise LabError(
                    f"the copy of the dump does not match the guest's ({copied.size} of "
                    f"{size} bytes, sha256 {copied.digest[:12]} vs {digest[:12]})"
                )
        clock.lap("copy")
        return size, digest
    finally:
        with suppress(SuretyError):
            channel.run(["rm", "-rf", "--", workdir], timeout=60)


def guest_output(
    channel: GuestChannel,
    argv: list[str],
    tool: str,
    timeout: float = 120,
    *,
    where: str = "the restored VM",
    error: type[SuretyError] = LabError,
) -> str:
    """``argv``'s stdout; an ``error`` with its stderr on one line when it fails."""
    try:
        out = channel.run(argv, timeout=timeout)
    except SuretyError as exc:
        raise error(f"{tool} in {where}: {exc}") from exc
    if not out.ok:
        message = dumptools.one_line(out.stderr.decode(errors="replace") or out.text())
        raise error(f"{tool} failed (exit {out.exitcode}): {message}")
    return out.stdout.decode(errors="replace").strip()


@dataclass(frozen=True)
class Copied:
    size: int
    digest: str


def copy_out(files: AgentFiles, path: str, out: BinaryIO, progress: Progress) -> Copied:
    """Stream guest file ``path`` into ``out`` (``guest-file-read``, ``PIECE`` at a time)."""
    try:
        handle = files.agent("guest-file-open", {"path": path, "mode": "r"})
    except SuretyError as exc:
        raise LabError(f"cannot open {path} in the restored VM: {exc}") from exc
    sha, size = hashlib.sha256(), 0
    try:
        while True:
            reply = files.agent("guest-file-read", {"handle": handle, "count": PIECE}, 60)
            data = base64.b64decode(reply.get("buf-b64") or "")
            out.write(data)
            sha.update(data)
            size += len(data)
            progress.advance(len(data))
            if reply.get("eof") or not reply.get("count"):
                return Copied(size, sha.hexdigest())
    except SuretyError as exc:
        raise LabError(f"reading {path} from the restored VM: {exc}") from exc
    finally:
        with suppress(SuretyError):
            files.agent("guest-file-close", {"handle": handle})


@contextmanager
def atomic_file(target: Path, force: bool) -> Iterator[BinaryIO]:
    """A new file that appears under ``target``'s name complete and fsynced, or not at all."""
    temporary = target.with_name(f".{target.name}.surety-{secrets.token_hex(4)}")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise TargetError(f"cannot write in {target.parent}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        _publish(temporary, target, force)
    except OSError as exc:
        raise TargetError(f"writing {target}: {exc.strerror}") from exc
    finally:
        temporary.unlink(missing_ok=True)


def _publish(temporary: Path, target: Path, force: bool) -> None:
    if force:
        os.replace(temporary, target)
    else:
        try:
            os.link(temporary, target)
        except FileExistsError:
            raise TargetError(f"{target} appeared meanwhile; use --force to replace it") from None
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
