"""One ``[repository.NAME]`` table -> a ``RepositoryConfig``, every problem recorded on the way.

An ``s3://`` repository may carry its own S3 settings - ``endpoint``, ``region``,
``profile`` (a profile of the AWS shared credentials/config files),
``credentials_file`` (that file, if not ``~/.aws/credentials``) and ``ca_bundle`` -
which every job using the repository gets instead of the process environment's
(``surety.app.configured``). Credentials are looked for up front, as an admin
would: a named profile must be in the files, and without one the environment
(``AWS_ACCESS_KEY_ID`` + ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``) or a
``default`` profile must provide them. Nothing here asks the network (and never
the cloud metadata service).

A repository that a policy copies to (``copy_to``) may have its own
``[repository.NAME.retention]``: applied to the copies after each copy run.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from pathlib import Path

from surety.config.model import RepositoryConfig
from surety.config.policy import read_retention
from surety.config.reader import Reader, Table

__all__ = ["REPOSITORY_KEYS", "S3_KEYS", "read_repository"]

S3_KEYS = ("endpoint", "region", "profile", "credentials_file", "ca_bundle")
REPOSITORY_KEYS = ("location", "passphrase_file", *S3_KEYS, "retention")


def read_repository(
    r: Reader, name: str, table: Table, environ: Mapping[str, str] | None = None
) -> RepositoryConfig:
    env = os.environ if environ is None else environ
    path = ("repository", name)
    r.known(table, path, REPOSITORY_KEYS)
    location = r.text(table, path, "location")
    if location is None and "location" not in table:
        r.problem(path, "location is required (a repository path or s3://BUCKET/PREFIX)")
    passphrase_file = r.file(table, path, "passphrase_file")
    if "passphrase_file" not in table and not env.get("SURETY_PASSPHRASE"):
        r.problem(
            (*path, "passphrase_file"),
            "required: the service runs unattended and reads the passphrase from this file "
            "(or SURETY_PASSPHRASE in its environment)",
        )
    retention, prune = read_retention(r, table, path)
    if location is not None and "://" not in location:  # a path: relative to the file's folder
        location = str((r.source.parent / Path(location).expanduser()).absolute())
    config = RepositoryConfig(
        name=name,
        location=location or "",
        passphrase_file=passphrase_file,
        endpoint=_endpoint(r, table, path),
        region=r.text(table, path, "region"),
        profile=r.text(table, path, "profile"),
        credentials_file=r.file(table, path, "credentials_file"),
        ca_bundle=r.file(table, path, "ca_bundle"),
        retention=retention,
        prune=prune,
    )
    if location is not None:
        _check_s3(r, table, path, config, env)
    return config


def _endpoint(r: Reader, table: Table, path: tuple[str, ...]) -> str | None:
    endpoint = r.text(table, path, "endpoint")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        r.problem((*path, "endpoint"), f"{endpoint!r} is not an http:// or https:// URL")
        return None
    return endpoint


def _check_s3(
    r: Reader,
    table: Table,
    path: tuple[str, ...],
    config: RepositoryConfig,
    env: Mapping[str, str],
) -> None:
    if not config.location.startswith("s3://"):
        for key in S3_KEYS:
            if key in table:
                r.problem((*path, key), "only for an s3:// location")
        return
    bucket = config.location.removeprefix("s3://").partition("/")[0]
    if not bucket:
        r.problem((*path, "location"), f"{config.location!r}: expected s3://BUCKET[/PREFIX]")
    why = _missing_credentials(config, env)
    if why is not None:
        r.problem((*path, "profile" if config.profile else "location"), why)


def _missing_credentials(config: RepositoryConfig, env: Mapping[str, str]) -> str | None:
    """Why no credentials would be found for ``config`` (None: they would be)."""
    files = _credential_files(config, env)
    if config.profile:
        if config.profile in _profiles(files):
            return None
        return f"no profile {config.profile!r} in {' or '.join(str(f) for f in files)}"
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        return None
    if env.get("AWS_PROFILE") or "default" in _profiles(files):
        return None
    return (
        "no S3 credentials: name a profile (profile = ..., from ~/.aws/credentials or "
        "credentials_file), or give the service AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )


def _credential_files(config: RepositoryConfig, env: Mapping[str, str]) -> list[Path]:
    home = Path(env.get("HOME") or Path.home())
    credentials = config.credentials_file or Path(
        env.get("AWS_SHARED_CREDENTIALS_FILE") or home / ".aws" / "credentials"
    )
    return [credentials, Path(env.get("AWS_CONFIG_FILE") or home / ".aws" / "config")]


def _profiles(files: list[Path]) -> set[str]:
    """Profile names of the credentials file (``[name]``) and the config file
    (``[profile name]``, ``[default]``); unreadable files count as empty."""
    found: set[str] = set()
    for number, file in enumerate(files):
        parser = configparser.RawConfigParser()
        try:
            parser.read(file)
        except (configparser.Error, UnicodeDecodeError):
            continue
        for section in parser.sections():
            found.add(section.removeprefix("profile ").strip() if number else section.strip())
    return found
