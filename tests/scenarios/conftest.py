"""The replicated-pair restore scenario: shared fixtures and the summary table.

Every case records one row (app, restored member, method, result, evidence);
``pytest_terminal_summary`` prints them as the table of the classic
domain-controller restore white paper: image backup / app-aware backup /
app-aware restore -> functional, error seen, silent divergence.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli import Cli, cli_for
from tests.guests import testvm

ROWS: list[Row] = []


@dataclass(frozen=True)
class Row:
    app: str
    member: str  # former primary/source, former standby/replica
    method: str
    result: str  # functional | error seen | silent divergence | failed
    expected: str
    evidence: str
    seconds: float

    @property
    def as_expected(self) -> bool:
        return self.result in self.expected.split(" or ")


@pytest.fixture(scope="session")
def scenario_host() -> None:
    testvm.ensure_libvirtd()
    testvm.build_guest()


@pytest.fixture
def scenario_cli(tmp_path: Path, scenario_host: None) -> Cli:
    cli = cli_for(tmp_path / "repo", dict(os.environ))
    cli.run("init")
    return cli


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Samba AD part runs last. In CI this lane runs beside stage 2 (tests/vm): its
    first half then loads the host as the PostgreSQL and MariaDB pairs always did, and
    the two DCs (the heaviest guests) overlap only stage 2's end."""
    items.sort(key=lambda item: item.path.name == "test_ad_replication.py")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    write = terminalreporter.write_line
    write("")
    write("Replicated-pair restore (two real guests per case, isolated network)")
    header = f"{'app':<11}{'restored member':<17}{'method':<52}{'result':<19}{'as expected':<12}s"
    write(header)
    write("-" * len(header))
    for row in ROWS:
        mark = "yes" if row.as_expected else f"NO ({row.expected})"
        write(
            f"{row.app:<11}{row.member:<17}{row.method:<52}{row.result:<19}{mark:<12}"
            f"{row.seconds:.0f}"
        )
    write("")
    for row in ROWS:
        write(f"[{row.app} / {row.member} / {row.method}] {row.evidence}")
