"""One run in a process of its own: ``python -m surety.service.worker`` (the service starts it).

Reads one JSON object on stdin, ``{"spec": JobSpec JSON, "run_id": N, "config": PATH}``,
then wires the run through ``surety.app`` (the configuration, the catalog, the
policy's repository opened with its passphrase file and its own S3 settings,
``surety.app.configured``; a copy job's target likewise, the libvirt host), marks the
run ``running`` with its pid, calls ``surety.jobs.execute`` with a ``Progress`` sink
that writes the catalog (``set_progress`` at most once a second, notes and phases
as log lines), and records the result with ``finish_run``. Every ``SuretyError``
on the way (no such repository, wrong passphrase...) is a ``failed`` result with
its hint; SIGTERM/SIGINT stop the run as the CLI stops a command (a backup ends
cleanly: guest thawed, nothing committed) and it is recorded ``interrupted``. A
bug (any other exception) is recorded ``failed`` with its one-line message, its
traceback goes to stderr (the service's log), and the exit code is 1.

Exit codes: 0 when a result was recorded, 1 for a bug, 2 for a bad order on stdin.

The spare (``surety.service.runner``): a worker started ahead of need gets
``SURETY_WORKER_PREPARE=CONFIG`` in its environment (taken out again, its children
never see it). With its imports done it derives the passphrase keys of the
repositories ``CONFIG`` names into its memory (``derive_configured_keys``; any
failure is left to the run), starts a backup's thaw guardian ahead
(``hypervisor.guardian.start_waiting``: it exits with the worker if no backup
arms it), writes ``ready`` on stdout (then points stdout at
``/dev/null``) and waits for its order. At the order it loads the configuration
afresh like any worker: only a derived key whose passphrase, salt and cost are
unchanged is reused. A stop (SIGTERM) before the order ends it quietly (exit 0).

Each run's timings go to the log (the service's) in one line: the order's wait
(the worker's start and imports when it was started for it; ~0 for a spare),
configuration and catalog, repository (key derivation included), libvirt
connection, and each phase of the job (``bench/service_cost.py`` reads it).

Test hook: ``SURETY_WORKER_TEST_DELAY`` (seconds, a float) makes the worker wait
that long after marking the run running and before executing it, so tests can
kill or stop a service while its worker is in flight. Nothing else reads it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from surety.app.catalog import open_catalog
from surety.app.configured import derive_configured_keys, open_configured_repository
from surety.app.hypervisor import connect_host
from surety.catalog import Catalog
from surety.catalog.runs import RunResult
from surety.config import load_config
from surety.config.model import Config
from surety.core import interrupts
from surety.core.errors import SuretyError, UsageError
from surety.hypervisor.guardian import start_waiting
from surety.jobs.execute import execute
from surety.jobs.hints import hint_for
from surety.jobs.spec import JobSpec
from surety.repo.crypto import remember_derived_keys

__all__ = ["CatalogProgress", "Stopwatch", "main", "run_one"]

TEST_DELAY_ENV = "SURETY_WORKER_TEST_DELAY"
PREPARE_ENV = "SURETY_WORKER_PREPARE"  # set by the runner for its spare: the configuration's path
_STDOUT = 1
READY = b"ready\n"  # the spare's word on stdout that it waits for its order, keys derived

log = logging.getLogger("surety.service.worker")


class CatalogProgress:
    """A ``Progress`` sink writing to the catalog: progress at most once a second,
    phases and notes as log lines."""

    def __init__(self, catalog: Catalog, run_id: int) -> None:
        self.catalog = catalog
        self.run_id = run_id
        self.phase_name = ""
        self.total: int | None = None
        self.done = 0
        self._written = 0.0
        self.phases: list[tuple[str, float]] = []  # (name, time.monotonic() at its start)

    def phase(self, name: str, total: int | None = None) -> None:
        self.phases.append((name, time.monotonic()))
        self.phase_name, self.total, self.done = name, total, 0
        self.catalog.append_log(self.run_id, f"phase {name}" + (f" ({total})" if total else ""))
        self._write(force=True)

    def advance(self, amount: int) -> None:
        self.done += amount
        self._write()

    def note(self, message: str) -> None:
        self.catalog.append_log(self.run_id, message)

    def _write(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._written >= 1.0:
            self._written = now
            self.catalog.set_progress(self.run_id, self.phase_name, self.done, self.total)


class Stopwatch:
    """A run's steps and their seconds, in order, for its timings line in the log."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []
        self._last = time.monotonic()

    def add(self, name: str, seconds: float) -> None:
        self.steps.append((name, seconds))

    def lap(self, name: str) -> None:
        """The time since the last lap (or the start) is step ``name``'s."""
        now = time.monotonic()
        self.add(name, now - self._last)
        self._last = now

    def job(self, phases: list[tuple[str, float]]) -> None:
        """The job's time, split at its phases: before the first one, then each phase."""
        end = time.monotonic()
        marks = [("job before its first phase", self._last)]
        marks += [(f"phase {name}", at) for name, at in phases]
        for (name, at), (_, following) in zip(marks, [*marks[1:], ("", end)], strict=True):
            self.add(name, following - at)
        self._last = end

    def line(self) -> str:
        """``name seconds; ...; total seconds``."""
        steps = [*self.steps, ("total", sum(seconds for _, seconds in self.steps))]
        return "; ".join(f"{name} {seconds:.3f}" for name, seconds in steps)


