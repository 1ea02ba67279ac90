"""The REST API and pages through FastAPI's TestClient: authentication everywhere, roles,
CSRF, throttling, 404/409, --json parity with the CLI on the same catalog, audit rows."""

from __future__ import annotations

import json
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

with warnings.catch_warnings():  # starlette asks for httpx2; the httpx it has works the same
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from surety.catalog import RunResult
from surety.web import WebSettings, create_app
from surety.web import files as files_module
from surety.web.auth import add_api_token, add_user
from tests.prerequisites import require_import
from tests.web.browser import free_port
from tests.web.site import PASSWORD, Site, make_site

require_import("libvirt", "python3-libvirt (libvirt's test:///default driver)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    return make_site(tmp_path_factory.mktemp("web"))


@pytest.fixture
def app(site: Site) -> Iterator[TestClient]:
    with TestClient(create_app(WebSettings(site.config))) as client:
        yield client


def login(client: TestClient, user: str, password: str = PASSWORD) -> str:
    response = client.post(
        "/login", data={"user": user, "password": password, "next": "/"}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    return str(client.get("/api/v1/whoami").json()["csrf"])


def test_every_page_and_api_call_needs_authentication(app: TestClient) -> None:
    for path in (
        "/api/v1/status",
        "/api/v1/vms",
        "/api/v1/runs",
        "/api/v1/openapi.json",
        "/api/v1/vms/test/points",
        "/api/v1/repositories",
    ):
        assert app.get(path).status_code == 401, path
    for path in ("/", "/vms", "/jobs", "/repository", "/audit"):
        response = app.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login")
    assert app.post("/api/v1/jobs/nightly/backup/run").status_code == 401


def test_json_parity_with_the_cli(app: TestClient, site: Site) -> None:
    login(app, "vera")
    cli = site.cli
    env = {k: v for k, v in cli.env.items() if k != "SURETY_REPOSITORY"}
    status = json.loads(
        cli.run("status", "--json", "--config", site.config, check=False, env=env).stdout
    )
    assert app.get("/api/v1/status").json()["vms"] == status
    jobs = json.loads(cli.run("jobs", "list", "--json", "--config", site.config, env=env).stdout)
    assert [j["job"] for j in app.get("/api/v1/jobs").json()] == [j["job"] for j in jobs]
    points = json.loads(cli.run("points", "--json", "--catalog", site.catalog.path).stdout)
    api_points = app.get("/api/v1/vms/test/points").json()
    mine = [{k: v for k, v in p.items() if k != "repository"} for p in api_points]
    for key in points[0]:
        assert mine[0][key] == points[0][key], key
    assert mine == points
    run_id = site.catalog.create_run(
        job="nightly:backup", kind="backup", policy="nightly", vm="test", host="h1"
    )
    site.catalog.append_log(run_id, "a line")
    log = json.loads(
        cli.run("jobs", "log", str(run_id), "--json", "--config", site.config, env=env).stdout
    )
    assert app.get(f"/api/v1/runs/{run_id}").json() == log
    history = json.loads(
        cli.run("jobs", "history", "--json", "--config", site.config, env=env).stdout
    )
    assert app.get("/api/v1/runs").json() == history
    site.catalog.finish_run(run_id, RunResult("failed", error="x"))


def test_overview_vms_proof_and_repository_facts(app: TestClient, site: Site) -> None:
    login(app, "vera")
    overview = app.get("/api/v1/overview").json()
    assert overview["protected"] == ["test"]
    assert overview["unprotected"] == []
    (vm,) = app.get("/api/v1/vms").json()
    assert (vm["vm"], vm["policy"], vm["rpo_target_seconds"]) == ("test", "nightly", 86400)
    assert vm["last_verified_point"] == site.point
    assert vm["recovery_seconds"] == 23.4
    proof = app.get(f"/api/v1/points/{site.point}/proof").json()
    assert [p["probe"] for p in proof["proof"]["vms"][0]["probes"]] == [
        "agent",
        "tcp:5432",
        "marker",
    ]
    page = app.get(f"/points/{site.point}/proof").text
    assert "\x1b" not in page  # the serial console's escape sequences are not shown
    assert "[  OK  ] Reached unit 29" in page
    assert "no screenshot" in page
    (repo,) = app.get("/api/v1/repositories").json()
    assert [u["logical"] for u in repo["usage"]] == [1 << 20, 2 << 20, 3 << 20]
    assert repo["checks"][0]["status"] == "ok"
    assert "/api/v1/vms" in app.get("/api/v1/openapi.json").json()["paths"]
    page = app.get("/repository").text
    assert "<svg" in page
    assert "logical" in page


def test_unknown_ids_are_readable_404s(app: TestClient) -> None:
    login(app, "vera")
    assert app.get("/api/v1/runs/999999").status_code == 404
    assert "no run 999999" in app.get("/api/v1/runs/999999").json()["error"]
    page = app.get("/runs/999999")
    assert page.status_code == 404
    assert "no run 999999" in page.text
    assert "<h1>" in page.text
    assert app.get("/points/0123456789abcdef/proof").status_code == 404
    assert app.get("/vms/nosuchvm").status_code == 404
    assert app.get("/requests/424242").status_code == 404


def test_roles_csrf_409_and_audit(app: TestClient, site: Site) -> None:
    csrf = login(app, "vera")
    refused = app.post("/api/v1/jobs/nightly/backup/run?vm=test", headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 403
    assert "operator" in refused.json()["error"]
    app.cookies.clear()
    csrf = login(app, "otto")
    assert app.post("/api/v1/jobs/nightly/backup/run?vm=test").status_code == 403  # no CSRF
    bad = app.post("/actions/run", data={"policy": "nightly", "vm": "test", "csrf": "forged"})
    assert bad.status_code == 403
    ok = app.post("/api/v1/jobs/nightly/backup/run?vm=test", headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 202, ok.text
    request_id = ok.json()["request"]
    again = app.post("/api/v1/jobs/nightly/backup/run?vm=test", headers={"X-CSRF-Token": csrf})
    assert again.status_code == 409
    assert f"request {request_id}" in again.json()["error"]
    site.catalog.take_requests("h1")
    run_id = site.catalog.create_run(
        job="nightly:backup", kind="backup", policy="nightly", vm="test", host="h1"
    )
    site.catalog.mark_running(run_id, 1)
    held = app.post("/api/v1/vms/test/verify", headers={"X-CSRF-Token": csrf})
    assert held.status_code == 409
    assert f"held by run {run_id} (nightly:backup, running)" in held.json()["error"]
    state = app.get(f"/api/v1/requests/{request_id}").json()
    assert [r["id"] for r in state["runs"]] == [run_id]
    assert state["done"] is False
    site.catalog.finish_run(run_id, RunResult("failed", error="no guest agent"))
    assert app.get(f"/api/v1/requests/{request_id}").json()["done"] is True
    assert (
        app.post("/api/v1/jobs/nosuch/backup/run", headers={"X-CSRF-Token": csrf}).status_code
        == 404
    )
    assert app.get("/api/v1/audit").status_code == 403
    app.cookies.clear()
    login(app, "ann")
    rows = app.get("/api/v1/audit").json()
    actions = [(r["who"], r["action"], r["result"].split(":")[0]) for r in rows]
    assert ("otto", "run", "ok") in actions
    assert ("otto", "run", "refused") in actions
    assert ("vera", "/api/v1/jobs/nightly/backup/run", "refused") in actions
    assert ("otto", "login", "ok") in actions
    assert "otto" in app.get("/audit").text


def test_api_token_needs_no_csrf_and_acts_as_its_user(app: TestClient, site: Site) -> None:
    token = add_api_token(site.catalog, "vera", "monitoring")
    who = app.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}).json()
    assert (who["user"], who["role"], who["via"]) == ("vera", "viewer", "token")
    assert app.get("/api/v1/status", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_failed_logins_are_throttled_per_user_and_address(app: TestClient, site: Site) -> None:
    add_user(site.catalog, "tess", "viewer", PASSWORD)
    for _ in range(5):
        bad = app.post("/login", data={"user": "tess", "password": "wrong-password"})
        assert bad.status_code == 401
        assert "wrong user name or password" in bad.text
    throttled = app.post("/login", data={"user": "tess", "password": PASSWORD})
    assert throttled.status_code == 429
    assert "too many failed logins" in throttled.text
    other = app.post("/login", data={"user": "vera", "password": PASSWORD}, follow_redirects=False)
    assert other.status_code == 303  # another user from the same address still logs in


def test_unreachable_catalog_says_so(site: Site, tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    blocked = tmp_path / "file"
    blocked.write_text("")
    config.write_text(
        site.config.read_text().replace(str(site.catalog.path), str(blocked / "catalog.sqlite"))
    )
    with TestClient(create_app(WebSettings(config))) as client:
        page = client.post("/login", data={"user": "ann", "password": PASSWORD})
        assert page.status_code == 503
        assert "cannot open the catalog" in page.text


def test_an_expired_session_is_asked_to_log_in_again(app: TestClient, site: Site) -> None:
    login(app, "vera")
    assert app.get("/api/v1/whoami").status_code == 200
    with sqlite3.connect(site.catalog.path) as conn:
        conn.execute("UPDATE sessions SET expires = '2000-01-01T00:00:00+00:00'")
    assert app.get("/api/v1/whoami").status_code == 401
    page = app.get("/vms", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/vms"


def test_without_root_the_file_browser_says_so(
    app: TestClient, site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    login(app, "vera")
    monkeypatch.setattr(files_module.os, "geteuid", lambda: 1000)
    page = app.get(f"/files/{site.point}?path=/")
    assert page.status_code == 503
    assert "runs without root" in page.text
    assert "surety files ls|get" in page.text
    points = app.get("/vms/test").text
    assert "runs without root" in points


def test_logout_closes_the_session_and_admins_add_users(app: TestClient) -> None:
    csrf = login(app, "ann")
    form = {"name": "olga", "role": "operator", "password": "long-enough-1", "csrf": csrf}
    assert app.post("/users", data=form, follow_redirects=False).status_code == 303
    assert {"name": "olga", "role": "operator"}.items() <= next(
        u for u in app.get("/api/v1/users").json() if u["name"] == "olga"
    ).items()
    short = app.post("/users", data={**form, "password": "short"})
    assert short.status_code == 400
    assert "too short" in short.text
    assert app.post("/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
    assert app.get("/api/v1/whoami").status_code == 401
    app.cookies.clear()
    login(app, "olga", "long-enough-1")


def test_tls_serves_https_with_secure_cookies(site: Site, tmp_path: Path) -> None:
    cert, key = tmp_path / "web.crt", tmp_path / "web.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    port = free_port()
    env = {k: v for k, v in site.cli.env.items() if k != "SURETY_REPOSITORY"}
    with open(tmp_path / "web.log", "w") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "surety",
                "web",
                "--config",
                str(site.config),
                "--listen",
                f"127.0.0.1:{port}",
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(key),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        tls = ssl.create_default_context(cafile=str(cert))
        tls.check_hostname = False
        body = urllib.parse.urlencode({"user": "vera", "password": PASSWORD}).encode()
        deadline = time.monotonic() + 30
        while True:
            try:
                request = urllib.request.Request(f"https://127.0.0.1:{port}/login", data=body)
                opener = urllib.request.build_opener(
                    urllib.request.HTTPSHandler(context=tls), _NoRedirect()
                )
                response = opener.open(request, timeout=5)
                break
            except urllib.error.HTTPError as exc:
                response = exc
                break
            except OSError:
                assert proc.poll() is None, (tmp_path / "web.log").read_text()
                assert time.monotonic() < deadline, "surety web did not answer over TLS"
                time.sleep(0.2)
        response.close()
        assert response.status == 303
        cookie = response.headers["set-cookie"]
        assert "Secure" in cookie
        assert "HttpOnly" in cookie
    finally:
        proc.terminate()
        proc.wait(timeout=20)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def test_no_open_redirect_and_security_headers(app: TestClient) -> None:
    for target in ("//evil.example/x", "/\\evil.example", "https://evil.example/"):
        response = app.post(
            "/login",
            data={"user": "vera", "password": PASSWORD, "next": target},
            follow_redirects=False,
        )
        assert response.headers["location"] == "/", target
    page = app.get("/login")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
