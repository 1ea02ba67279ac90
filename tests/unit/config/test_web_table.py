"""``[web]`` (the console ``surety service`` starts) and a policy's ``rto``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from surety.config import check_config, load_config
from surety.config.model import WebConsole
from tests.unit.config.conftest import WriteConfig

BASE = """
[repository.local]
location = "/srv/repo"
passphrase_file = "passphrase"

[policy.nightly]
vms = ["web1"]
schedule = "daily"
rpo = "1d"
rto = "15m"
"""


def problems(path: Path) -> list[str]:
    return [str(p).removeprefix(f"{path}:") for p in check_config(path)]


def test_without_a_web_table_the_console_is_off_and_rto_is_read(
    write_config: WriteConfig,
) -> None:
    config = load_config(write_config(BASE))
    assert config.web == WebConsole()
    assert config.web.enabled is False
    assert config.policies["nightly"].rto == timedelta(minutes=15)


def test_a_web_table_turns_it_on_with_its_address_and_tls(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "web.crt").write_text("cert")
    (tmp_path / "web.key").write_text("key")
    text = BASE + '\n[web]\nlisten = "[::1]:8443"\ntls_cert = "web.crt"\ntls_key = "web.key"\n'
    web = load_config(write_config(text)).web
    assert (web.enabled, web.host, web.port) == (True, "::1", 8443)
    assert web.tls_cert == tmp_path / "web.crt"
    assert web.tls_key == tmp_path / "web.key"
    off = load_config(write_config(BASE + "\n[web]\nenabled = false\n")).web
    assert off.enabled is False
    assert (off.host, off.port) == ("127.0.0.1", 8470)


def test_a_bad_web_table_names_each_problem(write_config: WriteConfig) -> None:
    text = BASE + '\n[web]\nlisten = "8470"\ntls_cert = "web.crt"\nport = 1\n'
    found = problems(write_config(text))
    assert any("web.listen: '8470': expected HOST:PORT" in p for p in found), found
    assert any("web.tls_cert: cannot read" in p for p in found), found
    assert any("web: give both tls_cert and tls_key, or neither" in p for p in found), found
    assert any("web.port: unknown key" in p for p in found), found


def test_a_bad_rto_is_refused(write_config: WriteConfig) -> None:
    found = problems(write_config(BASE.replace('rto = "15m"', 'rto = "soon"')))
    assert len(found) == 1
    assert "policy.nightly.rto" in found[0]
