"""Recovery targets: a policy's ``rpo`` and ``rto`` beside the proven figures (the age of the
last proven point, the lab's measured boot to ready), misses flagged on the VMs page and
the API, and counted on the overview."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette asks for httpx2; the httpx it has works the same
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from surety.web import WebSettings, create_app
from tests.prerequisites import require_import
from tests.web.site import Site, make_site
from tests.web.test_api import login

require_import("libvirt", "python3-libvirt (libvirt's test:///default driver)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return make_site(tmp_path_factory.mktemp("targets"))


def console(site: Site, tmp_path: Path, rto: str | None) -> Iterator[TestClient]:
    text = site.config.read_text()
    if rto is not None:
        text = text.replace('rpo = "1d"\n', f'rpo = "1d"\nrto = "{rto}"\n')
    config = tmp_path / "surety.toml"
    config.write_text(text)
    with TestClient(create_app(WebSettings(config))) as client:
        login(client, "vera")
        yield client


def test_a_recovery_time_above_the_rto_is_a_miss(site: Site, tmp_path: Path) -> None:
    for app in console(site, tmp_path, "10s"):  # the lab measured 23.4 s
        (vm,) = app.get("/api/v1/vms").json()
        assert (vm["rto_target_seconds"], vm["recovery_seconds"]) == (10, 23.4)
        assert (vm["rto_met"], vm["rpo_met"]) == (False, True)
        assert vm["misses"] == ["RTO: the measured recovery time is above the target"]
        assert vm["proven_point_age_seconds"] is not None
        overview = app.get("/api/v1/overview").json()
        assert (overview["outside_rto"], overview["outside_target"]) == (["test"], ["test"])
        page = app.get("/vms").text
        assert "target: 10 s" in page
        assert "RTO: the measured recovery time is above the target" in page
        assert 'id="outside-target"><b>1</b> of 1 protected' in app.get("/").text


def test_a_recovery_time_within_the_rto_is_met(site: Site, tmp_path: Path) -> None:
    for app in console(site, tmp_path, "1m"):
        (vm,) = app.get("/api/v1/vms").json()
        assert (vm["rto_target_seconds"], vm["rto_met"], vm["misses"]) == (60, True, [])
        overview = app.get("/api/v1/overview").json()
        assert (overview["outside_rto"], overview["outside_target"]) == ([], [])


def test_without_an_rto_nothing_is_judged(site: Site, tmp_path: Path) -> None:
    for app in console(site, tmp_path, None):
        (vm,) = app.get("/api/v1/vms").json()
        assert (vm["rto_target_seconds"], vm["rto_met"], vm["misses"]) == (None, None, [])
        assert "target: none set" in app.get("/vms").text
