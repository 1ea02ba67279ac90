"""Restore's zero-copy data path keeps every check of the bytes path.

``MasterKeys.unseal_view`` hands a plaintext out only after GCM's tag matched,
``unseal_into`` the same into a buffer it is given; ``codec.decode_view`` returns
a raw payload as a view, ``decode_into`` decompresses into a given buffer and
checks the frame's length both ways; ``runs.iter_run`` yields a run's chunks one
at a time (into a thread's ``Scratch`` or not), each authenticated and
re-hashed, and on damage takes ``read_run``'s path, which names the chunk. Each
test can fail: a flipped bit, a swapped kind or a chunk sealed over other content
must raise, never yield bytes.
"""

from __future__ import annotations

import os

import pytest

from surety.core.errors import IntegrityError
from surety.repo import codec
from surety.repo.crypto import MasterKeys
from surety.repo.format import CODEC_RAW, CODEC_ZSTD, ZERO_ID
from surety.repo.index import Location
from surety.repo.pack import chunk_kind
from surety.repo.repository import Repository
from surety.repo.runs import Scratch, Span, iter_run, read_span, span_of
from surety.repo.storage import MemoryStorage
from surety.repo.storage.retry import TransientStorageError
from tests.unit.backup.test_pipeline import CHUNK, MemoryDisk, _backup

CHUNKS = 24


@pytest.mark.parametrize("size", [0, 1, 4096, 256 << 10])
def test_unseal_view_opens_what_seal_made_and_agrees_with_unseal(
    keys: MasterKeys, size: int
) -> None:
    plaintext = os.urandom(size)
    sealed = keys.seal(b"chunk", plaintext)
    view = keys.unseal_view(b"chunk", memoryview(sealed), "blob")
    assert isinstance(view, memoryview)
    assert bytes(view) == plaintext == keys.unseal(b"chunk", sealed, "blob")


@pytest.mark.parametrize("where", [0, 1, 12, 13, -17, -1])  # version, nonce, body, tag
def test_unseal_view_refuses_any_flipped_byte(keys: MasterKeys, where: int) -> None:
    sealed = bytearray(keys.seal(b"chunk", os.urandom(1000)))
    sealed[where] ^= 0x01
    with pytest.raises(IntegrityError, match="blob: "):
        keys.unseal_view(b"chunk", sealed, "blob")


def test_unseal_view_refuses_another_kind_and_a_short_blob(keys: MasterKeys) -> None:
    sealed = keys.seal(b"chunk" + bytes(32), b"data")
    with pytest.raises(IntegrityError, match="authentication failed"):
        keys.unseal_view(b"chunk" + bytes(31) + b"\x01", sealed, "blob")
    with pytest.raises(IntegrityError, match="not a sealed object"):
        keys.unseal_view(b"chunk", sealed[:28], "blob")


def test_decode_view_returns_a_raw_body_without_copying_it() -> None:
    payload = bytearray([CODEC_RAW]) + bytearray(os.urandom(100))
    data = codec.decode_view(payload, 100, "chunk")
    payload[1] ^= 0xFF  # the view sees the payload's own memory
    assert bytes(data) == bytes(payload[1:])
    assert codec.decode(bytes(payload), 100, "chunk") == bytes(payload[1:])
    with pytest.raises(IntegrityError, match="length 100 != recorded 99"):
        codec.decode_view(payload, 99, "chunk")


def test_decode_view_decompresses_zstd_and_refuses_a_wrong_length() -> None:
    raw = b"surety " * 1000
    payload = memoryview(codec.encode(raw, 3))
    assert codec.decode_view(payload, len(raw), "chunk") == raw
    with pytest.raises(IntegrityError, match="chunk: "):
        codec.decode_view(payload, len(raw) - 1, "chunk")


@pytest.mark.parametrize("size", [0, 1, 4096, 256 << 10])
def test_unseal_into_opens_what_seal_made_into_the_buffer_given(
    keys: MasterKeys, size: int
) -> None:
    plaintext = os.urandom(size)
    out = memoryview(bytearray(size + 100))
    view = keys.unseal_into(b"chunk", memoryview(keys.seal(b"chunk", plaintext)), out, "blob")
    assert view.obj is out.obj  # no buffer of its own
    assert bytes(view) == plaintext


