"""Helpers of the browser tests (stage 1 and the guest test): start ``surety web`` and
``surety service`` as processes, launch Debian's chromium through Playwright, log in, save
screenshots."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.web.conftest import screenshot_folder
from tests.web.site import PASSWORD

CHROMIUM = Path("/usr/bin/chromium")
CONSOLE_ERRORS: list[str] = []
"""Errors the pages logged in the browser's console (a script failing, a CSP refusal)."""
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--metrics-recording-only",
    "--disable-default-apps",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"surety web exited {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"surety web did not answer at {url}: {log.read_text()}")


@contextmanager
def web_and_service(
    config: Path, env: dict[str, str], logs: Path, idle_mounts: int = 5
) -> Iterator[str]:
    """``surety web`` on a free loopback port and ``surety service`` beside it; the base URL.
    Both are stopped (SIGTERM) at the end; the web's log must hold no traceback."""
    port = free_port()
    procs = []
    for name, argv in (
        (
            "web",
            [
                "web",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{port}",
                "--idle-mounts",
                str(idle_mounts),
            ],
        ),
        ("service", ["service", "--config", str(config), "--tick", "0.3"]),
    ):
        with open(logs / f"{name}.log", "w") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "surety", *argv], env=env, stdout=out, stderr=out
                )
            )
    try:
        _wait_http(f"http://127.0.0.1:{port}/login", procs[0], logs / "web.log")
        yield f"http://127.0.0.1:{port}"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    web_log = (logs / "web.log").read_text()
    assert "Traceback" not in web_log, web_log


@contextmanager
def chromium(sync_api: Any) -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        # launch() gives chromium a fresh --user-data-dir of its own (and refuses one given)
        opened = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield opened
        finally:
            opened.close()


def login(browser: Any, base: str, user: str) -> Any:
    """A new browser context logged in as ``user``, on the overview."""
    context = browser.new_context(
        base_url=base, accept_downloads=True, viewport={"width": 1400, "height": 900}
    )
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.on("console", lambda m: CONSOLE_ERRORS.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: CONSOLE_ERRORS.append(str(e)))
    page.goto("/")
    assert "/login" in page.url  # nothing without a session
    page.fill("input[name=user]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/$"))
    return page


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(screenshot_folder() / f"{name}.png"), full_page=True)
