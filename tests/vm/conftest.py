"""Real guests for VM tests: a Debian guest under libvirt, built once and cached.

These tests need root, libvirt, QEMU and the cached test guest (``make guest``);
they run in CI's second stage (``make test-vm``).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import Cli, cli_for
from tests.guests import agent, testvm


@pytest.fixture(scope="session")
def libvirt_conn() -> Iterator[object]:
    testvm.ensure_libvirtd()
    testvm.build_guest()
    conn = agent.connect()
    yield conn
    conn.close()


class Guest:
    """A running test VM: its libvirt name and domain handle, plus helpers."""

    def __init__(self, name: str, conn: object) -> None:
        self.name = name
        self.dom = conn.lookupByName(name)  # type: ignore[attr-defined]

    def sh(self, script: str, timeout: float = 300) -> agent.ExecResult:
        return agent.guest_shell(self.dom, script, timeout=timeout).check()

    def freeze_status(self) -> str:
        return str(agent.agent_command(self.dom, "guest-fsfreeze-status"))


@pytest.fixture(scope="module")
def guest(libvirt_conn: object) -> Iterator[Guest]:
    name = f"st-{secrets.token_hex(3)}"
    testvm.up(name, app="none")
    try:
        yield Guest(name, libvirt_conn)
    finally:
        testvm.down(name)


@pytest.fixture
def vm_cli(tmp_path: Path) -> Cli:
    cli = cli_for(tmp_path / "repo", dict(os.environ))
    cli.run("init")
    return cli
