"""Per-repository S3 settings and copy_to in surety.toml: read, checked up front, one line
``FILE:LINE: key.path: why`` per problem (credentials looked for without any network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from surety.config import check_config, load_config
from tests.unit.config.conftest import WriteConfig

LOCAL = """
[repository.local]
location = "/srv/repo"
passphrase_file = "passphrase"
"""

POLICY = """
[policy.nightly]
repository = "local"
vms = "all"
schedule = "daily"
"""


@pytest.fixture(autouse=True)
def no_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing from the developer's or CI's AWS setup: an empty home, no AWS_* variables."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_CONFIG_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def problems(write_config: WriteConfig, text: str) -> list[str]:
    path = write_config(text)
    return [str(p).removeprefix(f"{path}:") for p in check_config(path)]


def test_s3_settings_and_the_copy_targets_retention_are_read(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "creds").write_text("[offsite]\naws_access_key_id = a\naws_secret_access_key = b\n")
    (tmp_path / "ca.pem").write_text("x\n")
    text = (
        LOCAL
        + """
[repository.offsite]
location = "s3://backups/kvm01"
passphrase_file = "passphrase"
endpoint = "https://s3.example.org:7480"
region = "eu-central-1"
profile = "offsite"
credentials_file = "creds"
ca_bundle = "ca.pem"
retention = { keep_last = 3 }
"""
        + POLICY
        + 'copy_to = "offsite"\n'
    )
    config = load_config(write_config(text))
    offsite = config.repositories["offsite"]
    assert offsite.credentials_file == tmp_path / "creds"
    assert offsite.s3_settings["ca_bundle"] == str(tmp_path / "ca.pem")
    assert (offsite.region, offsite.profile) == ("eu-central-1", "offsite")
    assert offsite.retention is not None
    assert offsite.retention.last == 3
    assert offsite.prune
    assert config.policies["nightly"].copy_to == "offsite"
    assert config.repositories["local"].s3_settings == {}


def test_bad_values_are_one_line_each(write_config: WriteConfig, tmp_path: Path) -> None:
    text = (
        LOCAL
        + """
[repository.offsite]
location = "s3://backups/kvm01"
passphrase_file = "passphrase"
endpoint = "s3.example.org"
profile = "nobody"
ca_bundle = "missing.pem"
region = 5
retention = { }
"""
        + POLICY
        + 'copy_to = "offsit"\nendpoint = "https://x"\n'
    )
    found = problems(write_config, text)
    home = Path.home()
    assert found == [
        "9: repository.offsite.endpoint: 's3.example.org' is not an http:// or https:// URL",
        f"10: repository.offsite.profile: no profile 'nobody' in {home}/.aws/credentials "
        f"or {home}/.aws/config",
        f"11: repository.offsite.ca_bundle: cannot read {tmp_path}/missing.pem: "
        "No such file or directory",
        "12: repository.offsite.region: expected a string, got integer 5",
        "13: repository.offsite.retention: no keep_* rule (e.g. keep_daily = 7): a retention "
        "without rules would forget every restore point",
        "19: policy.nightly.copy_to: no [repository.offsit] in this file (did you mean 'offsite'?)",
        "20: policy.nightly.endpoint: unknown key",
    ]


def test_missing_credentials_are_a_configuration_problem(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = LOCAL + '[repository.offsite]\nlocation = "s3://b/p"\npassphrase_file = "passphrase"\n'
    assert problems(write_config, text) == [
        "6: repository.offsite.location: no S3 credentials: name a profile (profile = ..., "
        "from ~/.aws/credentials or credentials_file), or give the service AWS_ACCESS_KEY_ID "
        "and AWS_SECRET_ACCESS_KEY"
    ]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "b")
    assert problems(write_config, text) == []


def test_s3_keys_on_a_local_repository_and_copying_to_itself_are_refused(
    write_config: WriteConfig,
) -> None:
    text = LOCAL + 'region = "eu-central-1"\n' + POLICY + 'copy_to = "local"\n'
    assert problems(write_config, text) == [
        "5: repository.local.region: only for an s3:// location",
        "11: policy.nightly.copy_to: 'local' is the policy's own repository "
        "(a copy goes to another one)",
    ]
