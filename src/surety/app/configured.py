"""Open a repository the configuration names: its passphrase file and its own S3 settings.

A ``[repository.NAME]`` of an ``s3://`` location may name ``endpoint``,
``region``, ``profile``, ``credentials_file`` and ``ca_bundle``
(docs/configuration.md). The S3 client follows the AWS conventions of its
environment (``repo.storage.s3``), so the wiring here turns those settings
into that environment while the repository is opened: they **replace** the
process's (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``AWS_PROFILE``,
``AWS_SHARED_CREDENTIALS_FILE``, ``AWS_CA_BUNDLE``; with a profile the
process's ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``
are set aside, or they would win over it). The client holds its credentials
once made, so the settings are scoped to the opening (``scoped``), except for
the one repository a worker serves (``keep=True``): a verify job's NBD servers
(child processes) reopen the repository from *their* environment, so there the
process's environment becomes the repository's. ``AWS_EC2_METADATA_DISABLED``
stays ``true``: never a metadata probe.

``derive_configured_keys`` derives ahead, in a process that waits for work (the
service's spare worker), the passphrase keys of every configured repository into
the process's memo (``repo.crypto.remember_derived_keys``): the run's
``open_configured_repository`` then skips argon2 when the passphrase and the key
file are still the same. It opens nothing else and reports nothing: a failure
(a missing passphrase file, an unreachable bucket) is met again by the run,
which reports it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from surety.app.repository import open_repository, storage_for
from surety.config.model import Config, RepositoryConfig
from surety.core.errors import UsageError
from surety.repo.crypto import remember_derived_keys
from surety.repo.keyring import open_keys
from surety.repo.repository import Repository

__all__ = [
    "aws_environment",
    "derive_configured_keys",
    "environment_changes",
    "open_configured_repository",
    "repository_passphrase",
]

_VARIABLES = {
    "endpoint": "AWS_ENDPOINT_URL",
    "region": "AWS_DEFAULT_REGION",
    "profile": "AWS_PROFILE",
    "credentials_file": "AWS_SHARED_CREDENTIALS_FILE",
    "ca_bundle": "AWS_CA_BUNDLE",
}
_STATIC_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def environment_changes(repository: RepositoryConfig) -> dict[str, str | None]:
    """Variable -> value (None: unset) that give the S3 client ``repository``'s settings."""
    if not repository.location.startswith("s3://"):
        return {}
    settings = repository.s3_settings
    changes: dict[str, str | None] = {_VARIABLES[k]: v for k, v in settings.items()}
    if "profile" in settings:
        changes.update(dict.fromkeys(_STATIC_KEYS))
    if changes:
        changes["AWS_EC2_METADATA_DISABLED"] = "true"
    return changes


@contextmanager
def aws_environment(changes: Mapping[str, str | None], keep: bool = False) -> Iterator[None]:
    """``os.environ`` with ``changes`` applied; restored afterwards unless ``keep``."""
    saved = {name: os.environ.get(name) for name in changes}
    _apply(changes)
    try:
        yield
    finally:
        if not keep:
            _apply(saved)


def _apply(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def repository_passphrase(config: Config, name: str) -> str:
    """The passphrase of ``[repository.NAME]``: its file, else ``SURETY_PASSPHRASE``."""
    repository = _repository(config, name)
    if repository.passphrase_file is None:
        passphrase = os.environ.get("SURETY_PASSPHRASE")
        if passphrase:
            return passphrase
        raise UsageError(f"repository.{name}.passphrase_file is not set")
    try:
        text = repository.passphrase_file.read_text().rstrip("\n")
    except OSError as exc:
        raise UsageError(f"cannot read {repository.passphrase_file}: {exc.strerror}") from exc
    if not text:
        raise UsageError(f"{repository.passphrase_file} is empty")
    return text


def open_configured_repository(config: Config, name: str, *, keep: bool = False) -> Repository:
    """Open ``[repository.NAME]`` with its passphrase and its own S3 settings.

    ``keep``: leave the repository's settings in this process's environment (the
    worker of one job, whose child processes reopen the repository)."""
    repository = _repository(config, name)
    passphrase = repository_passphrase(config, name)
    with aws_environment(environment_changes(repository), keep=keep):
        return open_repository(repository.location, passphrase)


def derive_configured_keys(config: Config) -> None:
    """Derive every configured repository's passphrase key into this process's memo."""
    remember_derived_keys()
    for name, repository in config.repositories.items():
        try:
            passphrase = repository_passphrase(config, name)
            with aws_environment(environment_changes(repository)):
                open_keys(storage_for(repository.location), passphrase)
        except Exception:  # noqa: BLE001, S112 - ahead of need only: the run meets it and reports it
            continue


def _repository(config: Config, name: str) -> RepositoryConfig:
    repository = config.repositories.get(name)
    if repository is None:
        raise UsageError(f"repository {name!r} is not in the configuration")
    return repository
