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

Test hook: ``SURETY_WORKER_TEST_DELAY`` (seconds, a float) makes the worker wait
that long after marking the run running and before executing it, so tests can
kill or stop a service while its worker is in flight. Nothing else reads it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from surety.app.catalog import open_catalog
from surety.app.configured import open_configured_repository
from surety.app.hypervisor import connect_host
from surety.catalog import Catalog
from surety.catalog.runs import RunResult
from surety.config import load_config
from surety.config.model import Config
from surety.core import interrupts
from surety.core.errors import SuretyError, UsageError
from surety.jobs.execute import execute
from surety.jobs.hints import hint_for
from surety.jobs.spec import JobSpec

__all__ = ["CatalogProgress", "main", "run_one"]

TEST_DELAY_ENV = "SURETY_WORKER_TEST_DELAY"

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

    def phase(self, name: str, total: int | None = None) -> None:
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


def run_one(spec: JobSpec, run_id: int, config: Config, catalog: Catalog) -> RunResult:
    """Execute one run and return its result (every ``SuretyError`` becomes a result)."""
    progress = CatalogProgress(catalog, run_id)
    host = connect_host(config.service.libvirt_uri)
    try:
        policy = config.policies.get(spec.policy)
        if policy is None:
            raise UsageError(f"policy {spec.policy!r} is not in the configuration")
        # the policy's repository's S3 settings become this worker's environment (its
        # NBD servers reopen it); a copy target's apply while it is opened
        repo = open_configured_repository(config, policy.repository, keep=True)
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
        host.close()


def _stop(signum: int, frame: FrameType | None) -> None:
    interrupts.request_stop()


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s worker[%(process)d] %(levelname)s %(message)s"
    )
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        order = json.loads(sys.stdin.read())
        spec = JobSpec.from_json(order["spec"])
        run_id = int(order["run_id"])
        config_path = Path(order["config"])
    except (ValueError, KeyError, TypeError, SuretyError) as exc:
        log.error("bad order on stdin: %s", exc)
        return 2
    catalog: Catalog | None = None
    try:
        config = load_config(config_path)
        catalog = open_catalog(config.service.catalog)
        catalog.mark_running(run_id, os.getpid())
        catalog.append_log(run_id, f"worker pid {os.getpid()}: {spec.job} attempt {spec.attempt}")
        delay = float(os.environ.get(TEST_DELAY_ENV, "0") or 0)
        if delay > 0:
            time.sleep(delay)
        result = run_one(spec, run_id, config, catalog)
        catalog.append_log(
            run_id, f"{result.status}" + (f": {result.error}" if result.error else "")
        )
        catalog.finish_run(run_id, result)
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


if __name__ == "__main__":
    sys.exit(main())
