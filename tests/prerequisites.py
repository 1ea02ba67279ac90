"""What a test needs of the host: skipped on a developer's machine, failed in CI.

A test that needs root, nbdkit, FUSE, loop devices or python3-libnbd states it
with ``require`` or ``require_import`` instead of skipping itself. Where the
prerequisite is missing the test is skipped with the reason, except in CI
(the environment variable ``CI`` is ``true``; ``.ci/run`` exports it): there
it fails, so a test can never quietly vanish from CI because the machine
changed. Both work at module level (the whole module) and inside a test or
fixture.
"""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["in_ci", "require", "require_import", "require_samba"]


def in_ci() -> bool:
    """True when running under CI (``CI=true``), where nothing may be skipped for the host."""
    return os.environ.get("CI", "").strip().lower() == "true"


def require(condition: bool, what: str) -> None:
    """Go on if ``condition`` holds; else skip (or, in CI, fail) saying ``what`` is missing."""
    if not condition:
        _missing(what)


def require_import(name: str, what: str | None = None) -> ModuleType:
    """The module ``name``; if it cannot be imported, skip (or, in CI, fail) naming ``what``."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        _missing(f"{what or name} (import {name}: {exc})")


def require_samba() -> None:
    """Root and the Samba AD DC tools (samba, samba-tool, ldbsearch; scripts/bootstrap installs
    them) plus util-linux's nsenter/unshare: what tests/samba's two-DC lab needs."""
    require(os.geteuid() == 0, "root (the Samba lab's namespaces and bind mounts)")
    for tool in ("samba-tool", "samba", "ldbsearch", "nsenter", "unshare"):
        require(shutil.which(tool) is not None, f"{tool} (Samba AD DC packages: scripts/bootstrap)")


def _missing(what: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"missing in CI, where nothing is skipped: {what}", pytrace=False)
    pytest.skip(f"missing here: {what}", allow_module_level=True)
