"""The job runner port and its one-host adapter: each run in a worker process.

``JobRunner`` is the small interface the daemon drives:

* ``start(spec, run_id) -> RunHandle`` starts one run (it does not wait for it);
* ``poll() -> list[RunHandle]`` returns the runs that ended since the last poll
  (each exactly once; ``returncode`` set), and enforces stop deadlines;
* ``stop(handle, grace)`` asks a run to stop (SIGTERM: a backup turns it into a
  clean ``Interrupted`` - guest thawed, nothing committed) and kills it after
  ``grace`` seconds if it is still there (checked by ``poll``);
* ``kill_all()`` kills every run at once and reaps them (the last resort).

The worker records its own result in the catalog (``surety.service.worker``);
the runner only reports that the process ended. A PostgreSQL queue engine
(procrastinate) will implement the same protocol for several hosts: ``start``
then enqueues the spec and ``poll`` reports the jobs the queue saw finish.

``ProcessRunner`` runs ``python -m surety.service.worker`` per run, the spec
JSON, run id and configuration path on its stdin, in its own process group (a
Ctrl-C on the service's terminal reaches the service only; the service decides),
with the parent-death signal set to SIGKILL: a ``kill -9`` of the service takes
its workers down at once. A backup's guardian runs in a session of its own and
sees its job's pipe close, so it thaws the guest and ends the libvirt backup job
(``surety.hypervisor.guardian``). Workers' stderr is the service's stderr.

The spare: a small run's fixed cost is mostly the worker's start (the
interpreter and surety's imports, 0.3-0.5 s) and the passphrase key (argon2,
0.2-0.6 s). So the runner keeps one worker started ahead of need, in the same
isolation (own process group, parent-death SIGKILL), told
``SURETY_WORKER_PREPARE=CONFIG``: it imports everything, derives the configured
repositories' keys and says ``ready`` on its stdout, then waits for an order on
stdin. ``start`` hands the order to a ready spare (a spare not ready yet stays
the spare, and the run gets a fresh worker as without one). The next spare
starts once no run is in flight, or ``SPARE_DELAY`` seconds after the last run
started: its start (~0.5 CPU-s, argon2 on two threads) would otherwise compete
with the small run just handed over (on 2 cores a check's phase took 0.95 s
instead of 0.55 s, ``bench/service_cost.py``), and a long run still gets the
next run's spare ready. The spare is not a run: ``poll`` never reports it; one
that died before its order (crash, OOM) is reaped and replaced (not sooner than
``SPARE_RETRY`` seconds after it was started: a worker that cannot start does
not loop), and its death never fails a run; ``kill_all`` and ``close`` kill it,
and it dies with the service. ``SURETY_WORKER_SPARE=0`` in the service's
environment turns the spare off.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from surety.jobs.spec import JobSpec

__all__ = ["SPARE_ENV", "JobRunner", "ProcessRunner", "RunHandle"]

SPARE_ENV = "SURETY_WORKER_SPARE"  # "0": no spare worker
PREPARE_ENV = "SURETY_WORKER_PREPARE"  # the spare's environment: the configuration's path
READY = b"ready\n"  # what a spare writes on its stdout once it waits for its order
SPARE_RETRY = 5.0  # seconds between the starts of spares that die unused
SPARE_DELAY = 5.0  # seconds after a run's start before the next spare starts beside it

_PR_SET_PDEATHSIG = 1

log = logging.getLogger("surety.service.runner")


@dataclass(eq=False)
class RunHandle:
    """One started run. ``returncode`` is set once it ended (negative: killed by a signal)."""

    run_id: int
    spec: JobSpec
    pid: int | None
    started: float  # time.monotonic() at start
    returncode: int | None = None
    stopping: bool = False  # stop() was asked
    kill_at: float | None = None  # monotonic deadline of the SIGKILL after a stop
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)


class JobRunner(Protocol):
    def start(self, spec: JobSpec, run_id: int) -> RunHandle: ...

    def poll(self) -> list[RunHandle]: ...

    def stop(self, handle: RunHandle, grace: float) -> None: ...

    def kill_all(self) -> None: ...


def _die_with_parent(parent: int) -> Callable[[], None]:
    """The child's preexec step: own process group, SIGKILL when the service dies."""

    def preexec() -> None:
        os.setpgid(0, 0)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the service died before prctl took effect
            os._exit(1)

    return preexec


@dataclass(eq=False)
class _Spare:
    """A worker started ahead of need; ``ready`` once it said so on its stdout."""

    proc: subprocess.Popen[bytes]
    born: float  # time.monotonic() at its start
    ready: bool = False

    def check(self) -> bool:
        """Is it ready now? (Reads its word without waiting.)"""
        out = self.proc.stdout
        if not self.ready and out is not None and select.select([out], [], [], 0)[0]:
            self.ready = os.read(out.fileno(), len(READY)) == READY
            out.close()  # after its word (or its death: EOF) the pipe has nothing more
        return self.ready and self.proc.poll() is None