@pytest.mark.parametrize("where", [0, 1, 12, 13, -17, -1])  # version, nonce, body, tag
def test_unseal_into_refuses_any_flipped_byte_and_a_buffer_too_small(
    keys: MasterKeys, where: int
) -> None:
    sealed = bytearray(keys.seal(b"chunk", os.urandom(1000)))
    with pytest.raises(IntegrityError, match=r"blob: stored length .* more than a chunk's"):
        keys.unseal_into(b"chunk", sealed, memoryview(bytearray(999)), "blob")
    sealed[where] ^= 0x01
    with pytest.raises(IntegrityError, match="blob: "):
        keys.unseal_into(b"chunk", sealed, memoryview(bytearray(1000)), "blob")


def test_decode_into_decompresses_into_the_buffer_and_checks_the_length_both_ways() -> None:
    raw = b"surety " * 1000
    payload = memoryview(codec.encode(raw, 3))
    assert payload[0] == CODEC_ZSTD
    out = memoryview(bytearray(len(raw) + 10))
    data = codec.decode_into(payload, len(raw), out, "chunk")
    assert data.obj is out.obj
    assert bytes(data) == raw
    with pytest.raises(IntegrityError, match="chunk: length more than 6999 != recorded 6999"):
        codec.decode_into(payload, len(raw) - 1, out, "chunk")
    with pytest.raises(IntegrityError, match="chunk: length 7000 != recorded 7001"):
        codec.decode_into(payload, len(raw) + 1, out, "chunk")
    with pytest.raises(IntegrityError, match="chunk: "):  # a frame cut short
        codec.decode_into(payload[: len(payload) // 2], len(raw), out, "chunk")
    with pytest.raises(IntegrityError, match="unknown codec 7"):
        codec.decode_into(b"\x07abc", 3, out, "chunk")


def test_decode_into_returns_a_raw_body_as_a_view_of_the_payload() -> None:
    payload = bytearray([CODEC_RAW]) + bytearray(os.urandom(100))
    out = memoryview(bytearray(200))
    data = codec.decode_into(payload, 100, out, "chunk")
    assert data.obj is payload
    assert bytes(data) == bytes(payload[1:])
    with pytest.raises(IntegrityError, match="length 100 != recorded 99"):
        codec.decode_into(payload, 99, out, "chunk")


@pytest.fixture(params=["new buffers", "scratch"])
def scratch(request: pytest.FixtureRequest) -> Scratch | None:
    return Scratch(CHUNK) if request.param == "scratch" else None


def _stored(
    repo: Repository, compressible: bool = False
) -> tuple[list[tuple[bytes, Location | None]], list[bytes]]:
    """A run: every chunk of a backed-up disk that lies in its first pack, in pack order;
    random (stored raw) or ``compressible`` (stored with zstd)."""
    data = os.urandom(CHUNKS * CHUNK)
    if compressible:
        data = b"".join(os.urandom(64).hex().encode() * (CHUNK // 128) for _ in range(CHUNKS))
    image = _backup(repo, MemoryDisk(data))
    index = repo.index()
    located = []
    for number, chunk_id in enumerate(image.chunk_ids):
        assert chunk_id != ZERO_ID
        loc = index.get(chunk_id)
        assert loc is not None
        located.append((loc, chunk_id, data[number * CHUNK : (number + 1) * CHUNK]))
    first_pack = located[0][0].pack
    run = sorted((x for x in located if x[0].pack == first_pack), key=lambda x: x[0].offset)
    assert len(run) >= 4
    return [(cid, loc) for loc, cid, _ in run], [plain for _, _, plain in run]


@pytest.mark.parametrize("compressible", [False, True])
def test_iter_run_yields_every_chunk_checked(
    repo: Repository, scratch: Scratch | None, compressible: bool
) -> None:
    run, plaintexts = _stored(repo, compressible)
    assert [bytes(chunk) for chunk in iter_run(repo, run, scratch=scratch)] == plaintexts


def test_iter_run_names_a_chunk_sealed_over_other_content(
    repo: Repository, storage: MemoryStorage, scratch: Scratch | None
) -> None:
    """Authentic ciphertext of the wrong plaintext: only the keyed hash can catch it."""
    run, plaintexts = _stored(repo)
    victim, loc = run[2]
    assert loc is not None
    forged = repo.keys.seal(chunk_kind(victim), codec.encode(bytes(CHUNK), 3))
    name = f"data/{loc.pack}"
    pack = bytearray(storage.get(name))
    storage.put(name, bytes(pack[: loc.offset] + forged))  # the run ends with the forgery
    forged_run = [*run[:2], (victim, Location(loc.pack, loc.offset, len(forged), CHUNK))]
    got = []
    with pytest.raises(IntegrityError, match=f"{victim.hex()[:12]}.*does not match its hash"):
        got.extend(bytes(chunk) for chunk in iter_run(repo, forged_run, scratch=scratch))
    assert got == plaintexts[:2]  # chunks before the damage were good and were yielded
    damaged = {record.chunk for record in repo.damage_records()}
    assert damaged == {victim.hex()}


def test_iter_run_names_a_missing_pack(repo: Repository, storage: MemoryStorage) -> None:
    run, _plaintexts = _stored(repo)
    _chunk, loc = run[0]
    assert loc is not None
    storage.delete(f"data/{loc.pack}")
    with pytest.raises(IntegrityError, match=f"pack {loc.pack[:12]} is missing"):
        list(iter_run(repo, run))


# -- a span read ahead by the caller (``fetch``: restore's read-ahead on object storage) --


def test_a_span_read_ahead_is_checked_like_one_read_here(
    repo: Repository, storage: MemoryStorage
) -> None:
    run, plaintexts = _stored(repo)
    span = span_of(run)
    assert span is not None
    ahead = read_span(repo, span)
    storage.delete(f"data/{span.pack}")  # iter_run must not read again: it has the bytes
    assert [bytes(chunk) for chunk in iter_run(repo, run, lambda: ahead)] == plaintexts


@pytest.mark.parametrize("compressible", [False, True])
def test_a_flipped_byte_in_a_span_read_ahead_is_named(
    repo: Repository, scratch: Scratch | None, compressible: bool
) -> None:
    run, plaintexts = _stored(repo, compressible)
    span = span_of(run)
    assert span is not None
    ahead = bytearray(read_span(repo, span))
    _victim, loc = run[1]
    assert loc is not None
    ahead[loc.offset - span.offset + 20] ^= 0x01  # damaged on the way, not in storage
    got = [bytes(chunk) for chunk in iter_run(repo, run, lambda: bytes(ahead), scratch)]
    assert got == plaintexts  # read_run's path read the chunks again, from the good pack
    assert repo.damage_records() == []


def test_a_read_ahead_that_met_a_missing_pack_names_it(
    repo: Repository, storage: MemoryStorage
) -> None:
    run, _plaintexts = _stored(repo)
    span = span_of(run)
    assert span is not None
    storage.delete(f"data/{span.pack}")

    def fetch() -> bytes:
        return read_span(repo, span)

    with pytest.raises(IntegrityError, match=f"pack {span.pack[:12]} is missing"):
        list(iter_run(repo, run, fetch))
    assert {record.chunk for record in repo.damage_records()} == {run[0][0].hex()}


def test_a_read_ahead_storage_error_is_raised_as_it_is(repo: Repository) -> None:
    run, _plaintexts = _stored(repo)

    def fetch() -> bytes:
        raise TransientStorageError("s3://b: get data/x: transient: SlowDown")

    with pytest.raises(TransientStorageError, match="SlowDown"):
        list(iter_run(repo, run, fetch))
    assert repo.damage_records() == []  # a transient failure is never damage


def test_span_of_a_run() -> None:
    a = Location("p" * 64, 100, 50, CHUNK)
    b = Location("p" * 64, 300, 20, CHUNK)
    assert span_of([(b"1", b), (b"2", a)]) == Span("p" * 64, 100, 220)
    assert span_of([(b"1", a), (b"2", None)]) is None  # read_run names the missing chunk
    with pytest.raises(ValueError, match="one pack"):
        span_of([(b"1", a), (b"2", Location("q" * 64, 0, 10, CHUNK))])
