"""Restore a VM and start an instant recovery from the API and the page: run requests the
service executes, with the CLI's refusals (a viewer, no CSRF token, an unknown VM or point,
a VM a run holds, a VM in the way without the confirmation), each audited."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

with warnings.catch_warnings():  # starlette asks for httpx2; the httpx it has works the same
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from surety.catalog import RunResult
from surety.web import WebSettings, create_app
from tests.prerequisites import require_import
from tests.web.site import Site, make_site
from tests.web.test_api import login

require_import("libvirt", "python3-libvirt (libvirt's test:///default driver)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return make_site(tmp_path_factory.mktemp("restore"))  # VM "test" is on test:///default


@pytest.fixture
def app(site: Site) -> Iterator[TestClient]:
    with TestClient(create_app(WebSettings(site.config))) as client:
        yield client
    site.catalog.take_requests("elsewhere")  # each test starts with no pending request


def post(app: TestClient, path: str, csrf: str | None, **body: object) -> tuple[int, Any]:
    headers = {"X-CSRF-Token": csrf} if csrf else {}
    response = app.post(path, json=body, headers=headers)
    return response.status_code, response.json()


def test_a_viewer_is_refused(app: TestClient, site: Site) -> None:
    csrf = login(app, "vera")
    for action in ("restore", "instant"):
        code, answer = post(app, f"/api/v1/vms/test/{action}", csrf, point=site.point)
        assert code == 403
        assert "needs the operator role" in answer["error"]
    assert site.catalog.pending_requests("nightly:restore") == []


def test_without_the_csrf_token_nothing_is_asked(app: TestClient, site: Site) -> None:
    login(app, "otto")
    code, answer = post(app, "/api/v1/vms/test/restore", None, point=site.point, replace=True)
    assert code == 403
    assert "CSRF" in answer["error"]
    form = app.post("/actions/restore", data={"vm": "test", "point": site.point, "csrf": "x"})
    assert form.status_code == 403
    assert site.catalog.pending_requests("nightly:restore") == []


def test_unknown_vm_or_point_is_404(app: TestClient, site: Site) -> None:
    csrf = login(app, "otto")
    code, answer = post(app, "/api/v1/vms/test/restore", csrf, point="0123456789abcdef")
    assert code == 404
    assert "no restore point '0123456789abcdef'" in answer["error"]
    code, answer = post(app, "/api/v1/vms/nosuchvm/instant", csrf, point=site.point)
    assert code == 404
    assert "is of VM test, not nosuchvm" in answer["error"]
    page = app.post(
        "/actions/restore", data={"vm": "test", "point": "0123456789abcdef", "csrf": csrf}
    )
    assert page.status_code == 404
    assert "<h1>" in page.text  # a readable page


def test_a_vm_a_run_holds_is_409_naming_the_run(app: TestClient, site: Site) -> None:
    csrf = login(app, "otto")
    run_id = site.catalog.create_run(
        job="nightly:backup", kind="backup", policy="nightly", vm="test", host="h1"
    )
    site.catalog.mark_running(run_id, 1)
    try:
        for action in ("restore", "instant"):
            code, answer = post(
                app, f"/api/v1/vms/test/{action}", csrf, point=site.point, name="t2", replace=True
            )
            assert code == 409
            assert f"held by run {run_id} (nightly:backup, running)" in answer["error"]
    finally:
        site.catalog.finish_run(run_id, RunResult("failed", error="x"))


def test_a_vm_in_the_way_needs_the_confirmation(app: TestClient, site: Site) -> None:
    csrf = login(app, "otto")
    code, answer = post(app, "/api/v1/vms/test/restore", csrf, point=site.point)
    assert code == 400
    assert "a VM test is on the host" in answer["error"]
    assert "confirm with replace" in answer["error"]
    code, answer = post(app, "/api/v1/vms/test/instant", csrf, point=site.point)
    assert code == 400
    assert "needs a free name" in answer["error"]
    assert site.catalog.pending_requests("nightly:restore") == []
    assert site.catalog.pending_requests("nightly:instant") == []


def test_a_confirmed_restore_and_an_instant_recovery_are_asked_and_audited(
    app: TestClient, site: Site
) -> None:
    code, _ = post(app, "/api/v1/vms/test/restore", login(app, "vera"), point=site.point)
    assert code == 403
    app.cookies.clear()
    csrf = login(app, "otto")
    code, answer = post(
        app, "/api/v1/vms/test/restore", csrf, point=site.point[:12], replace=True, start=True
    )
    assert code == 202, answer
    assert (answer["job"], answer["vm"], answer["point"]) == ("nightly:restore", "test", site.point)
    asked = app.get(f"/api/v1/requests/{answer['request']}").json()
    assert asked["options"] == {"point": site.point, "name": None, "start": True, "replace": True}
    code, again = post(app, "/api/v1/vms/test/restore", csrf, point=site.point, replace=True)
    assert code == 409
    assert f"request {answer['request']}" in again["error"]
    page = app.post(
        "/actions/restore",
        data={
            "vm": "test",
            "point": site.point,
            "kind": "instant",
            "name": "test-ir",
            "csrf": csrf,
        },
        follow_redirects=False,
    )
    assert page.status_code == 303
    request_page = app.get(page.headers["location"]).text
    assert "nightly:instant" in request_page
    assert "as <b>test-ir</b>" in request_page
    options = site.catalog.request_options(int(page.headers["location"].rsplit("/", 1)[1]))
    assert options == {"point": site.point, "name": "test-ir", "start": False, "replace": False}
    app.cookies.clear()
    login(app, "ann")
    rows = app.get("/api/v1/audit").json()
    done = [(r["who"], r["action"], r["result"].split(":")[0]) for r in rows]
    assert ("otto", "restore", "ok") in done
    assert ("otto", "instant", "ok") in done
    assert ("otto", "restore", "refused") in done
    assert ("vera", "/api/v1/vms/test/restore", "refused") in done


def test_the_points_page_offers_the_restore_form_to_operators_only(
    app: TestClient, site: Site
) -> None:
    login(app, "otto")
    page = app.get("/vms/test").text
    assert 'id="restore-form"' in page
    assert "test is on this host" in page
    app.cookies.clear()
    login(app, "vera")
    assert 'id="restore-form"' not in app.get("/vms/test").text
