"""A repository's own S3 settings replace the process environment while it is opened, and
stay for the worker's own repository (its NBD servers reopen it from the environment)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from surety.app.configured import aws_environment, environment_changes
from surety.config.model import RepositoryConfig


def test_a_profile_sets_the_static_keys_aside_and_everything_is_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "process")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "process-secret")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://process:7480")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    repository = RepositoryConfig(
        "offsite",
        "s3://b/p",
        endpoint="https://s3.example.org",
        profile="surety",
        credentials_file=Path("/etc/surety/aws-credentials"),
    )
    with aws_environment(environment_changes(repository)):
        assert os.environ["AWS_ENDPOINT_URL"] == "https://s3.example.org"
        assert os.environ["AWS_PROFILE"] == "surety"
        assert os.environ["AWS_SHARED_CREDENTIALS_FILE"] == "/etc/surety/aws-credentials"
        assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
        assert "AWS_ACCESS_KEY_ID" not in os.environ
        assert "AWS_SECRET_ACCESS_KEY" not in os.environ
    assert os.environ["AWS_ACCESS_KEY_ID"] == "process"
    assert os.environ["AWS_ENDPOINT_URL"] == "http://process:7480"
    assert "AWS_PROFILE" not in os.environ
    changes = environment_changes(repository)
    before = {name: os.environ.get(name) for name in changes}
    with aws_environment(changes, keep=True):
        pass
    assert os.environ["AWS_PROFILE"] == "surety"
    # put back by hand: monkeypatch.delenv would record "surety" and restore it at teardown,
    # and a later S3 test in this process would look for that profile
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def test_settings_not_given_and_local_repositories_change_nothing() -> None:
    assert environment_changes(RepositoryConfig("local", "/srv/repo")) == {}
    assert environment_changes(RepositoryConfig("s3", "s3://b/p")) == {}
    only_region = environment_changes(RepositoryConfig("s3", "s3://b/p", region="eu-west-1"))
    assert only_region == {"AWS_DEFAULT_REGION": "eu-west-1", "AWS_EC2_METADATA_DISABLED": "true"}