class ProcessRunner:
    """Each run in ``python -m surety.service.worker`` (module docstring)."""

    def __init__(
        self,
        config_path: Path,
        env: dict[str, str] | None = None,
        command: Sequence[str] = (sys.executable, "-m", "surety.service.worker"),
        spare: bool | None = None,
    ) -> None:
        self.config_path = config_path
        self.env = env
        self.command = list(command)  # tests give a stand-in worker
        if spare is None:  # the service's environment decides
            spare = (env if env is not None else os.environ).get(SPARE_ENV, "1") != "0"
        self.spare_enabled = spare
        self._handles: list[RunHandle] = []
        self._spare: _Spare | None = None
        self._retry_at = 0.0  # time.monotonic() from which a spare may start
        self._last_start = 0.0  # time.monotonic() of the last start()
        self._closed = False

    def start(self, spec: JobSpec, run_id: int) -> RunHandle:
        order = {"spec": spec.to_json(), "run_id": run_id, "config": str(self.config_path)}
        order["sent"] = time.time()  # the worker logs how long its order waited
        proc = self._take_spare(order) or self._spawn(order)
        handle = RunHandle(run_id, spec, proc.pid, time.monotonic(), proc=proc)
        self._handles.append(handle)
        self._last_start = handle.started
        return handle

    def poll(self) -> list[RunHandle]:
        ended = []
        now = time.monotonic()
        for handle in list(self._handles):
            assert handle.proc is not None
            code = handle.proc.poll()
            if code is not None:
                handle.returncode = code
                self._handles.remove(handle)
                ended.append(handle)
            elif handle.kill_at is not None and now >= handle.kill_at:
                _signal_group(handle, signal.SIGKILL)
                handle.kill_at = None
        self._keep_spare()
        return ended

    def stop(self, handle: RunHandle, grace: float) -> None:
        if handle.stopping:
            return
        handle.stopping = True
        handle.kill_at = time.monotonic() + grace
        _signal_group(handle, signal.SIGTERM)

    def kill_all(self) -> None:
        """Kill every run and the spare, and reap them; no spare is started after this."""
        self.close()
        for handle in self._handles:
            _signal_group(handle, signal.SIGKILL)
        for handle in self._handles:
            assert handle.proc is not None
            handle.proc.wait()

    def close(self) -> None:
        """Kill and reap the spare; no other is started (runs go on: ``stop``, ``kill_all``)."""
        self._closed = True
        self._drop_spare()

    @property
    def running(self) -> list[RunHandle]:
        return list(self._handles)

    @property
    def spare_pid(self) -> int | None:
        """The waiting spare's pid (None: none now)."""
        return self._spare.proc.pid if self._spare is not None else None

    # -- the spare -----------------------------------------------------------------

    def _take_spare(self, order: dict[str, object]) -> subprocess.Popen[bytes] | None:
        """The ready spare, given ``order``; None if there is none (or it just died)."""
        spare = self._spare
        if spare is None or not spare.check():
            return None
        self._spare = None
        if _send(spare.proc, order):
            return spare.proc
        _kill(spare.proc)  # it died as the order came: the run gets a fresh worker
        return None

    def _keep_spare(self) -> None:
        """Reap a spare that died unused; start one if there is none and it may start now
        (no run in flight, or the last one started ``SPARE_DELAY`` ago)."""
        spare = self._spare
        if spare is not None and spare.proc.poll() is not None:
            log.warning(
                "the spare worker (pid %d) died before its order (exit %s); another follows",
                spare.proc.pid,
                spare.proc.returncode,
            )
            self._drop_spare()
            self._retry_at = spare.born + SPARE_RETRY
        now = time.monotonic()
        quiet = not self._handles or now >= self._last_start + SPARE_DELAY
        wanted = self.spare_enabled and not self._closed and now >= self._retry_at and quiet
        if self._spare is None and wanted:
            self._spare = _Spare(self._spawn(None), time.monotonic())

    def _drop_spare(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            _kill(spare.proc)

    def _spawn(self, order: dict[str, object] | None) -> subprocess.Popen[bytes]:
        """A worker given ``order``; without one, a spare (prepares, says ready, waits)."""
        env = self.env
        if order is None:
            env = {**(env if env is not None else os.environ), PREPARE_ENV: str(self.config_path)}
        proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL if order is not None else subprocess.PIPE,
            env=env,
            preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - prctl needs it; no threads start workers
        )
        if order is not None:
            _send(proc, order)  # a worker that died at once: poll() reports it
        return proc


def _send(proc: subprocess.Popen[bytes], order: dict[str, object]) -> bool:
    """Write ``order`` on the worker's stdin and close it; False if the worker is gone."""
    assert proc.stdin is not None
    try:
        proc.stdin.write(json.dumps(order).encode())
        proc.stdin.close()
    except OSError:
        with contextlib.suppress(OSError):
            proc.stdin.close()
        return False
    return True


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker's process group and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _signal_group(handle: RunHandle, signum: int) -> None:
    """Signal the worker's process group (the worker and what it started there)."""
    if handle.pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(handle.pid, signum)
