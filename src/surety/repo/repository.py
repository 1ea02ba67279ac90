"""The repository: config, keys, chunk index, image indexes and restore points.

Object names in storage::

    config           CONFIG_MAGIC + sealed JSON (format, id, chunk size, ...)
    keys/<id>        key files: the master keys wrapped by a passphrase
    data/<id>        packs of sealed chunks            (id = BLAKE3 of the pack)
    index/<id>       sealed index objects              (id = keyed hash)
    images/<id>      sealed image indexes              (id = keyed hash)
    points/<id>      sealed manifests = restore points (id = keyed hash)
    damaged/<id>     sealed damage records (format 2; ``repo.damage``)
    locks/<id>       JSON locks (``repo.lock``)

An immutable repository (format 3, ``immutable_days``; ``repo.immutable``)
writes every object but ``locks/`` with an S3 Object Lock retention; its
manifest is written with the point's locked-until date, after every object
the point needs was locked at least that long. A read whose stored bytes are
not the locked ones (deleted or replaced) reads the locked version and says so.

Commit order of a backup: packs -> index -> image indexes -> manifest, each
durable before the next starts; the manifest is the commit. Readers trust only
what a manifest reaches, so a crash before it leaves garbage, never a
half-visible restore point.

Damage is contained: a manifest, image index or index object that does not
authenticate is named (``notes``, ``damaged_points``, ``damaged_indexes``)
and skipped, so every other restore point still restores and backups still
work (a damaged index's chunks are absent, hence stored again). Chunks found
damaged are recorded in the repository (``record_damage``) so the next
backup heals them.
"""

from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from surety.core.errors import (
    AmbiguousRestorePoint,
    IntegrityError,
    ObjectExists,
    ObjectNotFound,
    RepositoryExists,
    RepositoryLocked,
    RepositoryNotFound,
    RestorePointNotFound,
    StorageError,
    StorageFull,
    StorageReadOnly,
    UsageError,
)
from surety.repo import codec
from surety.repo.cache import Loaded, cache_dir_for, cache_disabled, cache_key, load_table
from surety.repo.crypto import KdfParams, MasterKeys, wrap_master
from surety.repo.damage import Damage, decode_damage, encode_damage
from surety.repo.format import (
    CHUNK_SIZE_DEFAULT,
    CHUNK_SIZE_MAX,
    CHUNK_SIZE_MIN,
    CONFIG_MAGIC,
    FORMAT_VERSION,
    FORMAT_VERSION_IMMUTABLE,
    FORMAT_VERSION_OBJECT_STORAGE,
    PACK_SIZE_TARGET,
    READABLE_FORMATS,
)
from surety.repo.image import ImageIndex
from surety.repo.immutable import (
    ObjectLock,
    check_clock,
    lock_period,
    lock_step,
    object_lock_of,
    secure_point,
)
from surety.repo.index import ChunkIndex, Location, decode_index, encode_index
from surety.repo.keyring import open_keys
from surety.repo.lock import HeldLock, hold_lock
from surety.repo.manifest import Manifest
from surety.repo.pack import PackEntry, chunk_kind
from surety.repo.storage.base import Storage
from surety.repo.storage.memory import MemoryStorage

__all__ = ["RepoConfig", "Repository"]

T = TypeVar("T")

# Manifests read at once by ``points`` (every command that resolves a restore point reads
# them all): on object storage each is a request. 100 points on the local radosgw: 0.36 s
# one after another, 0.22 s with 8 at once (the client's CPU is then the limit; a distant
# endpoint's latency is not).
MANIFEST_READS = 8


@dataclass(frozen=True)
class RepoConfig:
    id: str
    chunk_size: int
    pack_size: int = PACK_SIZE_TARGET
    compression_level: int = 1
    created: str = ""
    immutable_days: int = 0  # format 3: restore points locked this many days (0: not immutable)


