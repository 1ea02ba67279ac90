"""What the live-VM benchmarks share: run surety, summarise timings.

Imported as ``bench.common`` (the benchmarks run with ``PYTHONPATH=.`` from the
repository root). Each benchmark keeps its own repository under its work
directory, opened with ``PASSWORD``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

__all__ = ["PASSWORD", "drop_caches", "init_repository", "stat", "surety", "surety_env"]

PASSWORD = "bench-passphrase"


def surety_env(repo: Path, **extra: str) -> dict[str, str]:
    """This process's environment naming ``repo`` and ``PASSWORD``, plus ``extra``.

    The index cache and the catalog live beside ``repo`` unless ``extra`` names
    them: a bench leaves the host's ``/var/cache/surety`` and catalog alone.
    """
    own = {
        "SURETY_CACHE_DIR": str(repo.parent / "surety-cache"),
        "SURETY_CATALOG": str(repo.parent / "surety-catalog.sqlite"),
    }
    return {
        **os.environ,
        **own,
        "SURETY_REPOSITORY": str(repo),
        "SURETY_PASSPHRASE": PASSWORD,
        **extra,
    }


def drop_caches() -> bool:
    """Drop the host's page cache (cold reads); False where the machine does not allow it."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def init_repository(env: dict[str, str]) -> None:
    """``surety init`` of the repository ``env`` names; exits with its stderr if it fails."""
    _run(env, ["init"])


def surety(env: dict[str, str], *args: str, check: bool = True) -> dict[str, object]:
    """``surety ARGS --json``: its JSON document; exits with its stderr on failure if ``check``."""
    proc = _run(env, [*args, "--json"], check=check)
    return dict(json.loads(proc.stdout))


def stat(values: list[float], digits: int = 1) -> str:
    """Median and maximum of timings in seconds."""
    median, top = statistics.median(values), max(values)
    return f"median {median:6.{digits}f} s, max {top:6.{digits}f} s"


def _run(
    env: dict[str, str], args: list[str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "surety", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"surety {' '.join(args)} -> exit {proc.returncode}\n{proc.stderr}")
    return proc
