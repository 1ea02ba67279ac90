"""Run the real ``surety`` command as a subprocess (shared by CLI-level tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PASSPHRASE = "correct horse battery staple"


@dataclass
class Cli:
    repo: Path
    env: dict[str, str]

    def run(
        self,
        *args: str | Path,
        check: bool = True,
        timeout: float = 300,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "surety", *map(str, args)],
            env=_own_cache(env or self.env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"surety {args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def json(self, *args: str | Path) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def popen(self, *args: str | Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "surety", *map(str, args)],
            env=_own_cache(self.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


KEPT = ("SURETY_CACHE_DIR",)
"""SURETY_ variables a test's command keeps: the session's own index cache, so no test
writes the host's /var/cache/surety."""


def _own_cache(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the session's index cache unless it names one (an environment
    built from scratch, e.g. only a bucket's keys, would use the host's)."""
    cache = os.environ.get("SURETY_CACHE_DIR")
    return {"SURETY_CACHE_DIR": cache, **env} if cache else env


def without_surety(
    environ: Mapping[str, str], prefixes: tuple[str, ...] = ("SURETY_",)
) -> dict[str, str]:
    """``environ`` without surety's settings (and other ``prefixes``), keeping ``KEPT``;
    the session's index cache is added when ``environ`` does not name one."""
    kept = {k: v for k, v in environ.items() if not k.startswith(prefixes) or k in KEPT}
    return _own_cache(kept)


def cli_for(repo: Path, environ: dict[str, str]) -> Cli:
    """A ``Cli`` for ``repo`` with the test passphrase and no stray SURETY_* settings.

    Its catalog is ``environ``'s ``SURETY_CATALOG`` when given, else one beside
    the repository: never the host's ``/var/lib/surety/catalog.sqlite``, which
    tests running at once (and other checkouts) would share.
    """
    env = without_surety(environ)
    catalog = environ.get("SURETY_CATALOG") or str(repo.parent / "catalog.sqlite")
    env.update(SURETY_REPOSITORY=str(repo), SURETY_PASSPHRASE=PASSPHRASE, SURETY_CATALOG=catalog)
    return Cli(repo, env)