class Repository:
    def __init__(self, storage: Storage, keys: MasterKeys, config: RepoConfig) -> None:
        self.storage = storage
        self.keys = keys
        self.config = config
        self.notes: list[str] = []  # remarks for the user (stale locks removed, ...)
        self.key_name: str | None = None  # the key file (keys/<id>) that opened it
        self.held: HeldLock | None = None  # the lock this process holds, if any
        self.damaged_points: dict[str, str] = {}  # point id -> why its manifest is unreadable
        self.damaged_indexes: dict[str, str] = {}  # index object name -> why
        self._index: ChunkIndex | None = None
        self._recorded: set[tuple[bytes, str]] = set()
        self._cache_rebuilt = False  # the local index cache was rebuilt after a wrong location
        self.object_lock: ObjectLock | None = object_lock_of(storage)
        self.lock_extensions = 0  # PutObjectRetention calls made by commits (immutable)
        if self.object_lock is not None:
            if config.immutable_days:
                period = lock_period(config.immutable_days)
                self.object_lock.enable_object_lock(period + lock_step(period))
            else:
                self.object_lock.disable_object_lock()

    @property
    def immutable(self) -> bool:
        """Whether restore points are locked (format 3 with ``immutable_days``)."""
        return self.config.immutable_days > 0 and self.object_lock is not None

    def collect_warnings(self) -> None:
        """Move the storage's warnings (a locked version read instead) into ``notes``."""
        if self.object_lock is not None:
            self.notes.extend(f"warning: {w}" for w in self.object_lock.drain_warnings())

    # -- creation and opening -------------------------------------------------
    @classmethod
    def init(
        cls,
        storage: Storage,
        passphrase: str,
        chunk_size: int = CHUNK_SIZE_DEFAULT,
        kdf: KdfParams | None = None,
        immutable_days: int = 0,
    ) -> Repository:
        lock = _prepare_immutable(storage, immutable_days)
        if storage.exists("config"):
            raise RepositoryExists(f"{storage.describe()}: already a surety repository")
        if any(True for _ in storage.list("")):
            raise RepositoryExists(f"{storage.describe()}: not empty; refusing to init here")
        _check_chunk_size(chunk_size)
        if not passphrase:
            raise UsageError("an empty passphrase is not allowed")
        keys = MasterKeys.generate()
        config = RepoConfig(
            secrets.token_hex(16),
            chunk_size,
            created=datetime.now(UTC).isoformat(),
            immutable_days=immutable_days,
        )
        extra = {"host": socket.gethostname(), "created": config.created}
        key_name = f"keys/{secrets.token_hex(16)}"
        storage.put(key_name, wrap_master(keys, passphrase, kdf or KdfParams(), extra))
        fields = dict(config.__dict__)
        if not immutable_days:  # formats 1-2 have no such field
            fields.pop("immutable_days")
        version = FORMAT_VERSION_IMMUTABLE if immutable_days else FORMAT_VERSION
        if object_lock_of(storage) is not None:  # object storage: two-phase prune (format 4)
            version = FORMAT_VERSION_OBJECT_STORAGE
        body = json.dumps({"format": version, **fields}).encode()
        try:  # the commit of an init: of two at once, exactly one creates the config
            storage.create("config", CONFIG_MAGIC + keys.seal(b"config", body))
        except ObjectExists:
            storage.delete(key_name)
            raise RepositoryExists(
                f"{storage.describe()}: another `surety init` created a repository here first"
            ) from None
        if lock is not None:
            _check_kept(storage, lock, "config", immutable_days)
        repo = cls(storage, keys, config)
        repo.key_name = key_name
        return repo

    @classmethod
    def open(cls, storage: Storage, passphrase: str) -> Repository:
        lock = object_lock_of(storage)
        if lock is not None:  # an Object Lock bucket: deleted or replaced objects read locked
            lock.detect_object_lock()
        try:
            raw_config = storage.get("config")
        except ObjectNotFound:
            if any(any(True for _ in storage.list(kind)) for kind in _OBJECT_KINDS):
                raise IntegrityError(
                    f"{storage.describe()}: the repository is damaged: its config is missing "
                    "(keys or data are present; do not `surety init` over them)"
                ) from None
            raise RepositoryNotFound(
                f"{storage.describe()}: not a surety repository (no config); "
                "create one with `surety init`"
            ) from None
        if not raw_config.startswith(CONFIG_MAGIC):
            raise RepositoryNotFound(f"{storage.describe()}: not a surety repository")
        sealed_config = raw_config[len(CONFIG_MAGIC) :]
        opened = open_keys(storage, passphrase, verify=lambda k: _opens(k, sealed_config))
        keys = opened.keys
        body = keys.unseal(b"config", sealed_config, "config")
        doc = json.loads(body)
        if doc.pop("format") not in READABLE_FORMATS:
            raise IntegrityError("config: repository format version not supported")
        repo = cls(storage, keys, RepoConfig(**doc))
        repo.key_name = opened.name
        repo.collect_warnings()
        return repo

    @contextmanager
    def lock(self, exclusive: bool, operation: str, read_only: bool = False) -> Iterator[HeldLock]:
        """Hold a repository lock; ``read_only`` commands go on unlocked on unwritable storage.

        Re-entrant: inside a lock this repository already holds, a request the
        held lock covers (shared in shared or exclusive, exclusive in exclusive)
        is that lock. Every use case takes the lock it needs; a caller that
        already holds one (a use case made of others) does not take two.
        """
        if self.held is not None:
            if exclusive and not self.held.exclusive:
                raise RepositoryLocked(
                    f"{operation!r} needs the exclusive lock inside a shared one (a bug)"
                )
            yield self.held
            return
        with hold_lock(self.storage, exclusive, operation, self.notes, read_only) as held:
            self.held = held
            try:
                yield held
            finally:
                self.held = None

    def list_points(self, name: str | None = None) -> list[Manifest]:
        """Restore points (of ``name``), oldest first, under a shared lock (none on read-only)."""
        with self.lock(exclusive=False, operation="points", read_only=True):
            return [p for p in self.points() if name is None or p.name == name]

    # -- sealed objects -----------------------------------------------------------
    def put_object(self, kind: str, plaintext: bytes) -> str:
        """Compress, seal and store a small object under ``<kind>/<keyed hash>``."""
        object_id = self.keys.object_id(plaintext)
        self.storage.put(f"{kind}/{object_id}", self._seal_object(kind, plaintext))
        return object_id

    def _seal_object(self, kind: str, plaintext: bytes) -> bytes:
        payload = codec.encode(plaintext, 3)
        return self.keys.seal(kind.encode(), len(plaintext).to_bytes(8, "little") + payload)

    def get_object(self, kind: str, object_id: str) -> bytes:
        name = f"{kind}/{object_id}"
        try:
            return self._open_object(kind, object_id, self.storage.get(name))
        except IntegrityError:
            if not self.immutable:
                raise
            return self._from_locked_version(
                name, lambda: self._open_object(kind, object_id, self.storage.get(name))
            )
        finally:
            self.collect_warnings()

    def _open_object(self, kind: str, object_id: str, sealed: bytes) -> bytes:
        what = f"{kind}/{object_id[:12]}"
        body = self.keys.unseal(kind.encode(), sealed, what)
        plaintext = codec.decode(body[8:], int.from_bytes(body[:8], "little"), what)
        if self.keys.object_id(plaintext) != object_id:
            raise IntegrityError(f"{what}: content does not match its name")
        return plaintext

    def _from_locked_version(self, name: str, read: Callable[[], T]) -> T:
        """``read`` again from each other locked version of ``name`` until one verifies.

        The current version failed its hash/tag: on an immutable repository it may be
        a locked overwrite; the original (the oldest locked version) is the one to trust.
        Re-raises the first failure when no version verifies.
        """
        lock = self.object_lock
        assert lock is not None
        first = lock.pinned_version(name)
        for version in lock.locked_versions(name):
            if version == first:
                continue
            lock.pin_version(name, version, "its current version does not match its hash")
            try:
                return read()
            except IntegrityError:
                continue
        raise IntegrityError(f"{name}: no stored version matches its hash")

    # -- chunk index --------------------------------------------------------------
    def index(self, use_cache: bool = True, rebuild: bool = False) -> ChunkIndex:
        """The chunk index: damage records first, then every index object that opens.

        With the local cache (``repo.cache``; not for a memory storage, nor with
        ``SURETY_NO_CACHE=1``, nor ``use_cache=False``) only index objects not
        merged before are read from storage; ``rebuild``: the table is built afresh
        from every index object (``check``).
        """
        if self._index is None:
            damage = self.damage_records()
            if use_cache and self.cache_dir() is not None:
                index = self._cached_index(damage, rebuild)
            else:
                index = ChunkIndex()
                for record in damage:
                    index.mark_damaged(record.chunk_id, record.pack)
                for name, _size in self.storage.list("index/"):
                    index.index_names.add(name)
                    packs = self._read_index(name)
                    for pack_id, entries in packs or []:
                        index.add_pack(pack_id, entries)
            self._index = index
        return self._index

    def cache_dir(self) -> Path | None:
        """This repository's local cache directory (None: no cache)."""
        if cache_disabled() or isinstance(self.storage, MemoryStorage):
            return None
        return cache_dir_for(self.config.id)

    def rebuild_cache(self) -> Loaded:
        """Build the local index cache afresh from storage (``surety cache rebuild``)."""
        self._index = None
        return self._load_cache(rebuild=True)

    def _load_cache(self, rebuild: bool = False) -> Loaded:
        cache_dir = self.cache_dir()
        assert cache_dir is not None
        listing = dict(self.storage.list("index/"))
        return load_table(
            cache_dir,
            cache_key(self.keys.object_id),
            listing,
            read=self._read_index,
            notes=self.notes,
            rebuild=rebuild,
        )

    def _cached_index(self, damage: list[Damage], rebuild: bool = False) -> ChunkIndex:
        loaded = self._load_cache(rebuild)
        index = ChunkIndex(loaded.table)
        for record in damage:
            index.mark_damaged(record.chunk_id, record.pack)
        for name, packs in loaded.in_memory:
            index.index_names.add(name)
            for pack_id, entries in packs:
                index.add_pack(pack_id, entries)
        index.index_names.update(self.damaged_indexes)
        return index

    def _read_index(self, name: str) -> list[tuple[str, list[PackEntry]]] | None:
        try:
            return decode_index(self.get_object("index", name[6:]), name)
        except IntegrityError as exc:
            self._index_damaged(name, exc)
            return None

    def _index_damaged(self, name: str, exc: IntegrityError) -> None:
        self.damaged_indexes[name] = str(exc)
        self.notes.append(
            f"{exc}; its chunks are treated as absent (a backup stores them again; "
            "`surety repair index` rebuilds the index from the packs)"
        )

    # -- damage records (repo.damage) ---------------------------------------------
    def damage_records(self) -> list[Damage]:
        found: list[Damage] = []
        for name, _size in self.storage.list("damaged/"):
            try:
                found.extend(decode_damage(self.get_object("damaged", name[8:]), name))
            except IntegrityError as exc:
                self.notes.append(f"{exc} (skipped)")
        return found

    def record_damage(self, chunk_id: bytes, pack: str, reason: str) -> None:
        """Record a damaged or missing chunk copy in the repository (best effort)."""
        self.record_damages([(chunk_id, pack)], reason)

    def record_damages(self, copies: list[tuple[bytes, str]], reason: str) -> None:
        """Record damaged or missing chunk copies (chunk id, pack id) in one damage record."""
        new = [c for c in dict.fromkeys(copies) if c not in self._recorded]
        if not new:
            return
        self._recorded.update(new)
        if self._index is not None:
            for chunk_id, pack in new:
                self._index.mark_damaged(chunk_id, pack)
        found, host = datetime.now(UTC).isoformat(), socket.gethostname()
        records = [Damage(c.hex(), pack, reason, found, host) for c, pack in new]
        try:
            self.put_object("damaged", encode_damage(records))
        except (StorageReadOnly, StorageFull) as exc:
            self.notes.append(f"damage of {len(new)} chunk(s) not recorded: {exc}")

    def forget_index(self) -> None:
        """Drop the cached index (after prune rewrote it)."""
        self._index = None

    def write_index(self, packs: list[tuple[str, list[PackEntry]]]) -> str:
        name = self.put_object("index", encode_index(packs))
        index = self.index()
        for pack_id, entries in packs:
            index.add_pack(pack_id, entries)
        index.index_names.add(f"index/{name}")
        return name

    # -- chunks -------------------------------------------------------------------
    def read_chunk(self, chunk_id: bytes, location: Location | None = None) -> bytes:
        """Fetch, authenticate, decompress and hash-check one chunk."""
        loc = location or self.index().get(chunk_id)
        what = f"chunk {chunk_id.hex()[:12]}"
        if loc is None:
            raise IntegrityError(f"{what}: missing from the index{self._index_hint()}")
        try:
            sealed = self.storage.get(f"data/{loc.pack}", loc.offset, loc.length)
            return self.open_chunk(
                chunk_id, sealed, loc.raw_length, f"{what} in pack {loc.pack[:12]}"
            )
        except ObjectNotFound:
            moved = self._relocated(chunk_id, loc) if location is None else None
            if moved is not None:  # the local cache was wrong: read where storage says
                return self.read_chunk(chunk_id, moved)
            self.record_damage(chunk_id, loc.pack, "pack missing")
            raise IntegrityError(f"{what}: pack {loc.pack[:12]} is missing") from None
        except IntegrityError as exc:
            if self.immutable:
                return self._chunk_from_locked_version(chunk_id, loc, what, exc)
            moved = self._relocated(chunk_id, loc) if location is None else None
            if moved is not None:
                return self.read_chunk(chunk_id, moved)
            self.record_damage(chunk_id, loc.pack, str(exc))
            raise
        finally:
            self.collect_warnings()

    def read_run(self, run: Sequence[tuple[bytes, Location | None]]) -> list[bytes]:
        """Chunks stored close together in one pack (``restore.image`` groups them): fetched
        with one read of their span, each authenticated, decompressed and hash-checked on
        its own; returned in the order asked.

        One request instead of one per chunk (object storage: ~3,000 ranged GETs per GiB
        become a few dozen). When the shared read meets a missing pack or a chunk fails
        its check, every chunk of the run is read alone through ``read_chunk``, which
        names the damage, relocates from a stale cache and reads locked versions exactly
        as for a single chunk; other storage failures are raised as they are.
        """
        if len(run) == 1 or any(loc is None for _, loc in run):
            return [self.read_chunk(chunk_id, loc) for chunk_id, loc in run]
        locations = [loc for _, loc in run if loc is not None]
        first = min(locations, key=lambda loc: loc.offset)
        end = max(loc.offset + loc.length for loc in locations)
        if any(loc.pack != first.pack for loc in locations):
            raise ValueError("a run of chunks lies in one pack")
        try:
            blob = memoryview(
                self.storage.get(f"data/{first.pack}", first.offset, end - first.offset)
            )
            found = []
            for (chunk_id, _), loc in zip(run, locations, strict=True):
                start = loc.offset - first.offset
                what = f"chunk {chunk_id.hex()[:12]} in pack {loc.pack[:12]}"
                sealed = bytes(blob[start : start + loc.length])
                found.append(self.open_chunk(chunk_id, sealed, loc.raw_length, what))
            return found
        except (ObjectNotFound, IntegrityError):
            return [self.read_chunk(chunk_id, loc) for chunk_id, loc in run]
        finally:
            self.collect_warnings()

    def _relocated(self, chunk_id: bytes, loc: Location) -> Location | None:
        """After a failed read at a location the local cache gave: bring the cache up to
        date with storage (once per process; a table that authenticates can only be
        stale, e.g. a prune repacked the chunk since) and give the chunk's location if
        it differs. The cache alone never makes a chunk count as damaged."""
        index = self._index
        if index is None or index.table is None or self._cache_rebuilt:
            return None
        self._cache_rebuilt = True
        loaded = self._load_cache()
        index.replace_table(loaded.table)
        for name, packs in loaded.in_memory:
            for pack_id, entries in packs:
                index.add_pack(pack_id, entries)
            index.index_names.add(name)
        moved = index.get(chunk_id)
        if moved is None or moved == loc:
            return None
        self.notes.append(
            f"the local index cache gave a wrong location for chunk {chunk_id.hex()[:12]}; "
            "it was brought up to date from the repository"
        )
        return moved

    def _chunk_from_locked_version(
        self, chunk_id: bytes, loc: Location, what: str, failure: IntegrityError
    ) -> bytes:
        def read() -> bytes:
            sealed = self.storage.get(f"data/{loc.pack}", loc.offset, loc.length)
            return self.open_chunk(chunk_id, sealed, loc.raw_length, what)

        try:
            return self._from_locked_version(f"data/{loc.pack}", read)
        except IntegrityError:
            self.record_damage(chunk_id, loc.pack, str(failure))
            raise failure from None

    def _index_hint(self) -> str:
        if not self.damaged_indexes:
            return ""
        return f" ({len(self.damaged_indexes)} damaged index object(s): run `surety repair index`)"

    def open_chunk(self, chunk_id: bytes, sealed: bytes, raw_length: int, what: str) -> bytes:
        self.collect_warnings()
        data = codec.decode(self.keys.unseal(chunk_kind(chunk_id), sealed, what), raw_length, what)
        if self.keys.chunk_id(data) != chunk_id:
            raise IntegrityError(f"{what}: content does not match its hash")
        return data

    # -- image indexes and restore points -----------------------------------------
    def put_image(self, image: ImageIndex) -> str:
        return self.put_object("images", image.encode())

    def get_image(self, image_id: str) -> ImageIndex:
        return ImageIndex.decode(self.get_object("images", image_id), f"image {image_id[:12]}")

    def commit(self, manifest: Manifest) -> str:
        """Write the manifest: the atomic commit of a restore point (if our lock still holds)."""
        if self.held is not None:
            self.held.check()
        if not self.immutable:
            return self.put_object("points", manifest.encode())
        assert self.object_lock is not None
        plaintext = manifest.encode()
        point_id = self.keys.object_id(plaintext)
        until = secure_point(
            self, self.object_lock, replace(manifest, id=point_id), self.config.immutable_days
        )
        if self.held is not None:
            self.held.check()
        self.object_lock.put_locked(
            f"points/{point_id}", self._seal_object("points", plaintext), until
        )
        return point_id

    def prepare_locked_writes(self) -> None:
        """Before a backup writes to an immutable repository: the clock must agree with
        the server's (lock dates are this host's)."""
        if self.immutable:
            assert self.object_lock is not None
            check_clock(self.object_lock)

    def points_get(self, point_id: str) -> Manifest:
        return Manifest.decode(self.get_object("points", point_id), point_id)

    def points(self) -> list[Manifest]:
        """Every readable restore point; damaged manifests are named in notes and skipped."""
        point_ids = [name[7:] for name, _ in self.storage.list("points/")]
        found = []
        for point_id, read in zip(point_ids, self._read_manifests(point_ids), strict=True):
            if isinstance(read, Manifest):
                found.append(read)
            elif point_id not in self.damaged_points:
                self.damaged_points[point_id] = str(read)
                self.notes.append(f"{read}; skipped (drop it with `surety forget {point_id[:12]}`)")
        return sorted(found, key=lambda m: (m.finished, m.id))

    def _read_manifests(self, point_ids: list[str]) -> list[Manifest | IntegrityError]:
        """``points_get`` of each id, in order, ``MANIFEST_READS`` at a time; a manifest
        that does not authenticate gives its error (other errors are raised)."""

        def read(point_id: str) -> Manifest | IntegrityError:
            try:
                return self.points_get(point_id)
            except IntegrityError as exc:
                return exc

        if len(point_ids) < 2:
            return [read(point_id) for point_id in point_ids]
        workers = min(MANIFEST_READS, len(point_ids))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="surety-points") as pool:
            return list(pool.map(read, point_ids))

    def resolve(self, ref: str) -> Manifest:
        """A restore point by id, unique id prefix, or ``NAME@latest``."""
        points = self.points()
        if ref.endswith("@latest"):
            name = ref[: -len("@latest")]
            named = [p for p in points if p.name == name]
            if not named:
                raise RestorePointNotFound(f"no restore point named {name!r}")
            return named[-1]
        if len(ref) < 4 or any(c not in "0123456789abcdef" for c in ref):
            raise RestorePointNotFound(
                f"{ref!r} is not a restore point id (use an id prefix of 4+ hex digits "
                "or NAME@latest)"
            )
        matches = [p for p in points if p.id.startswith(ref)]
        damaged = [i for i in self.damaged_points if i.startswith(ref)]
        if damaged and not matches:
            raise IntegrityError(self.damaged_points[damaged[0]])
        if not matches:
            raise RestorePointNotFound(f"no restore point {ref!r}")
        if len(matches) > 1:
            raise AmbiguousRestorePoint(
                f"{ref!r} matches {len(matches)} restore points; give more digits"
            )
        return matches[0]

    def forget(self, point_id: str) -> None:
        self.storage.delete(f"points/{point_id}")


