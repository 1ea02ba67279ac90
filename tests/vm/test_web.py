"""The web console against a real guest: ``surety web`` and ``surety service`` on
``qemu:///system``, headless Debian chromium driven by Playwright. Log in, see the guest
protected by a policy, back it up from the page and watch the run reach succeeded, then
open the new point in the file browser and download a file byte-identical to the guest's.

Screenshots go to ``SURETY_WEB_SCREENSHOTS`` (default a temporary folder, printed at the
end of the run).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from surety.catalog import Catalog
from surety.web.auth import add_user
from tests.cli import PASSPHRASE, cli_for
from tests.prerequisites import require, require_import
from tests.vm.conftest import SUMMARY, Guest
from tests.web.browser import CHROMIUM, chromium, login, shot, web_and_service
from tests.web.conftest import screenshot_folder
from tests.web.site import PASSWORD

pytestmark = pytest.mark.vm

sync_api = require_import("playwright.sync_api", "playwright (pip install -e '.[dev]')")
require(CHROMIUM.exists(), "Debian's chromium at /usr/bin/chromium (scripts/bootstrap)")


@pytest.fixture(scope="module")
def served(guest: Guest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    tmp = tmp_path_factory.mktemp("web-vm")
    cli = cli_for(tmp / "repo", dict(os.environ))
    cli.run("init")
    (tmp / "pass").write_text(PASSPHRASE + "\n")
    config = tmp / "surety.toml"
    config.write_text(
        f"""
[service]
libvirt_uri = "qemu:///system"
catalog = "{tmp / "catalog.sqlite"}"

[repository.main]
location = "{tmp / "repo"}"
passphrase_file = "{tmp / "pass"}"

[policy.nightly]
repository = "main"
vms = ["{guest.name}"]
schedule = "yearly"
consistency = "filesystem"
rpo = "1d"
retries = {{ attempts = 1, backoff = "1s" }}
"""
    )
    catalog = Catalog(tmp / "catalog.sqlite")
    add_user(catalog, "otto", "operator", PASSWORD)
    env = {k: v for k, v in cli.env.items() if k != "SURETY_REPOSITORY"}
    with web_and_service(config, env, tmp, idle_mounts=10) as base:
        yield tmp, base
    SUMMARY.append(f"web console screenshots (guest): {screenshot_folder()}")


@pytest.fixture(scope="module")
def browser(served: tuple[Path, str]) -> Iterator[Any]:
    with chromium(sync_api) as opened:
        yield opened


def test_back_up_a_real_guest_from_the_page_and_download_a_file(
    guest: Guest, served: tuple[Path, str], browser: Any
) -> None:
    tmp, base = served
    page = login(browser, base, "otto")
    assert guest.name in page.inner_text("#protected")
    shot(page, "vm-01-overview")
    page.goto(f"/vms/{guest.name}")
    page.click("#backup-now")
    page.wait_for_url(re.compile(r".*/requests/\d+$"))
    sync_api.expect(page.locator("#request-state")).to_have_text("done", timeout=600_000)
    assert "succeeded" in page.inner_text("#request-runs"), page.inner_text("#request-runs")
    shot(page, "vm-02-request-done")
    page.goto(f"/vms/{guest.name}")
    assert "filesystem" in page.inner_text("#points")
    shot(page, "vm-03-points")
    page.click("#points a:text('browse')")
    page.wait_for_url(re.compile(r".*/files/.*"))
    page.click("#entries a:text('etc/')")
    page.wait_for_url(re.compile(r".*path=(%2F|/)etc$"))
    shot(page, "vm-04-files")
    with page.expect_download() as download:
        page.click("#entries tr:has(td:text-is('hostname')) a.download")
    saved = tmp / "hostname"
    download.value.save_as(saved)
    assert saved.read_bytes() == guest.sh("cat /etc/hostname").stdout
    page.context.close()
