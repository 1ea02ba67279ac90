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
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from surety.jobs.spec import JobSpec

__all__ = ["JobRunner", "ProcessRunner", "RunHandle"]

_PR_SET_PDEATHSIG = 1


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


class ProcessRunner:
    """Each run in ``python -m surety.service.worker`` (module docstring)."""

    def __init__(
        self,
        config_path: Path,
        env: dict[str, str] | None = None,
        command: Sequence[str] = (sys.executable, "-m", "surety.service.worker"),
    ) -> None:
        self.config_path = config_path
        self.env = env
        self.command = list(command)  # tests give a stand-in worker
        self._handles: list[RunHandle] = []

    def start(self, spec: JobSpec, run_id: int) -> RunHandle:
        proc = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            env=self.env,
            preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - prctl needs it; no threads start workers
        )
        assert proc.stdin is not None
        order = {"spec": spec.to_json(), "run_id": run_id, "config": str(self.config_path)}
        try:
            proc.stdin.write(json.dumps(order).encode())
            proc.stdin.close()
        except OSError:  # the worker died at once; poll() reports it
            pass
        handle = RunHandle(run_id, spec, proc.pid, time.monotonic(), proc=proc)
        self._handles.append(handle)
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
        return ended

    def stop(self, handle: RunHandle, grace: float) -> None:
        if handle.stopping:
            return
        handle.stopping = True
        handle.kill_at = time.monotonic() + grace
        _signal_group(handle, signal.SIGTERM)

    def kill_all(self) -> None:
        for handle in self._handles:
            _signal_group(handle, signal.SIGKILL)
        for handle in self._handles:
            assert handle.proc is not None
            handle.proc.wait()

    @property
    def running(self) -> list[RunHandle]:
        return list(self._handles)


def _signal_group(handle: RunHandle, signum: int) -> None:
    """Signal the worker's process group (the worker and what it started there)."""
    if handle.pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(handle.pid, signum)