def _prepare_immutable(storage: Storage, days: int) -> ObjectLock | None:
    """For ``init --immutable-days``: the bucket has Object Lock, the clocks agree;
    every write from here on is locked."""
    if days < 0:
        raise UsageError("--immutable-days must be at least 1")
    if not days:
        return None
    lock = object_lock_of(storage)
    if lock is None:
        raise UsageError(
            f"{storage.describe()}: immutable restore points need an S3 bucket with Object "
            "Lock; a local repository cannot be immutable"
        )
    lock.check_object_lock()
    check_clock(lock)
    period = lock_period(days)
    lock.enable_object_lock(period + lock_step(period))
    return lock


def _check_kept(storage: Storage, lock: ObjectLock, name: str, days: int) -> None:
    """The server kept ``name`` locked at least as long as asked (or it is an error)."""
    asked = lock.written.get(name)
    kept = lock.retained_until(name)
    if asked is not None and (kept is None or kept < asked - timedelta(seconds=1)):
        raise StorageError(
            f"{storage.describe()}: {name}: the server kept its retention only until "
            f"{kept.isoformat(timespec='seconds') if kept else 'never'}, shorter than asked "
            f"({asked.isoformat(timespec='seconds')}, {days} day(s)): the bucket does not "
            "honour Object Lock as surety needs"
        )


def _opens(keys: MasterKeys, sealed_config: bytes) -> bool:
    """True if ``keys`` are this repository's (a stray key of a losing ``init`` is not)."""
    try:
        keys.unseal(b"config", sealed_config, "config")
    except IntegrityError:
        return False
    return True


def _check_chunk_size(chunk_size: int) -> None:
    if not CHUNK_SIZE_MIN <= chunk_size <= CHUNK_SIZE_MAX or chunk_size & (chunk_size - 1):
        raise UsageError(
            f"chunk size must be a power of two between {CHUNK_SIZE_MIN // 1024} KiB "
            f"and {CHUNK_SIZE_MAX >> 20} MiB"
        )


_OBJECT_KINDS = ("keys/", "data/", "index/", "images/", "points/")
