"""Restore's data path: the chunks of a run opened one at a time, without copies.

``iter_run`` is ``Repository.read_run`` for a restore: one read of the run's
span, then per chunk a view of the span is authenticated and decrypted into one
new buffer (``MasterKeys.unseal_view``), decompressed (a raw payload stays a
view of that buffer: ``codec.decode_view``) and re-hashed with the keyed
BLAKE3 before it is yielded. Every check of ``read_run`` is kept. The bytes
path copied each chunk five to seven times while holding the GIL, and built
a whole run (up to 4 MiB) before the first write; here one chunk is written
while it is still in the CPU's cache.

The read of the span may be made ahead by the caller (``span_of`` says what
to read, ``read_span`` reads it; ``iter_run(..., fetch=)`` takes its result):
on object storage restore keeps several GETs in flight while earlier runs are
decrypted, and the checks and the fallback below are the same for a span read
ahead as for one read here (a read-ahead's error is the read's error).

Given a ``Scratch`` (one per thread), a chunk is opened into its buffers instead
(``MasterKeys.unseal_into``, ``codec.decode_into``): nothing is allocated per
chunk; what is yielded stays valid until the next chunk is asked for.

Failures take ``read_run``'s path: when the shared read meets a missing pack
or a chunk fails a check, the chunks not yet yielded come from
``Repository.read_run``, which names the damage, relocates from a stale cache
and reads locked versions. Other storage errors are raised as they are.
Knows nothing of images or targets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from surety.core.errors import IntegrityError, ObjectNotFound
from surety.repo import codec
from surety.repo.index import Location
from surety.repo.pack import chunk_kind
from surety.repo.repository import Repository

__all__ = ["Scratch", "Span", "iter_run", "read_span", "span_of"]

Run = Sequence[tuple[bytes, Location | None]]


@dataclass(frozen=True)
class Span:
    """The bytes of one pack that one read of a run fetches."""

    pack: str
    offset: int
    length: int


class Scratch:
    """The two buffers one thread opens chunk after chunk into: ``payload`` takes a
    decrypted payload, ``plain`` a decompressed chunk. Reused, they cost no allocation
    (and no page faults) per chunk: zstd decodes straight into ``plain``."""

    def __init__(self, chunk_size: int) -> None:
        self.payload = memoryview(bytearray(chunk_size + 1))  # the codec's byte + the body
        self.plain = memoryview(bytearray(chunk_size))

    def open(
        self, repo: Repository, chunk_id: bytes, sealed: memoryview, loc: Location, what: str
    ) -> memoryview:
        """The chunk's plaintext, unchecked (``iter_run`` checks its hash), as a view of a
        buffer of this scratch."""
        if loc.raw_length > len(self.plain):
            raise IntegrityError(f"{what}: length {loc.raw_length} is more than a chunk's")
        payload = repo.keys.unseal_into(chunk_kind(chunk_id), sealed, self.payload, what)
        return codec.decode_into(payload, loc.raw_length, self.plain, what)


def span_of(run: Run) -> Span | None:
    """What one read of ``run`` fetches; None when a chunk has no location (``read_run``
    then names it missing, no shared read is made)."""
    locations = [loc for _, loc in run if loc is not None]
    if len(locations) != len(run) or not locations:
        return None
    first = min(locations, key=lambda loc: loc.offset)
    end = max(loc.offset + loc.length for loc in locations)
    if any(loc.pack != first.pack for loc in locations):
        raise ValueError("a run of chunks lies in one pack")
    return Span(first.pack, first.offset, end - first.offset)


def read_span(repo: Repository, span: Span) -> bytes:
    """One read of ``span`` (unchecked: ``iter_run`` checks every chunk in it)."""
    return repo.storage.get(f"data/{span.pack}", span.offset, span.length)


def iter_run(
    repo: Repository,
    run: Run,
    fetch: Callable[[], bytes] | None = None,
    scratch: Scratch | None = None,
) -> Iterator[bytes | memoryview]:
    """The plaintexts of ``run`` (chunks of one pack, see ``read_run``) in its order, each
    checked before it is yielded.

    One chunk at a time: the caller writes a chunk while its buffers are still in the
    CPU's cache, and the allocator hands the same memory to the next chunk. When a chunk
    fails, the run is read again through ``Repository.read_run`` and the chunks not yet
    yielded come from there (or its error is raised). ``fetch``: the bytes of
    ``span_of(run)`` read ahead by the caller (``read_span`` in another thread); what it
    raises is taken as the read's own error. ``scratch``: open each chunk into it (a
    chunk yielded from there is overwritten by the next)."""
    span = span_of(run)
    if span is None:
        yield from repo.read_run(run)
        return
    done = 0
    try:
        view = memoryview(fetch() if fetch is not None else read_span(repo, span))
        for chunk_id, loc in run:
            assert loc is not None
            start = loc.offset - span.offset
            what = f"chunk {chunk_id.hex()[:12]} in pack {loc.pack[:12]}"
            sealed = view[start : start + loc.length]
            if scratch is not None:
                data = _checked(
                    repo, chunk_id, scratch.open(repo, chunk_id, sealed, loc, what), what
                )
            else:
                data = _open(repo, chunk_id, sealed, loc, what)
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
    return _checked(repo, chunk_id, codec.decode_view(payload, loc.raw_length, what), what)


def _checked(
    repo: Repository, chunk_id: bytes, data: bytes | memoryview, what: str
) -> bytes | memoryview:
    if repo.keys.chunk_id(data) != chunk_id:
        raise IntegrityError(f"{what}: content does not match its hash")
    return data
