"""Repository on MemoryStorage: init/open, sealed objects, restore point lookup, locks."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from surety.core.errors import (
    AmbiguousRestorePoint,
    IntegrityError,
    ObjectNotFound,
    RepositoryExists,
    RepositoryLocked,
    RepositoryNotFound,
    RestorePointNotFound,
    StorageReadOnly,
    UsageError,
    WrongPassphrase,
)
from surety.core.progress import NullProgress
from surety.repo.check import check_repository
from surety.repo.crypto import unwrap_master, wrap_master
from surety.repo.forget import forget_by_policy
from surety.repo.format import CHUNK_SIZE_MAX, CHUNK_SIZE_MIN, CONFIG_MAGIC, ZERO_ID
from surety.repo.image import ImageIndex
from surety.repo.lock import STALE_AFTER, Holder, hold_lock
from surety.repo.manifest import Manifest
from surety.repo.prune import prune_repository
from surety.repo.repository import Repository
from surety.repo.retention import RetentionPolicy
from surety.repo.storage import MemoryStorage, Storage
from surety.repo.storage.faulty import FaultyStorage
from surety.repo.storage.wrapper import StorageWrapper
from surety.repo.writer import ChunkWriter, prepare_chunk
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE, make_manifest

# -- init / open ----------------------------------------------------------------------


def test_init_writes_config_and_one_key_file(repo: Repository, storage: MemoryStorage) -> None:
    names = sorted(name for name, _ in storage.list())
    assert names[0] == "config"
    assert [n for n in names if n.startswith("keys/")] == names[1:]
    assert len(names) == 2
    assert storage.get("config").startswith(CONFIG_MAGIC)
    assert repo.config.chunk_size == CHUNK_SIZE_MIN
    assert len(repo.config.id) == 32


def test_open_with_the_right_passphrase(repo: Repository, storage: MemoryStorage) -> None:
    opened = Repository.open(storage, PASSPHRASE)
    assert opened.config == repo.config
    assert opened.keys.material == repo.keys.material


def test_open_with_a_wrong_passphrase(repo: Repository, storage: MemoryStorage) -> None:
    with pytest.raises(WrongPassphrase):
        Repository.open(storage, PASSPHRASE + "!")


def test_open_empty_storage_is_not_a_repository(storage: MemoryStorage) -> None:
    with pytest.raises(RepositoryNotFound):
        Repository.open(storage, PASSPHRASE)


def test_open_foreign_config_is_not_a_repository(storage: MemoryStorage) -> None:
    storage.put("config", b"[core]\nrepositoryformatversion = 0\n")
    with pytest.raises(RepositoryNotFound):
        Repository.open(storage, PASSPHRASE)


def test_open_without_key_files_is_not_a_repository(
    repo: Repository, storage: MemoryStorage
) -> None:
    for name, _ in list(storage.list("keys/")):
        storage.delete(name)
    with pytest.raises(RepositoryNotFound, match="no key files"):
        Repository.open(storage, PASSPHRASE)


def test_tampered_config_is_integrity_error(repo: Repository, storage: MemoryStorage) -> None:
    config = bytearray(storage.get("config"))
    config[-1] ^= 1
    storage.put("config", bytes(config))
    with pytest.raises(IntegrityError):
        Repository.open(storage, PASSPHRASE)


def test_init_twice_is_refused(repo: Repository, storage: MemoryStorage) -> None:
    before = dict(storage.list())
    with pytest.raises(RepositoryExists, match="already a surety repository"):
        Repository.init(storage, "other passphrase", kdf=CHEAP_KDF)
    assert dict(storage.list()) == before
    assert Repository.open(storage, PASSPHRASE).config == repo.config


def test_init_on_non_empty_storage_is_refused(storage: MemoryStorage) -> None:
    storage.put("somefile", b"precious")
    with pytest.raises(RepositoryExists, match="not empty"):
        Repository.init(storage, PASSPHRASE, kdf=CHEAP_KDF)
    assert not storage.exists("config")


@pytest.mark.parametrize(
    "chunk_size",
    [CHUNK_SIZE_MIN + 1, 3 * CHUNK_SIZE_MIN, CHUNK_SIZE_MIN // 2, CHUNK_SIZE_MAX * 2, 0],
)
def test_chunk_size_must_be_a_power_of_two_in_range(
    storage: MemoryStorage, chunk_size: int
) -> None:
    with pytest.raises(UsageError, match="chunk size"):
        Repository.init(storage, PASSPHRASE, chunk_size=chunk_size, kdf=CHEAP_KDF)
    assert list(storage.list()) == []


@pytest.mark.parametrize("chunk_size", [CHUNK_SIZE_MIN, 1 << 20, CHUNK_SIZE_MAX])
def test_valid_chunk_sizes(storage: MemoryStorage, chunk_size: int) -> None:
    Repository.init(storage, PASSPHRASE, chunk_size=chunk_size, kdf=CHEAP_KDF)
    assert Repository.open(storage, PASSPHRASE).config.chunk_size == chunk_size


def test_empty_passphrase_is_refused(storage: MemoryStorage) -> None:
    with pytest.raises(UsageError, match="passphrase"):
        Repository.init(storage, "", kdf=CHEAP_KDF)
    assert list(storage.list()) == []


def test_key_file_uses_the_given_kdf_parameters(repo: Repository, storage: MemoryStorage) -> None:
    [(name, _)] = list(storage.list("keys/"))
    doc = json.loads(storage.get(name))
    assert (doc["time_cost"], doc["memory_kib"], doc["parallelism"]) == (1, 8192, 1)
    assert doc["host"] == socket.gethostname()
    assert unwrap_master(storage.get(name), PASSPHRASE, name).material == repo.keys.material


def test_open_tries_every_key_file(repo: Repository, storage: MemoryStorage) -> None:
    # a second key file for another passphrase (as a future `key add` would write)
    storage.put("keys/" + "0" * 32, wrap_master(repo.keys, "second", CHEAP_KDF, {}))
    assert Repository.open(storage, "second").keys.material == repo.keys.material
    assert Repository.open(storage, PASSPHRASE).keys.material == repo.keys.material
    with pytest.raises(WrongPassphrase):
        Repository.open(storage, "third")


def test_a_damaged_key_file_does_not_hide_a_good_one(repo: Repository) -> None:
    storage = MemoryStorage()
    storage.put("keys/" + "0" * 32, b"{ damaged")  # listed first
    for name, _ in repo.storage.list():
        storage.put(name, repo.storage.get(name))
    assert Repository.open(storage, PASSPHRASE).keys.material == repo.keys.material


# -- sealed objects -------------------------------------------------------------------


@pytest.mark.parametrize("plaintext", [b"", b"small", b"compressible " * 1000, os.urandom(5000)])
def test_put_get_object_round_trip(repo: Repository, plaintext: bytes) -> None:
    object_id = repo.put_object("images", plaintext)
    assert object_id == repo.keys.object_id(plaintext)
    assert repo.storage.exists(f"images/{object_id}")
    assert repo.get_object("images", object_id) == plaintext
    if plaintext:
        assert plaintext not in repo.storage.get(f"images/{object_id}")


def test_same_object_gets_the_same_id(repo: Repository) -> None:
    assert repo.put_object("images", b"x" * 100) == repo.put_object("images", b"x" * 100)
    assert len(list(repo.storage.list("images/"))) == 1


def test_every_tampered_byte_of_an_object_is_detected(repo: Repository) -> None:
    object_id = repo.put_object("points", b"restore point " * 20)
    name = f"points/{object_id}"
    original = repo.storage.get(name)
    for position in range(len(original)):
        damaged = bytearray(original)
        damaged[position] ^= 0x10
        repo.storage.put(name, bytes(damaged))
        with pytest.raises(IntegrityError):
            repo.get_object("points", object_id)
    repo.storage.put(name, original)
    assert repo.get_object("points", object_id) == b"restore point " * 20


def test_truncated_object_is_detected(repo: Repository) -> None:
    object_id = repo.put_object("points", b"data" * 50)
    name = f"points/{object_id}"
    repo.storage.put(name, repo.storage.get(name)[:-1])
    with pytest.raises(IntegrityError):
        repo.get_object("points", object_id)


def test_object_swapped_under_another_name_is_detected(repo: Repository) -> None:
    first = repo.put_object("points", b"first point")
    second = repo.put_object("points", b"second point")
    repo.storage.put(f"points/{second}", repo.storage.get(f"points/{first}"))
    with pytest.raises(IntegrityError, match="does not match its name"):
        repo.get_object("points", second)


def test_object_moved_to_another_kind_is_detected(repo: Repository) -> None:
    object_id = repo.put_object("images", b"an image index")
    repo.storage.put(f"points/{object_id}", repo.storage.get(f"images/{object_id}"))
    with pytest.raises(IntegrityError):
        repo.get_object("points", object_id)


def test_object_of_another_repository_is_detected(repo: Repository) -> None:
    other = Repository.init(MemoryStorage(), PASSPHRASE, CHUNK_SIZE_MIN, kdf=CHEAP_KDF)
    object_id = other.put_object("points", b"foreign")
    repo.storage.put(f"points/{object_id}", other.storage.get(f"points/{object_id}"))
    with pytest.raises(IntegrityError):
        repo.get_object("points", object_id)


def test_missing_object(repo: Repository) -> None:
    with pytest.raises(ObjectNotFound):
        repo.get_object("points", "ab" * 32)


def test_image_round_trip(repo: Repository) -> None:
    image = ImageIndex(CHUNK_SIZE_MIN, CHUNK_SIZE_MIN * 2 + 1, (b"\1" * 32, ZERO_ID, b"\2" * 32))
    image_id = repo.put_image(image)
    assert repo.put_image(image) == image_id
    assert repo.get_image(image_id) == image


# -- chunks through the writer ----------------------------------------------------------


def test_written_chunks_read_back_after_reopen(repo: Repository, storage: MemoryStorage) -> None:
    zero = bytes(CHUNK_SIZE_MIN)
    chunks = [os.urandom(1000), b"compressible" * 5000, zero, b"last short chunk"]
    writer = ChunkWriter(repo)
    prepared = [prepare_chunk(repo.keys, c, zero, writer, 1) for c in chunks]
    for chunk in prepared:
        writer.add(chunk)
    writer.add(prepare_chunk(repo.keys, chunks[0], zero, writer, 1))  # duplicate
    index_name = writer.finish()
    assert index_name is not None
    assert prepared[2].chunk_id == ZERO_ID
    assert writer.new_chunks == 3
    assert len(list(storage.list("data/"))) == 1
    reopened = Repository.open(storage, PASSPHRASE)
    assert len(reopened.index()) == 3
    for chunk, data in zip(prepared, chunks, strict=True):
        if chunk.chunk_id != ZERO_ID:
            assert reopened.read_chunk(chunk.chunk_id) == data
    with pytest.raises(IntegrityError, match="missing from the index"):
        reopened.read_chunk(b"\7" * 32)


def test_finish_without_new_chunks_writes_no_index(repo: Repository) -> None:
    writer = ChunkWriter(repo)
    writer.add(prepare_chunk(repo.keys, bytes(100), bytes(CHUNK_SIZE_MIN), writer, 1))
    assert writer.finish() is None
    assert list(repo.storage.list("index/")) == []


# -- restore points -------------------------------------------------------------------

BASE = datetime(2024, 6, 1, 12, 0)


def test_commit_and_points(repo: Repository) -> None:
    later = make_manifest("web01", BASE + timedelta(hours=1))
    earlier = make_manifest("web01", BASE)
    later_id, earlier_id = repo.commit(later), repo.commit(earlier)
    points = repo.points()
    assert [p.id for p in points] == [earlier_id, later_id]
    assert points[1].finished == later.finished
    assert repo.points_get(later_id).id == later_id


class _OverlapCounter(StorageWrapper):
    """Counts the GETs of manifests in flight at once (each takes a little while)."""

    def __init__(self, inner: Storage) -> None:
        super().__init__(inner)
        self.guard = threading.Lock()
        self.in_flight = self.most_in_flight = 0

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        if not name.startswith("points/"):
            return super().get(name, offset, length)
        with self.guard:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.01)
            return super().get(name, offset, length)
        finally:
            with self.guard:
                self.in_flight -= 1


def test_points_reads_the_manifests_at_once_and_skips_damaged_ones(
    repo: Repository, storage: MemoryStorage
) -> None:
    ids = [repo.commit(make_manifest("web01", BASE + timedelta(hours=h))) for h in range(20)]
    for point_id in (ids[3], ids[11]):
        sealed = bytearray(storage.get(f"points/{point_id}"))
        sealed[-1] ^= 1
        storage.put(f"points/{point_id}", bytes(sealed))
    counter = _OverlapCounter(storage)
    opened = Repository.open(counter, PASSPHRASE)
    points = opened.points()
    assert [p.id for p in points] == [i for i in ids if i not in (ids[3], ids[11])]
    assert counter.most_in_flight > 1
    assert set(opened.damaged_points) == {ids[3], ids[11]}
    damaged = {ids[3], ids[11]}
    listed = [n[7:] for n, _ in storage.list("points/") if n[7:] in damaged]  # notes' order
    assert [note.split(":")[0] for note in opened.notes] == [f"points/{i[:12]}" for i in listed]
    assert all(f"surety forget {i[:12]}" in n for i, n in zip(listed, opened.notes, strict=True))
    assert len(opened.points()) == 18
    assert len(opened.notes) == 2  # a damaged manifest is named once


def test_points_raises_a_storage_error_of_any_manifest(
    repo: Repository, storage: MemoryStorage
) -> None:
    ids = [repo.commit(make_manifest("web01", BASE + timedelta(hours=h))) for h in range(5)]
    storage.delete(f"points/{ids[2]}")
    lister = _ListsStale(storage, f"points/{ids[2]}")
    with pytest.raises(ObjectNotFound):
        Repository.open(lister, PASSPHRASE).points()


class _ListsStale(StorageWrapper):
    """Lists one more name than it holds (a manifest forgotten since the listing)."""

    def __init__(self, inner: Storage, stale: str) -> None:
        super().__init__(inner)
        self.stale = stale

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        names = sorted([*super().list(prefix), *([(self.stale, 1)] if prefix == "points/" else [])])
        yield from names


def test_resolve_by_full_id_and_prefix(repo: Repository) -> None:
    point_id = repo.commit(make_manifest("web01", BASE))
    repo.commit(make_manifest("db01", BASE))
    assert repo.resolve(point_id).id == point_id
    assert repo.resolve(point_id[:12]).id == point_id
    assert repo.resolve(point_id).name == "web01"


def test_resolve_name_at_latest(repo: Repository) -> None:
    ids = [repo.commit(make_manifest("web01", BASE + timedelta(days=d))) for d in (3, 1, 2)]
    repo.commit(make_manifest("db01", BASE + timedelta(days=10)))
    assert repo.resolve("web01@latest").id == ids[0]
    assert repo.resolve("db01@latest").name == "db01"
    with pytest.raises(RestorePointNotFound, match="no restore point named"):
        repo.resolve("mail01@latest")


@pytest.mark.parametrize("ref", ["", "abc", "ABCD1234", "not-hex", "web01", "zzzz"])
def test_resolve_rejects_refs_that_are_not_ids(repo: Repository, ref: str) -> None:
    repo.commit(make_manifest())
    with pytest.raises(RestorePointNotFound) as info:
        repo.resolve(ref)
    assert not isinstance(info.value, AmbiguousRestorePoint)


def test_resolve_unknown_id(repo: Repository) -> None:
    point_id = repo.commit(make_manifest())
    unknown = "0123" if not point_id.startswith("0123") else "4567"
    with pytest.raises(RestorePointNotFound, match="no restore point"):
        repo.resolve(unknown)


def test_resolve_in_empty_repository(repo: Repository) -> None:
    with pytest.raises(RestorePointNotFound):
        repo.resolve("abcd")
    with pytest.raises(RestorePointNotFound):
        repo.resolve("web01@latest")


def test_resolve_ambiguous_prefix(repo: Repository) -> None:
    # ids are keyed hashes: commit points until two share a 4-digit prefix (birthday
    # bound: ~320 expected, 3000 fail with probability < 1e-29)
    seen: dict[str, str] = {}
    for n in range(3000):
        point_id = repo.commit(make_manifest("web01", BASE + timedelta(seconds=n)))
        if point_id[:4] in seen:
            break
        seen[point_id[:4]] = point_id
    else:
        pytest.fail("no shared 4-digit prefix among 3000 restore points")
    with pytest.raises(AmbiguousRestorePoint, match="matches 2"):
        repo.resolve(point_id[:4])
    assert repo.resolve(point_id).id == point_id
    assert repo.resolve(seen[point_id[:4]]).id == seen[point_id[:4]]


def test_forget_removes_a_point(repo: Repository) -> None:
    point_id = repo.commit(make_manifest())
    repo.forget(point_id)
    assert repo.points() == []
    with pytest.raises(RestorePointNotFound):
        repo.resolve(point_id)


# -- locks ----------------------------------------------------------------------------


def _locks(storage: Storage) -> list[dict[str, object]]:
    return [json.loads(storage.get(name)) for name, _ in storage.list("locks/")]


def test_lock_is_written_and_released(storage: MemoryStorage) -> None:
    with hold_lock(storage, exclusive=False, operation="backup"):
        [lock] = _locks(storage)
        assert lock["pid"] == os.getpid()
        assert lock["host"] == socket.gethostname()
        assert lock["exclusive"] is False
        assert lock["operation"] == "backup"
    assert _locks(storage) == []


def test_shared_lock_blocks_exclusive(storage: MemoryStorage) -> None:
    with hold_lock(storage, exclusive=False, operation="backup"):
        with (
            pytest.raises(RepositoryLocked, match="shared lock by 'backup'"),
            hold_lock(storage, exclusive=True, operation="prune"),
        ):
            pytest.fail("exclusive lock granted while a shared one is held")
        # the refused locker withdrew its own lock
        assert len(_locks(storage)) == 1
    assert _locks(storage) == []


@pytest.mark.parametrize("second_exclusive", [False, True])
def test_exclusive_lock_blocks_everyone(storage: MemoryStorage, second_exclusive: bool) -> None:
    with hold_lock(storage, exclusive=True, operation="prune"):
        with (
            pytest.raises(RepositoryLocked, match="exclusive lock by 'prune'"),
            hold_lock(storage, exclusive=second_exclusive, operation="backup"),
        ):
            pytest.fail("lock granted while an exclusive one is held")
        assert len(_locks(storage)) == 1


def test_two_shared_locks_coexist(storage: MemoryStorage) -> None:
    with hold_lock(storage, False, "backup"), hold_lock(storage, False, "restore"):
        assert sorted(lock["operation"] for lock in _locks(storage)) == ["backup", "restore"]
    assert _locks(storage) == []


def test_repository_lock_method_uses_repo_notes(repo: Repository) -> None:
    _put_lock(repo.storage, "locks/" + "ab" * 16)
    with repo.lock(exclusive=False, operation="check"):
        assert len(_locks(repo.storage)) == 1
        assert len(repo.notes) == 1
        assert "removed stale" in repo.notes[0]
        with pytest.raises(RepositoryLocked), repo.lock(exclusive=True, operation="prune"):
            pytest.fail("exclusive lock granted")
    assert _locks(repo.storage) == []


def _dead_pid() -> int:
    pid = 999999
    while Path(f"/proc/{pid}").exists():
        pid += 1
    return pid


def _put_lock(storage: Storage, name: str, **fields: object) -> None:
    me = Holder.me()
    doc = {
        "version": 2,
        "boot_id": me.boot_id,
        "pid_ns": me.pid_ns,
        "host": socket.gethostname(),
        "pid": _dead_pid(),
        "start_time": "x",
        "exclusive": True,
        "operation": "prune",
        "refreshed": time.time(),
    }
    doc.update(fields)
    storage.put(name, json.dumps(doc).encode())


@pytest.mark.parametrize("exclusive", [False, True])
def test_stale_lock_of_a_dead_local_process_is_removed(
    storage: MemoryStorage, exclusive: bool
) -> None:
    _put_lock(storage, "locks/" + "de" * 16)
    notes: list[str] = []
    with hold_lock(storage, exclusive=exclusive, operation="backup", notes=notes):
        assert not storage.exists("locks/" + "de" * 16)
        assert len(_locks(storage)) == 1
    assert len(notes) == 1
    assert "removed stale exclusive lock by 'prune'" in notes[0]


def test_lock_of_this_process_with_reused_pid_is_stale(storage: MemoryStorage) -> None:
    # same pid as ours but another start time: the pid was reused
    _put_lock(storage, "locks/" + "aa" * 16, pid=os.getpid(), start_time="1")
    notes: list[str] = []
    with hold_lock(storage, exclusive=True, operation="prune", notes=notes):
        pass
    assert len(notes) == 1
    assert _locks(storage) == []


def test_live_lock_of_another_host_is_respected(storage: MemoryStorage) -> None:
    _put_lock(storage, "locks/" + "bb" * 16, host="other-host", pid=1, refreshed=time.time())
    with (
        pytest.raises(RepositoryLocked, match="other-host"),
        hold_lock(storage, exclusive=False, operation="backup"),
    ):
        pytest.fail("lock granted")
    assert storage.exists("locks/" + "bb" * 16)
    assert len(_locks(storage)) == 1


def test_old_lock_of_another_host_is_stale(storage: MemoryStorage) -> None:
    old = time.time() - STALE_AFTER - 60
    _put_lock(storage, "locks/" + "cc" * 16, host="other-host", pid=1, refreshed=old)
    notes: list[str] = []
    with hold_lock(storage, exclusive=True, operation="prune", notes=notes):
        assert not storage.exists("locks/" + "cc" * 16)
    assert len(notes) == 1
    assert "other-host" in notes[0]


def test_unreadable_lock_is_treated_as_held(storage: MemoryStorage) -> None:
    storage.put("locks/" + "ee" * 16, b"{not json")
    with (
        pytest.raises(RepositoryLocked, match="unreadable lock"),
        hold_lock(storage, exclusive=False, operation="backup"),
    ):
        pytest.fail("lock granted")
    assert storage.exists("locks/" + "ee" * 16)


@pytest.mark.parametrize(
    "other",
    [
        {"pid_ns": "4026531999"},  # another PID namespace on this kernel (a container)
        {"boot_id": "00000000-1111-2222-3333-444444444444"},  # a clone sharing the storage
        {"boot_id": None, "pid_ns": None, "version": None},  # written by format 1
    ],
)
def test_a_pid_from_elsewhere_is_never_taken_for_dead(
    storage: MemoryStorage, other: dict[str, object]
) -> None:
    """Same host name, a pid that is dead *here*: only the refresh age may make it stale."""
    fields = {k: v for k, v in other.items() if v is not None}
    _put_lock(storage, "locks/" + "ab" * 16, **fields)
    if "version" in other:  # format 1 had no boot id, PID namespace or version
        doc = json.loads(storage.get("locks/" + "ab" * 16))
        for key in ("version", "boot_id", "pid_ns"):
            doc.pop(key)
        storage.put("locks/" + "ab" * 16, json.dumps(doc).encode())
    with (
        pytest.raises(RepositoryLocked, match="exclusive lock by 'prune'"),
        hold_lock(storage, exclusive=False, operation="backup"),
    ):
        pytest.fail("a live lock of another PID namespace was taken for stale")
    assert storage.exists("locks/" + "ab" * 16)
    _put_lock(storage, "locks/" + "ab" * 16, refreshed=time.time() - STALE_AFTER - 1, **fields)
    with hold_lock(storage, exclusive=False, operation="backup"):
        assert not storage.exists("locks/" + "ab" * 16)


def test_a_backup_that_lost_its_lock_does_not_commit(repo: Repository) -> None:
    manifest = Manifest(
        name="web01",
        kind="image",
        started=datetime.now(UTC),
        finished=datetime.now(UTC),
        host="h",
        disks=(),
    )
    with repo.lock(exclusive=False, operation="backup image web01") as held:
        repo.storage.delete(held.name)  # another process removed it as stale
        with pytest.raises(RepositoryLocked, match="lost its repository lock"):
            repo.commit(manifest)
    assert list(repo.storage.list("points/")) == []
    with repo.lock(exclusive=False, operation="backup image web01"):
        repo.commit(manifest)
    assert len(list(repo.storage.list("points/"))) == 1


def test_a_lock_not_refreshed_in_time_is_lost(repo: Repository) -> None:
    with repo.lock(exclusive=True, operation="prune") as held:
        held.last_refresh -= STALE_AFTER
        with pytest.raises(RepositoryLocked, match="lost"):
            held.check()


def test_refresh_does_not_bring_back_a_removed_lock(storage: MemoryStorage) -> None:
    with hold_lock(storage, exclusive=False, operation="backup") as held:
        storage.delete(held.name)
        held.refresh()
        assert held.lost
        assert not storage.exists(held.name)


def test_reading_on_unwritable_storage_goes_on_without_a_lock(storage: MemoryStorage) -> None:
    faulty = FaultyStorage(storage)
    faulty.fail_put_after(0, StorageReadOnly("locks/x: the repository cannot be written"))
    notes: list[str] = []
    with hold_lock(faulty, exclusive=False, operation="points", notes=notes, read_only=True):
        assert list(storage.list("locks/")) == []
    assert notes == ["no lock was taken: locks/x: the repository cannot be written"]
    for exclusive, read_only in ((True, True), (False, False)):
        with (
            pytest.raises(StorageReadOnly),
            hold_lock(faulty, exclusive=exclusive, operation="prune", read_only=read_only),
        ):
            pytest.fail("a lock was granted without being written")
    _put_lock(storage, "locks/" + "ef" * 16, pid=os.getpid(), start_time=Holder.me().start_time)
    with (
        pytest.raises(RepositoryLocked),
        hold_lock(faulty, exclusive=False, operation="points", read_only=True),
    ):
        pytest.fail("an exclusive lock was ignored by an unlocked reader")


def test_the_lock_is_reentrant_for_what_the_held_lock_covers(repo: Repository) -> None:
    with repo.lock(exclusive=True, operation="repair points") as outer:
        with repo.lock(exclusive=False, operation="forget") as inner:
            assert inner is outer
        assert len(_locks(repo.storage)) == 1
    with (
        repo.lock(exclusive=False, operation="check"),
        pytest.raises(RepositoryLocked, match="a bug"),
        repo.lock(exclusive=True, operation="prune"),
    ):
        pytest.fail("an exclusive lock inside a shared one")
    assert _locks(repo.storage) == []


def test_use_cases_take_the_lock_they_need(repo: Repository) -> None:
    """check, prune, forget and listing lock themselves: the CLI only calls them."""

    _put_lock(
        repo.storage, "locks/" + "ab" * 16, pid=os.getpid(), start_time=Holder.me().start_time
    )
    for use_case in (
        lambda: check_repository(repo, False, NullProgress()),
        lambda: prune_repository(repo, NullProgress()),
        lambda: forget_by_policy(repo, RetentionPolicy(last=1)),
        repo.list_points,
    ):
        with pytest.raises(RepositoryLocked, match="exclusive lock by 'prune'"):
            use_case()
