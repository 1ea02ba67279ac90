"""The web console in a real browser: Debian's chromium, headless, driven by Playwright,
against ``surety web`` started as a real process on 127.0.0.1, beside ``surety service``
on libvirt's test driver (``test:///default``, VM "test"), over a catalog and repository
made by real runs. Each page is saved as a screenshot (see conftest)."""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import fskit
from tests.prerequisites import require, require_import
from tests.web.browser import CHROMIUM, CONSOLE_ERRORS, chromium, login, shot, web_and_service
from tests.web.conftest import screenshot_folder
from tests.web.site import Site, make_site

require_import("libvirt", "python3-libvirt (libvirt's test:///default driver)")
sync_api = require_import("playwright.sync_api", "playwright (pip install -e '.[dev]')")
require(CHROMIUM.exists(), "Debian's chromium at /usr/bin/chromium (scripts/bootstrap)")
_missing = fskit.missing_requirements()
require(_missing is None, str(_missing))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, str]]:
    tmp = tmp_path_factory.mktemp("browser")
    site = make_site(tmp, ext4=True)
    env = {k: v for k, v in site.cli.env.items() if k != "SURETY_REPOSITORY"}
    Path("/run/surety").mkdir(mode=0o700, exist_ok=True)  # short: unix socket paths are limited
    site.run_root = Path(tempfile.mkdtemp(prefix="web-", dir="/run/surety"))
    env["SURETY_RUNTIME_DIR"] = str(site.run_root)
    env["SURETY_WORKER_TEST_DELAY"] = "3"  # the run is still running when its page opens
    with web_and_service(site.config, env, tmp) as base:
        yield site, base
    assert fskit.leftovers(site.run_root) == []  # the web closed its mounts when it stopped
    site.run_root.rmdir()


@pytest.fixture(scope="module")
def browser(served: tuple[Site, str]) -> Iterator[Any]:
    with chromium(sync_api) as opened:
        yield opened


def test_operator_backs_up_from_the_page_and_reads_proof_and_files(
    served: tuple[Site, str], browser: Any
) -> None:
    site, base = served
    page = login(browser, base, "otto")
    assert page.inner_text("#protected") == "test"
    shot(page, "01-overview")
    page.goto("/vms")
    assert "nightly" in page.inner_text("#vms")
    assert "23 s boot to ready" in page.inner_text(
        "#vms"
    )  # measured recovery time of the proven point
    shot(page, "02-vms")
    page.goto("/vms/test")
    shot(page, "03-points")
    page.click("#backup-now")
    page.wait_for_url(re.compile(r".*/requests/\d+$"))
    assert page.inner_text("#request-state") == "in progress"
    sync_api.expect(page.locator("#request-runs .badge")).to_have_text("running")  # polled
    sync_api.expect(page.locator("#request-state")).to_have_text("done", timeout=60_000)
    runs = page.inner_text("#request-runs")
    assert "failed" in runs  # the test driver's VM has no guest agent: the run ends, failed
    assert "guest agent" in runs
    shot(page, "04-request-done")
    page.click("#request-runs a")
    page.wait_for_url(re.compile(r".*/runs/\d+$"))
    assert "guest agent" in page.inner_text("main")
    shot(page, "05-run-log")
    page.goto("/jobs")
    assert "nightly:backup" in page.inner_text("#jobs")
    shot(page, "06-jobs")
    page.goto(f"/points/{site.point}/proof")
    assert "tcp:5432" in page.inner_text("main")
    assert "row 'before-snapshot' found" in page.inner_text("main")
    console = page.locator("pre.console")
    assert "\x1b" not in console.inner_text()
    assert "[  OK  ] Reached unit 29" in console.inner_text()  # escapes gone, text kept
    style = console.evaluate(
        "e => [getComputedStyle(e).fontFamily, getComputedStyle(e).overflowX,"
        " e.scrollWidth > e.clientWidth, e.scrollHeight > e.clientHeight]"
    )
    assert "mono" in style[0].lower(), style  # monospace ...
    assert style[1] == "auto", style
    assert style[2:] == [True, True], style  # ... and scrolls, never wraps or overflows the page
    assert "test login:" in page.evaluate(  # scrolled to its end: the last lines show
        "() => { const e = document.querySelector('pre.console');"
        " return e.scrollTop + e.clientHeight >= e.scrollHeight - 2 ? e.textContent : ''; }"
    )
    shot(page, "07-proof")
    page.goto("/repository")
    assert page.locator("svg.chart").count() == 1
    shot(page, "08-repository")
    page.goto(f"/files/{site.point}?path=/")
    assert "hello.txt" in page.inner_text("#entries")
    shot(page, "09-files")
    with page.expect_download() as download:
        page.click("#entries tr:has-text('hello.txt') a.download")
    saved = site.tmp / "hello.txt"
    download.value.save_as(saved)
    assert site.tree is not None
    assert saved.read_bytes() == (site.tree / "hello.txt").read_bytes()
    page.click("#entries a:text('etc/')")
    page.wait_for_url(re.compile(r".*path=(%2F|/)etc$"))
    with page.expect_download() as download:
        page.click("#entries tr:has-text('app.conf') a.download")
    download.value.save_as(site.tmp / "app.conf")
    assert (site.tmp / "app.conf").read_bytes() == (site.tree / "etc" / "app.conf").read_bytes()
    shot(page, "10-files-etc")
    assert site.run_root is not None
    assert fskit.leftovers(site.run_root)  # mounted while in use ...
    deadline = time.monotonic() + 30
    while fskit.leftovers(site.run_root) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert fskit.leftovers(site.run_root) == []  # ... and closed after 5 s idle
    refused = page.request.post(f"{base}/api/v1/jobs/nightly/backup/run?vm=test")
    assert refused.status == 403  # a POST without the CSRF token
    assert "CSRF" in refused.json()["error"]
    page.context.close()