def run_one(
    spec: JobSpec,
    run_id: int,
    config: Config,
    catalog: Catalog,
    stopwatch: Stopwatch | None = None,
) -> RunResult:
    """Execute one run and return its result (every ``SuretyError`` becomes a result)."""
    watch = stopwatch or Stopwatch()
    progress = CatalogProgress(catalog, run_id)
    host = connect_host(config.service.libvirt_uri)
    try:
        policy = config.policies.get(spec.policy)
        if policy is None:
            raise UsageError(f"policy {spec.policy!r} is not in the configuration")
        # the policy's repository's S3 settings become this worker's environment (its
        # NBD servers reopen it); a copy target's apply while it is opened
        repo = open_configured_repository(config, policy.repository, keep=True)
        watch.lap("repository")
        return execute(
            spec,
            config,
            repo=repo,
            host=host,
            catalog=catalog,
            progress=progress,
            open_repository=lambda name: open_configured_repository(config, name),
        )
    except SuretyError as exc:
        return RunResult("failed", error=str(exc), hint=hint_for(exc))
    except KeyboardInterrupt:
        return RunResult(
            "interrupted",
            error="stopped (SIGTERM/SIGINT) before it completed; nothing was committed",
            hint="it runs again at its next slot",
        )
    finally:
        watch.job(progress.phases)
        host.close()


def _stop(signum: int, frame: FrameType | None) -> None:
    interrupts.request_stop()


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s worker[%(process)d] %(levelname)s %(message)s"
    )
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    remember_derived_keys()  # a copy job may open its source's repository twice
    try:
        prepare = os.environ.pop(PREPARE_ENV, None)
        if prepare is not None:
            _prepare(Path(prepare))
        text = sys.stdin.read()
    except KeyboardInterrupt:  # a spare stopped before its order: nothing to record
        return 0
    watch = Stopwatch()
    try:
        order = json.loads(text)
        spec = JobSpec.from_json(order["spec"])
        run_id = int(order["run_id"])
        config_path = Path(order["config"])
        sent = float(order.get("sent", time.time()))
    except (ValueError, KeyError, TypeError, SuretyError) as exc:
        log.error("bad order on stdin: %s", exc)
        return 2
    watch.add("order", max(0.0, time.time() - sent))
    catalog: Catalog | None = None
    try:
        config = load_config(config_path)
        catalog = open_catalog(config.service.catalog)
        catalog.mark_running(run_id, os.getpid())
        catalog.append_log(run_id, f"worker pid {os.getpid()}: {spec.job} attempt {spec.attempt}")
        watch.lap("configuration and catalog")
        delay = float(os.environ.get(TEST_DELAY_ENV, "0") or 0)
        if delay > 0:
            time.sleep(delay)
        result = run_one(spec, run_id, config, catalog, watch)
        catalog.append_log(
            run_id, f"{result.status}" + (f": {result.error}" if result.error else "")
        )
        catalog.finish_run(run_id, result)
        log.info("run %d timings (s): %s", run_id, watch.line())
    except KeyboardInterrupt:
        if catalog is not None:
            catalog.finish_run(
                run_id,
                RunResult("interrupted", error="stopped before it started; nothing was done"),
            )
        return 0
    except SuretyError as exc:  # the configuration or the catalog itself failed
        log.error("run %d: %s", run_id, exc)
        if catalog is not None:
            catalog.finish_run(run_id, RunResult("failed", error=str(exc), hint=hint_for(exc)))
        return 1
    except Exception as exc:  # a bug: recorded in one line, the traceback in the log
        log.exception("run %d: internal error", run_id)
        if catalog is not None:
            catalog.finish_run(
                run_id,
                RunResult(
                    "failed",
                    error=f"internal error: {type(exc).__name__}: {exc}",
                    hint="a bug in surety: report it with the service's log",
                ),
            )
        return 1
    return 0


def _prepare(config_path: Path) -> None:
    """The spare's wait: keys derived ahead (failures left to the run), then ``ready``."""
    with contextlib.suppress(SuretyError):  # the run loads the configuration again, reports it
        derive_configured_keys(load_config(config_path))
    with contextlib.suppress(OSError):  # a backup starts its own guardian then
        start_waiting()  # the backup's thaw guardian, imports done (hypervisor.guardian)
    os.write(_STDOUT, READY)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, _STDOUT)  # nothing the run prints may fill the runner's pipe
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
