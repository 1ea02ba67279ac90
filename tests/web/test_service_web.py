"""``[web]``: ``surety service`` starts the console as a child process, restarts it when it
dies without stopping the scheduler, stops it on shutdown, and takes it along when killed;
``surety web user add`` works with only ``SURETY_CATALOG`` set."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from surety.catalog import Catalog
from tests.cli import without_surety
from tests.prerequisites import require, require_import
from tests.processes import alive
from tests.web.browser import free_port
from tests.web.site import Site, make_site

require_import("libvirt", "python3-libvirt (libvirt's test:///default driver)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return make_site(tmp_path_factory.mktemp("service-web"))


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


def wait_for(check: object, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}")


def children(pid: int) -> list[int]:
    """Children of every thread of ``pid`` (the console's is forked by a thread)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += (task / "children").read_text().split()
        except OSError:
            continue
    return [int(p) for p in found]


@pytest.fixture
def service(site: Site, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    config = tmp_path / "surety.toml"
    config.write_text(site.config.read_text() + f'\n[web]\nlisten = "127.0.0.1:{port}"\n')
    env = {k: v for k, v in site.cli.env.items() if k != "SURETY_REPOSITORY"}
    log = tmp_path / "service.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "surety", "service", "--config", str(config), "--tick", "0.3"],
            env=env,
            stdout=out,
            stderr=out,
        )
    try:
        yield proc, f"http://127.0.0.1:{port}/login", log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def web_child(proc: subprocess.Popen[bytes]) -> int:
    """The console the service started (its only child that is not a job's worker)."""
    for pid in children(proc.pid):
        if b"web" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
            return pid
    raise AssertionError(f"no web console among the children of {proc.pid}")


def test_the_service_starts_restarts_and_stops_its_web_console(
    service: tuple[subprocess.Popen[bytes], str, Path], site: Site
) -> None:
    proc, url, log = service
    wait_for(lambda: answers(url), f"the console at {url}")
    first = web_child(proc)
    os.kill(first, signal.SIGKILL)  # the web part crashes
    wait_for(lambda: not answers(url), "the killed console stops answering", 10)
    beats = site.catalog.heartbeats()
    wait_for(lambda: answers(url), "the console restarted")
    assert proc.poll() is None, log.read_text()  # the scheduler went on
    assert web_child(proc) != first
    wait_for(lambda: site.catalog.heartbeats() != beats, "the service still beats", 10)
    assert "web console ended (exit -9); the scheduler goes on" in log.read_text()
    second = web_child(proc)
    proc.terminate()
    assert proc.wait(timeout=30) == 0, log.read_text()
    assert not alive(second), "the console outlived the service"
    assert not answers(url)
    assert "web console stopped" in log.read_text()


def test_a_killed_service_takes_its_console_along(
    service: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    proc, url, log = service
    wait_for(lambda: answers(url), f"the console at {url}")
    child = web_child(proc)
    proc.kill()
    proc.wait()
    wait_for(lambda: not alive(child), "the console ends with its killed service", 15)
    assert not answers(url), log.read_text()


def test_web_user_add_needs_only_surety_catalog(tmp_path: Path) -> None:
    require(
        not Path("/etc/surety/surety.toml").exists(),
        "no /etc/surety/surety.toml on this host (the command would use its catalog)",
    )
    (tmp_path / "pw").write_text("a-good-password-7\n")
    catalog = tmp_path / "catalog.sqlite"
    env = without_surety(os.environ)
    env["SURETY_CATALOG"] = str(catalog)
    surety = [sys.executable, "-m", "surety", "web", "user"]
    done = subprocess.run(
        [*surety, "add", "ann", "--role", "admin", "--password-file", str(tmp_path / "pw")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "web user ann (admin) saved" in done.stdout
    assert [(u.name, u.role) for u in Catalog(catalog).users()] == [("ann", "admin")]
    listed = subprocess.run(
        [*surety, "list", "--json"], env=env, capture_output=True, text=True, check=False
    )
    assert '"ann"' in listed.stdout, listed.stderr
    # a configuration named but absent is still a mistake, said in one line
    missing = tmp_path / "nope.toml"
    refused = subprocess.run(
        [*surety[:4], "--config", str(missing), "user", "list"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2, refused.stderr
    assert "no such configuration file" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_surety_web_alone_takes_its_address_from_the_web_table(site: Site, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "surety.toml"
    text = f'\n[web]\nenabled = false\nlisten = "127.0.0.1:{port}"\n'
    config.write_text(site.config.read_text() + text)
    env = {k: v for k, v in site.cli.env.items() if k != "SURETY_REPOSITORY"}
    log = tmp_path / "web.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "surety", "web", "--config", str(config)],
            env=env,
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}/login"
    try:
        wait_for(lambda: answers(url) or proc.poll() is not None, f"the console at {url}")
        assert answers(url), log.read_text()
        assert f"serving on http://127.0.0.1:{port}" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
