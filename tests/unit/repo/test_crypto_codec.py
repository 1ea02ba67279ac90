"""Sealing, keyed ids, key files and the payload codec."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from surety.core.errors import IntegrityError, WrongPassphrase
from surety.repo import codec
from surety.repo.crypto import KdfParams, MasterKeys, unwrap_master, wrap_master
from surety.repo.format import CODEC_RAW, CODEC_ZSTD, SEAL_VERSION
from tests.unit.conftest import CHEAP_KDF

OVERHEAD = 1 + 12 + 16

# -- seal / unseal ------------------------------------------------------------------


@given(st.binary(max_size=2000), st.binary(max_size=40))
def test_seal_unseal_round_trip(keys: MasterKeys, plaintext: bytes, kind: bytes) -> None:
    sealed = keys.seal(kind, plaintext)
    assert sealed[0] == SEAL_VERSION
    assert len(sealed) == len(plaintext) + OVERHEAD
    assert keys.unseal(kind, sealed, "blob") == plaintext
    assert keys.unseal(kind, memoryview(sealed), "blob") == plaintext


def test_seal_encrypts(keys: MasterKeys) -> None:
    plaintext = b"secret disk contents " * 4
    sealed = keys.seal(b"chunk", plaintext)
    assert plaintext not in sealed
    assert b"secret" not in sealed


def test_seal_uses_fresh_nonces(keys: MasterKeys) -> None:
    assert keys.seal(b"k", b"same") != keys.seal(b"k", b"same")


@given(st.binary(min_size=0, max_size=200), st.data())
def test_any_flipped_byte_is_detected(
    keys: MasterKeys, plaintext: bytes, data: st.DataObject
) -> None:
    sealed = bytearray(keys.seal(b"points", plaintext))
    position = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1), label="position")
    mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
    sealed[position] ^= mask
    with pytest.raises(IntegrityError):
        keys.unseal(b"points", bytes(sealed), "blob")


@given(st.binary(max_size=OVERHEAD + 50), st.data())
def test_truncated_sealed_blob_is_rejected(
    keys: MasterKeys, plaintext: bytes, data: st.DataObject
) -> None:
    sealed = keys.seal(b"k", plaintext)
    keep = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1))
    with pytest.raises(IntegrityError):
        keys.unseal(b"k", sealed[:keep], "blob")


def test_wrong_kind_is_rejected(keys: MasterKeys) -> None:
    sealed = keys.seal(b"images", b"an image index")
    with pytest.raises(IntegrityError, match="authentication failed"):
        keys.unseal(b"points", sealed, "blob")
    assert keys.unseal(b"images", sealed, "blob") == b"an image index"


def test_other_keys_cannot_unseal(keys: MasterKeys) -> None:
    sealed = keys.seal(b"k", b"data")
    with pytest.raises(IntegrityError):
        MasterKeys.generate().unseal(b"k", sealed, "blob")


def test_unknown_seal_version_is_rejected(keys: MasterKeys) -> None:
    sealed = bytearray(keys.seal(b"k", b"data"))
    sealed[0] = SEAL_VERSION + 1
    with pytest.raises(IntegrityError, match="not a sealed object"):
        keys.unseal(b"k", bytes(sealed), "blob")


def test_master_key_material_must_be_64_bytes() -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        MasterKeys(b"\0" * 63)


# -- keyed ids ----------------------------------------------------------------------


def test_chunk_id_is_keyed() -> None:
    material = os.urandom(64)
    one, same = MasterKeys(material), MasterKeys(material)
    other = MasterKeys.generate()
    data = b"some chunk" * 100
    assert one.chunk_id(data) == same.chunk_id(data)
    assert one.chunk_id(data) != other.chunk_id(data)
    assert len(one.chunk_id(data)) == 32
    assert one.chunk_id(memoryview(data)) == one.chunk_id(data)


def test_chunk_id_depends_only_on_the_id_key_half() -> None:
    material = os.urandom(64)
    other_aead_key = os.urandom(32) + material[32:]
    assert MasterKeys(material).chunk_id(b"x") == MasterKeys(other_aead_key).chunk_id(b"x")
    other_id_key = material[:32] + os.urandom(32)
    assert MasterKeys(material).chunk_id(b"x") != MasterKeys(other_id_key).chunk_id(b"x")


@given(st.binary(max_size=500), st.binary(max_size=500))
def test_chunk_id_distinguishes_content(keys: MasterKeys, a: bytes, b: bytes) -> None:
    assert (keys.chunk_id(a) == keys.chunk_id(b)) == (a == b)


def test_object_id_is_keyed_hex(keys: MasterKeys) -> None:
    object_id = keys.object_id(b"manifest")
    assert object_id == keys.chunk_id(b"manifest").hex()
    assert object_id != MasterKeys.generate().object_id(b"manifest")


# -- key files ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyfile() -> tuple[MasterKeys, bytes]:
    keys = MasterKeys.generate()
    return keys, wrap_master(keys, "pass phrase", CHEAP_KDF, {"host": "h1"})


def test_wrap_unwrap_round_trip(keyfile: tuple[MasterKeys, bytes]) -> None:
    keys, data = keyfile
    opened = unwrap_master(data, "pass phrase", "keys/x")
    assert opened.material == keys.material
    sealed = keys.seal(b"k", b"payload")
    assert opened.unseal(b"k", sealed, "blob") == b"payload"


def test_key_file_records_kdf_parameters_and_extra(keyfile: tuple[MasterKeys, bytes]) -> None:
    keys, data = keyfile
    doc = json.loads(data)
    assert doc["kdf"] == "argon2id"
    assert (doc["time_cost"], doc["memory_kib"], doc["parallelism"]) == (1, 8192, 1)
    assert doc["host"] == "h1"
    assert len(base64.b64decode(doc["salt"])) == 16
    assert len(base64.b64decode(doc["nonce"])) == 12
    assert keys.material not in data
    assert base64.b64encode(keys.material) not in data


def test_unicode_passphrase(keys: MasterKeys) -> None:
    data = wrap_master(keys, "pässwörd ✓", CHEAP_KDF, {})
    assert unwrap_master(data, "pässwörd ✓", "k").material == keys.material
    with pytest.raises(WrongPassphrase):
        unwrap_master(data, "passwort ✓", "k")


@pytest.mark.parametrize("wrong", ["pass phrase ", "Pass phrase", "", "pass phras"])
def test_wrong_passphrase(keyfile: tuple[MasterKeys, bytes], wrong: str) -> None:
    _, data = keyfile
    with pytest.raises(WrongPassphrase):
        unwrap_master(data, wrong, "keys/x")


def test_same_keys_wrap_differently(keys: MasterKeys) -> None:
    first = json.loads(wrap_master(keys, "p", CHEAP_KDF, {}))
    second = json.loads(wrap_master(keys, "p", CHEAP_KDF, {}))
    assert first["salt"] != second["salt"]
    assert first["master"] != second["master"]


def _edited(data: bytes, **changes: object) -> bytes:
    doc = json.loads(data)
    for key, value in changes.items():
        if value is None:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[: len(d) // 2],  # truncated JSON
        lambda d: b"",
        lambda d: b"\xff\xfe" + d,  # not UTF-8
        lambda d: b"[1, 2, 3]",  # JSON, not an object
        lambda d: b"null",
        lambda d: _edited(d, salt=None),  # missing field
        lambda d: _edited(d, master=None),
        lambda d: _edited(d, time_cost=None),
        lambda d: _edited(d, salt=12),  # wrong type
        lambda d: _edited(d, nonce="###not base64###="),
        lambda d: _edited(d, kdf="scrypt"),  # unknown KDF
    ],
)
def test_damaged_key_file_is_integrity_error(
    keyfile: tuple[MasterKeys, bytes], damage: Callable[[bytes], bytes]
) -> None:
    _, data = keyfile
    with pytest.raises(IntegrityError):
        unwrap_master(damage(data), "pass phrase", "keys/x")


@pytest.mark.parametrize(
    "changes",
    [
        {"time_cost": 0},
        {"memory_kib": "lots"},
        {"parallelism": 0},
        {"salt": ""},
        {"nonce": ""},
    ],
    ids=["time_cost=0", "memory_kib=str", "parallelism=0", "empty-salt", "empty-nonce"],
)
def test_damaged_kdf_parameters_are_integrity_error(
    keyfile: tuple[MasterKeys, bytes], changes: dict[str, object]
) -> None:
    _, data = keyfile
    with pytest.raises(IntegrityError):
        unwrap_master(_edited(data, **changes), "pass phrase", "keys/x")


def test_kdf_defaults_are_memory_hard() -> None:
    params = KdfParams()
    assert params.memory_kib >= 64 * 1024
    assert params.time_cost >= 3


# -- codec --------------------------------------------------------------------------


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=5))
def test_codec_round_trip(data: bytes, level: int) -> None:
    payload = codec.encode(data, level)
    assert payload[0] in (CODEC_RAW, CODEC_ZSTD)
    assert len(payload) <= len(data) + 1
    assert codec.decode(payload, len(data), "chunk") == data


def test_incompressible_data_is_stored_raw() -> None:
    data = os.urandom(64 * 1024)
    payload = codec.encode(data, 1)
    assert payload[0] == CODEC_RAW
    assert payload[1:] == data
    assert codec.decode(payload, len(data), "chunk") == data


def test_compressible_data_is_stored_zstd() -> None:
    data = b"abcdefgh" * 8192
    payload = codec.encode(data, 1)
    assert payload[0] == CODEC_ZSTD
    assert len(payload) < len(data) // 10
    assert codec.decode(payload, len(data), "chunk") == data


def test_encode_accepts_memoryview() -> None:
    data = b"x" * 10000
    assert codec.decode(codec.encode(memoryview(data), 1), len(data), "c") == data


def test_empty_data_round_trips() -> None:
    payload = codec.encode(b"", 1)
    assert payload == bytes([CODEC_RAW])
    assert codec.decode(payload, 0, "chunk") == b""


@pytest.mark.parametrize("delta", [-1, 1, -100, 4096])
@pytest.mark.parametrize("compressible", [True, False])
def test_decode_with_wrong_raw_length(delta: int, compressible: bool) -> None:
    data = b"z" * 8192 if compressible else os.urandom(8192)
    payload = codec.encode(data, 1)
    assert (payload[0] == CODEC_ZSTD) == compressible
    with pytest.raises(IntegrityError, match="length"):
        codec.decode(payload, len(data) + delta, "chunk")


def test_decode_with_zero_raw_length_of_zstd_payload() -> None:
    payload = codec.encode(b"z" * 8192, 1)
    with pytest.raises(IntegrityError):
        codec.decode(payload, 0, "chunk")


def test_decode_rejects_empty_payload() -> None:
    with pytest.raises(IntegrityError, match="empty"):
        codec.decode(b"", 0, "chunk")


def test_decode_rejects_unknown_codec() -> None:
    with pytest.raises(IntegrityError, match="unknown codec"):
        codec.decode(bytes([7]) + b"data", 4, "chunk")


def test_decode_rejects_damaged_zstd_frame() -> None:
    payload = codec.encode(b"hello world " * 1000, 1)
    assert payload[0] == CODEC_ZSTD
    with pytest.raises(IntegrityError):
        codec.decode(payload[:-8], 12000, "chunk")
    with pytest.raises(IntegrityError):
        codec.decode(bytes([CODEC_ZSTD]) + b"not a zstd frame", 10, "chunk")


@given(st.binary(max_size=300), st.integers(min_value=0, max_value=10**6))
def test_decode_of_garbage_raises_only_integrity_error(garbage: bytes, raw_length: int) -> None:
    try:
        data = codec.decode(garbage, raw_length, "chunk")
    except IntegrityError:
        return
    assert len(data) == raw_length
