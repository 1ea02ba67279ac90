"""JobSpec round trips through JSON; every expected error kind has its own hint."""

from __future__ import annotations

import pytest

from surety.core.errors import (
    IntegrityError,
    Interrupted,
    ObjectNotFound,
    RepositoryLocked,
    SourceError,
    StorageError,
    StorageFull,
    SuretyError,
    UsageError,
    WrongPassphrase,
)
from surety.jobs.hints import hint_for
from surety.jobs.spec import JobSpec, job_name, split_job_name


def test_spec_round_trips_through_json() -> None:
    spec = JobSpec("nightly:backup", "backup", "nightly", "db1", 2, "2024-05-17T00:30:00+00:00")
    assert JobSpec.from_json(spec.to_json()) == spec
    assert JobSpec.for_job("nightly:check") == JobSpec("nightly:check", "check", "nightly", None)


def test_job_names() -> None:
    assert job_name("nightly", "verify") == "nightly:verify"
    assert split_job_name("team:a:backup") == ("team:a", "backup")
    with pytest.raises(UsageError, match="not a job name"):
        split_job_name("nightly")
    with pytest.raises(UsageError, match="not a job name"):
        split_job_name("nightly:prune")
    assert split_job_name("nightly:copy") == ("nightly", "copy")


def test_a_copy_spec_carries_its_point() -> None:
    spec = JobSpec("nightly:copy", "copy", "nightly", "db1", point="ab" * 32)
    assert JobSpec.from_json(spec.to_json()) == spec
    assert JobSpec.from_json(JobSpec.for_job("nightly:backup", "db1").to_json()).point is None


@pytest.mark.parametrize(
    "text", ["", "[]", '{"job": "x"}', '{"job":"a:b","kind":"prune","policy":"a","vm":null}']
)
def test_a_broken_spec_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="not a job spec"):
        JobSpec.from_json(text)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (WrongPassphrase("no key opens"), "passphrase_file"),
        (RepositoryLocked("locked by pid 7"), "surety unlock"),
        (StorageFull("no space"), "prune"),
        (SourceError("VM 'db1' is not running"), "qemu-guest-agent"),
        (IntegrityError("pack damaged"), "surety check --read-data"),
        (ObjectNotFound("data/ab missing"), "reachable"),  # a StorageError
        (StorageError("EIO"), "reachable"),
        (UsageError("bad option"), "surety config check"),
        (Interrupted("SIGTERM"), "nothing was committed"),
        (SuretyError("something"), "surety jobs log"),
    ],
)
def test_hint_for_each_kind_of_error(error: SuretyError, words: str) -> None:
    assert words in hint_for(error)
