"""Shared fixtures of the unit tests: cheap key derivation, in-memory repositories."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from hypothesis import settings

from surety.repo.crypto import KdfParams, MasterKeys
from surety.repo.format import CHUNK_SIZE_MIN
from surety.repo.manifest import DiskRecord, Manifest
from surety.repo.repository import Repository
from surety.repo.storage import MemoryStorage

# No per-example deadline: speed is measured in bench/, and a loaded CI machine
# (TCG guests next door) must not turn a slow example into a failure.
settings.register_profile("default", deadline=None)
settings.load_profile("default")
# `pytest --hypothesis-profile=thorough tests/unit` for a longer search
settings.register_profile("thorough", max_examples=2000, deadline=None)

PASSPHRASE = "correct horse battery staple"
# argon2id at its cheapest sensible cost: a repository opens in milliseconds.
CHEAP_KDF = KdfParams(time_cost=1, memory_kib=8 * 1024, parallelism=1)


@pytest.fixture(scope="session")
def keys() -> MasterKeys:
    """One set of master keys; session scoped so Hypothesis tests may use it."""
    return MasterKeys.generate()


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def repo(storage: MemoryStorage) -> Repository:
    return Repository.init(storage, PASSPHRASE, chunk_size=CHUNK_SIZE_MIN, kdf=CHEAP_KDF)


def make_manifest(
    name: str = "web01",
    finished: datetime | None = None,
    **changes: object,
) -> Manifest:
    """A small valid manifest; ``finished`` defaults to a fixed local time."""
    finished = finished or datetime(2024, 5, 17, 12, 0).astimezone()
    fields: dict[str, object] = {
        "name": name,
        "kind": "image",
        "started": finished - timedelta(minutes=5),
        "finished": finished,
        "host": "host1",
        "disks": (DiskRecord("vda", 1 << 20, "ab" * 32, "/dev/vg/web01"),),
    }
    fields.update(changes)
    return Manifest(**fields)  # type: ignore[arg-type]


@pytest.fixture
def manifest_factory() -> Callable[..., Manifest]:
    return make_manifest
