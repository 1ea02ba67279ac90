"""Test helpers for prune's two phases on S3: back-date the current candidate list.

A prune deletes a candidate only a grace period (at least 30 min) after it was
marked. Tests do not wait: they rewrite the newest candidate list with every
mark moved back (a new list object, newer than the one it replaces, as a later
prune would write it), with the repository's own keys.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from surety.repo.candidates import read_lists, write_list
from surety.repo.repository import Repository
from surety.repo.storage.retry import RetryingStorage
from surety.repo.storage.s3 import S3Storage
from tests.cli import PASSPHRASE
from tests.s3.fixtures import S3Bucket

__all__ = ["backdate_candidates", "open_in_process"]


def open_in_process(bucket: S3Bucket, prefix: str, identity: str = "backup") -> Repository:
    """The repository at ``s3://bucket/prefix``, opened in this process as ``identity``."""
    client = bucket.client(identity)  # type: ignore[arg-type]
    return Repository.open(RetryingStorage(S3Storage(bucket.name, prefix, client)), PASSPHRASE)


def backdate_candidates(repo: Repository, by: timedelta, delete_old: bool = True) -> int:
    """Move every mark of the current list ``by`` back; returns how many candidates it has."""
    lists = read_lists(repo)
    current = lists.current
    assert current is not None, f"no readable candidate list: {lists.problems}"
    moved = {name: when - by for name, when in current.objects.items()}
    newer = replace(current, time=current.time + timedelta(microseconds=1), objects=moved)
    write_list(repo, newer)
    if delete_old:
        for name in lists.names:
            repo.storage.delete(name)
    return len(moved)