def test_operator_starts_an_instant_recovery_and_follows_its_run(
    served: tuple[Site, str], browser: Any
) -> None:
    _, base = served
    page = login(browser, base, "otto")
    page.goto("/vms/test")
    page.select_option("#restore-form select[name=kind]", "instant")
    page.fill("#restore-form input[name=name]", "test-ir")
    shot(page, "03b-restore-form")
    page.click("#restore-submit")
    page.wait_for_url(re.compile(r".*/requests/\d+$"))
    assert "test-ir" in page.inner_text("#request-options")
    sync_api.expect(page.locator("#request-state")).to_have_text("done", timeout=60_000)
    runs = page.inner_text("#request-runs")
    # libvirt's test driver cannot serve the point's disks: the run ends, failed, saying why
    assert "failed" in runs, runs
    shot(page, "04b-instant-request")
    page.click("#request-runs a")
    page.wait_for_url(re.compile(r".*/runs/\d+$"))
    assert "nightly:instant" in page.inner_text("main")
    assert "worker pid" in page.inner_text("pre.log")  # the run's log
    assert "instant recovery needs a VM" in page.inner_text("main")  # the CLI's refusal
    assert "surety instant start" in page.inner_text("main")  # and what to do
    shot(page, "05b-instant-run")
    page.goto("/vms/test")
    page.click("#restore-submit")  # restore over the VM on the host, not confirmed
    assert "confirm with replace" in page.inner_text("main")
    shot(page, "05c-restore-unconfirmed")
    page.context.close()


def test_viewer_is_refused_the_action_and_admin_reads_the_audit(
    served: tuple[Site, str], browser: Any
) -> None:
    _, base = served
    page = login(browser, base, "vera")
    page.goto("/vms/test")
    assert page.locator("#backup-now").count() == 0
    csrf = page.get_attribute("meta[name=csrf]", "content")
    refused = page.request.post(
        f"{base}/actions/run", form={"policy": "nightly", "vm": "test", "csrf": csrf or ""}
    )
    assert refused.status == 403
    assert "operator" in refused.text()
    page.goto("/runs/999999")
    assert "no run 999999" in page.inner_text("main")
    shot(page, "11-not-found")
    page.context.close()
    page = login(browser, base, "ann")
    page.goto("/audit")
    audit = page.inner_text("#audit")
    assert "vera" in audit
    assert "refused" in audit
    assert "download" in audit
    shot(page, "12-audit")
    page.goto("/users")
    shot(page, "13-users")
    page.context.close()
    first = browser.new_page(base_url=base)
    first.goto("/login")
    shot(first, "00-login")
    first.close()
    assert os.listdir(screenshot_folder())
    # 4xx answers the tests provoked are logged as "Failed to load resource"; nothing else
    assert [e for e in CONSOLE_ERRORS if "Failed to load resource" not in e] == []
