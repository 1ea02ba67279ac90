"""Restore's data path: the chunks of a run opened one at a time, without copies.

``iter_run`` is ``Repository.read_run`` for a restore: one read of the run's
span, then per chunk a view of the span is authenticated and decrypted into one
new buffer (``MasterKeys.unseal_view``), decompressed (a raw payload stays a
view of that buffer: ``codec.decode_view``) and re-hashed with the keyed
BLAKE3 before it is yielded. Every check of ``read_run`` is kept. The bytes
path copied each chunk five to seven times while holding the GIL, and built
a whole run (up to 4 MiB) before the first write; here one chunk is written
while it is still in the CPU's cache.

Failures take ``read_run``'s path: when the shared read meets a missing pack
or a chunk fails a check, the chunks not yet yielded come from
``Repository.read_run``, which names the damage, relocates from a stale cache
and reads locked versions. Other storage errors are raised as they are.
Knows nothing of images or targets.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from surety.core.errors import IntegrityError, ObjectNotFound
from surety.repo import codec
from surety.repo.index import Location
from surety.repo.pack import chunk_kind
from surety.repo.repository import Repository

__all__ = ["iter_run"]


def iter_run(
    repo: Repository, run: Sequence[tuple[bytes, Location | None]]
) -> Iterator[bytes | memoryview]:
    """The plaintexts of ``run`` (chunks of one pack, see ``read_run``) in its order, each
    checked before it is yielded.

    One chunk at a time: the caller writes a chunk while its buffers are still in the
    CPU's cache, and the allocator hands the same memory to the next chunk. When a chunk
    fails, the run is read again through ``Repository.read_run`` and the chunks not yet
    yielded come from there (or its error is raised)."""
    locations = [loc for _, loc in run if loc is not None]
    if len(locations) != len(run):
        yield from repo.read_run(run)
        return
    first = min(locations, key=lambda loc: loc.offset)
    end = max(loc.offset + loc.length for loc in locations)
    if any(loc.pack != first.pack for loc in locations):
        raise ValueError("a run of chunks lies in one pack")
    done = 0
    try:
        span = memoryview(repo.storage.get(f"data/{first.pack}", first.offset, end - first.offset))
        for (chunk_id, _), loc in zip(run, locations, strict=True):
            start = loc.offset - first.offset
            what = f"chunk {chunk_id.hex()[:12]} in pack {loc.pack[:12]}"
            data = _open(repo, chunk_id, span[start : start + loc.length], loc, what)
            repo.collect_warnings()
            yield data
            done += 1
    except (ObjectNotFound, IntegrityError):
        yield from repo.read_run(run)[done:]  # names the damage, or finds the chunk elsewhere
    finally:
        repo.collect_warnings()


def _open(
    repo: Repository, chunk_id: bytes, sealed: memoryview, loc: Location, what: str
) -> bytes | memoryview:
    payload = repo.keys.unseal_view(chunk_kind(chunk_id), sealed, what)
    data = codec.decode_view(payload, loc.raw_length, what)
    if repo.keys.chunk_id(data) != chunk_id:
        raise IntegrityError(f"{what}: content does not match its hash")
    return data
