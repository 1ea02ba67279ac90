"""Fixtures every test directory may use: the real S3 server (``tests/s3/fixtures.py``).

Every test process gets its own catalog (``SURETY_CATALOG`` in a temporary
directory unless the caller set one): no test writes the host's
``/var/lib/surety/catalog.sqlite``, which parallel workers and other
checkouts of different versions would share.

Under pytest-xdist (``make test``) a module's tests run on one worker, in file
order, and its module-scoped fixtures are built once; the Samba lab's modules,
which take one lock, run on one worker together (``pytest_xdist_make_scheduler``).

Under CI a failure is printed the moment it happens, not only in the summary
at the end, and SIGTERM (a CI stage's time budget running out) stops the run
as Ctrl-C does: fixtures tear their guests down and pytest prints its summary.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

pytest_plugins = ["tests.s3.fixtures"]


@pytest.hookimpl(trylast=True)
def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not report.failed or not os.environ.get("CI"):
        return
    reporter = _config.pluginmanager.get_plugin("terminalreporter") if _config else None
    if reporter is None:
        return
    reporter.write_line("")
    reporter.write_sep("!", f"FAILED {report.nodeid} ({report.when}, {report.duration:.0f} s)")
    reporter.write_line(str(report.longrepr))
    for name, content in report.sections:
        if name.startswith("Captured") and content.strip():
            reporter.write_sep("-", name)
            reporter.write_line(content[-4000:])


_config: pytest.Config | None = None


SHARED_SCOPES = ("tests/samba/",)
"""Folders whose modules are one unit of work for xdist: they take one lock (the Samba
lab), so two workers running them at once would only wait for each other."""


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's ``loadscope`` with a test module (or a SHARED_SCOPES folder) as the unit:
    tests that build on each other keep their order and their module's fixtures. (Its
    ``loadgroup`` does nothing under pytest 9: it renames nodes through ``_nodeid``.)"""
    from xdist.scheduler import LoadScopeScheduling  # noqa: PLC0415 -- only under xdist

    class ByModule(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return next((s for s in SHARED_SCOPES if module.startswith(s)), module)

    return ByModule(config, log)


@pytest.fixture(scope="session", autouse=True)
def _own_catalog(tmp_path_factory: pytest.TempPathFactory) -> None:
    if not os.environ.get("SURETY_CATALOG"):
        catalog = tmp_path_factory.mktemp("catalog") / "catalog.sqlite"
        os.environ["SURETY_CATALOG"] = str(catalog)
    if not os.environ.get("SURETY_CACHE_DIR"):  # the local index cache, likewise
        os.environ["SURETY_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))


HOST_STATE = (Path("/var/cache/surety"), Path("/var/lib/surety/catalog.sqlite"))
"""What surety keeps on a host by default: tests use their own (SURETY_CACHE_DIR,
SURETY_CATALOG) and must never create or change these."""


def _host_state() -> dict[str, float]:
    seen: dict[str, float] = {}
    for path in HOST_STATE:
        for item in [path, *(path.iterdir() if path.is_dir() else ())]:
            if item.exists():
                seen[str(item)] = item.stat().st_mtime
    return seen


_host_before: dict[str, float] = {}


def pytest_configure(config: pytest.Config) -> None:
    global _config  # noqa: PLW0603 -- this session's config, set once
    _config = config
    _host_before.update(_host_state())
    if os.environ.get("CI"):
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # make passes it on too: tear down once
    raise KeyboardInterrupt(f"stopped by signal {signum} (a CI stage ran out of time)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI, a run that wrote the host's own surety state fails, naming what it wrote
    (once, in the controller: xdist workers have ``workerinput``): a test that writes it
    would also read another run's cache or catalog."""
    if not os.environ.get("CI") or hasattr(session.config, "workerinput"):
        return
    changed = sorted(k for k, v in _host_state().items() if _host_before.get(k) != v)
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_sep("!", "tests wrote the host's surety state: " + ", ".join(changed))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
