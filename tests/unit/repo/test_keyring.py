"""Key files version 2 (damage told from a wrong passphrase) and key slots."""

from __future__ import annotations

import json

import pytest

from surety.core.errors import (
    IntegrityError,
    RepositoryNotFound,
    UsageError,
    WrongPassphrase,
)
from surety.repo.crypto import KEYFILE_VERSION, MasterKeys, read_keyfile, unwrap_master, wrap_master
from surety.repo.keyring import add_key, list_keys, open_keys, passwd, remove_key
from surety.repo.repository import Repository
from surety.repo.storage import MemoryStorage
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE

SECOND = "a second passphrase"


@pytest.fixture(scope="module")
def v2_keyfile() -> tuple[MasterKeys, bytes]:
    keys = MasterKeys.generate()
    extra = {"host": "h1", "created": "2024-05-17T12:00:00+00:00"}
    return keys, wrap_master(keys, PASSPHRASE, CHEAP_KDF, extra)


def _flipped(data: bytes, position: int, bit: int = 0) -> bytes:
    damaged = bytearray(data)
    damaged[position] ^= 1 << bit
    return bytes(damaged)


def _inside(data: bytes, field: str) -> int:
    """A position in the middle of a field's string value."""
    start = data.index(f'"{field}": "'.encode()) + len(field) + 5
    return start + (data.index(b'"', start) - start) // 2


def _as_version_1(data: bytes) -> bytes:
    """The key file as surety wrote it before the checksum (version 1)."""
    doc = json.loads(data)
    del doc["check"]
    doc["version"] = 1
    return json.dumps(doc, indent=1).encode()


def _key_names(storage: MemoryStorage) -> list[str]:
    return sorted(name for name, _ in storage.list("keys/"))


# -- key file version 2 -------------------------------------------------------------


def test_new_key_files_are_version_2_with_a_checksum(v2_keyfile: tuple[MasterKeys, bytes]) -> None:
    keys, data = v2_keyfile
    doc = json.loads(data)
    assert doc["version"] == KEYFILE_VERSION == 2
    assert len(doc["check"]) == 64
    assert unwrap_master(data, PASSPHRASE, "keys/x").material == keys.material


@pytest.mark.parametrize("field", ["master", "salt", "nonce", "check", "host"])
@pytest.mark.parametrize("bit", [0, 3, 6])
def test_a_flipped_bit_in_a_field_is_damage_not_a_wrong_passphrase(
    v2_keyfile: tuple[MasterKeys, bytes], field: str, bit: int
) -> None:
    _, data = v2_keyfile
    with pytest.raises(IntegrityError, match=r"keys/x: damaged key file") as caught:
        unwrap_master(_flipped(data, _inside(data, field), bit), PASSPHRASE, "keys/x")
    assert caught.value.exit_code == 6


def test_every_flipped_bit_anywhere_is_damage(v2_keyfile: tuple[MasterKeys, bytes]) -> None:
    """No single-bit error, in any byte (names, numbers, punctuation), reaches the KDF."""
    _, data = v2_keyfile
    for position in range(len(data)):
        for bit in range(8):
            with pytest.raises(IntegrityError, match="damaged key file"):
                read_keyfile(_flipped(data, position, bit), "keys/x")


@pytest.mark.parametrize("change", [{"time_cost": 2}, {"host": "h2"}, {"added": 1}])
def test_an_edited_field_fails_the_checksum(
    v2_keyfile: tuple[MasterKeys, bytes], change: dict[str, object]
) -> None:
    _, data = v2_keyfile
    edited = json.dumps({**json.loads(data), **change}).encode()
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        unwrap_master(edited, PASSPHRASE, "keys/x")


def test_version_2_without_its_checksum_is_damage(v2_keyfile: tuple[MasterKeys, bytes]) -> None:
    _, data = v2_keyfile
    doc = json.loads(data)
    del doc["check"]
    with pytest.raises(IntegrityError, match="no checksum"):
        unwrap_master(json.dumps(doc).encode(), PASSPHRASE, "keys/x")


def test_a_wrong_passphrase_is_wrong_passphrase(v2_keyfile: tuple[MasterKeys, bytes]) -> None:
    _, data = v2_keyfile
    with pytest.raises(WrongPassphrase, match="wrong passphrase") as caught:
        unwrap_master(data, "not it", "keys/x")
    assert "damaged" not in str(caught.value)
    assert caught.value.exit_code == 4


def test_version_1_key_files_still_open(v2_keyfile: tuple[MasterKeys, bytes]) -> None:
    keys, data = v2_keyfile
    old = _as_version_1(data)
    assert b"check" not in old
    assert unwrap_master(old, PASSPHRASE, "keys/x").material == keys.material
    assert read_keyfile(old, "keys/x").version == 1


def test_version_1_damage_cannot_be_told_and_says_so(v2_keyfile: tuple[MasterKeys, bytes]) -> None:
    _, data = v2_keyfile
    old = _as_version_1(data)
    position = _inside(old, "master")  # another valid base64 digit: still parses
    damaged = old[:position] + (b"B" if old[position : position + 1] == b"A" else b"A")
    damaged += old[position + 1 :]
    with pytest.raises(WrongPassphrase, match=r"or the key file keys/x is damaged"):
        unwrap_master(damaged, PASSPHRASE, "keys/x")


def test_extra_fields_may_not_replace_key_fields(keys: MasterKeys) -> None:
    with pytest.raises(ValueError, match="check"):
        wrap_master(keys, PASSPHRASE, CHEAP_KDF, {"check": "0" * 64})


# -- opening: every key file is tried -------------------------------------------------


def test_two_slots_open_the_same_master_keys(repo: Repository, storage: MemoryStorage) -> None:
    second = add_key(repo, SECOND, CHEAP_KDF)
    (first,) = set(_key_names(storage)) - {second}
    by_first, by_second = Repository.open(storage, PASSPHRASE), Repository.open(storage, SECOND)
    assert by_first.keys.material == by_second.keys.material == repo.keys.material
    assert (by_first.key_name, by_second.key_name) == (first, second)


def _damage(storage: MemoryStorage, name: str) -> None:
    data = storage.get(name)
    storage.put(name, _flipped(data, _inside(data, "master")))


def test_a_damaged_slot_does_not_hide_the_other(repo: Repository, storage: MemoryStorage) -> None:
    second = add_key(repo, SECOND, CHEAP_KDF)
    (first,) = set(_key_names(storage)) - {second}
    _damage(storage, first)
    assert open_keys(storage, SECOND).name == second
    with pytest.raises(WrongPassphrase, match=rf"wrong passphrase.*, and {first} is damaged"):
        open_keys(storage, PASSPHRASE)


def test_every_slot_damaged_is_integrity_error(repo: Repository, storage: MemoryStorage) -> None:
    (first,) = _key_names(storage)
    _damage(storage, first)
    with pytest.raises(IntegrityError, match=rf"^{first}: damaged key file \(checksum mismatch\)$"):
        Repository.open(storage, PASSPHRASE)
    second = "keys/" + "f" * 32
    storage.put(second, b"{ damaged")
    with pytest.raises(IntegrityError, match="every key file is damaged") as caught:
        open_keys(storage, PASSPHRASE)
    assert first in str(caught.value)
    assert second in str(caught.value)


def test_all_slots_refusing_is_wrong_passphrase(repo: Repository, storage: MemoryStorage) -> None:
    add_key(repo, SECOND, CHEAP_KDF)
    with pytest.raises(WrongPassphrase, match=r"^wrong passphrase for this repository$"):
        Repository.open(storage, "third")


def test_a_version_1_slot_opens_and_its_refusal_names_it(
    repo: Repository, storage: MemoryStorage
) -> None:
    (name,) = _key_names(storage)
    storage.put(name, _as_version_1(storage.get(name)))
    assert Repository.open(storage, PASSPHRASE).key_name == name
    with pytest.raises(WrongPassphrase, match=rf"^wrong passphrase \(or the key file {name} is"):
        Repository.open(storage, "not it")


def test_a_key_failing_verify_is_skipped(repo: Repository, storage: MemoryStorage) -> None:
    stray = MasterKeys.generate()  # a losing concurrent init's key, same passphrase
    storage.put("keys/" + "0" * 32, wrap_master(stray, PASSPHRASE, CHEAP_KDF, {}))

    def verify(keys: MasterKeys) -> bool:
        return keys.material == repo.keys.material

    opened = open_keys(storage, PASSPHRASE, verify)
    assert opened.keys.material == repo.keys.material
    assert opened.name != "keys/" + "0" * 32
    with pytest.raises(IntegrityError, match="stray"):
        open_keys(storage, PASSPHRASE, lambda keys: False)


def test_no_key_files_is_not_a_repository(storage: MemoryStorage) -> None:
    with pytest.raises(RepositoryNotFound, match="no key files"):
        open_keys(storage, PASSPHRASE)


def test_missing_config_beside_data_is_damage(repo: Repository, storage: MemoryStorage) -> None:
    storage.delete("config")
    with pytest.raises(IntegrityError, match="damaged: its config is missing"):
        Repository.open(storage, PASSPHRASE)
    with pytest.raises(RepositoryNotFound, match="surety init"):
        Repository.open(MemoryStorage(), PASSPHRASE)


# -- key slots ------------------------------------------------------------------------


def test_list_keys_marks_the_current_and_the_damaged(
    repo: Repository, storage: MemoryStorage
) -> None:
    second = add_key(repo, SECOND, CHEAP_KDF)
    (first,) = set(_key_names(storage)) - {second}
    _damage(storage, first)
    slots = {f"keys/{slot.id}": slot for slot in list_keys(storage, current=second)}
    assert slots.keys() == {first, second}
    assert slots[second].current
    assert not slots[second].damaged
    assert slots[second].version == 2
    assert slots[second].host
    assert slots[second].created
    assert not slots[first].current
    assert slots[first].damaged
    assert "checksum mismatch" in slots[first].problem


def test_remove_refuses_the_key_that_opened_the_repository(
    repo: Repository, storage: MemoryStorage
) -> None:
    add_key(repo, SECOND, CHEAP_KDF)
    opened = Repository.open(storage, PASSPHRASE)
    assert opened.key_name is not None
    with pytest.raises(UsageError, match="cannot remove itself"):
        remove_key(opened, opened.key_name.removeprefix("keys/")[:8])
    assert opened.key_name in _key_names(storage)


def test_remove_refuses_the_last_key(repo: Repository, storage: MemoryStorage) -> None:
    (only,) = _key_names(storage)
    repo.key_name = None  # not opened by a key file: only the last-key rule protects it
    with pytest.raises(UsageError, match="last key") as caught:
        remove_key(repo, only.removeprefix("keys/"))
    assert caught.value.exit_code == 2
    assert _key_names(storage) == [only]


def test_remove_another_key(repo: Repository, storage: MemoryStorage) -> None:
    second = add_key(repo, SECOND, CHEAP_KDF)
    opened = Repository.open(storage, PASSPHRASE)
    assert remove_key(opened, second.removeprefix("keys/")[:6].upper()) == second
    assert second not in _key_names(storage)
    with pytest.raises(WrongPassphrase):
        Repository.open(storage, SECOND)


@pytest.mark.parametrize("prefix", ["abc", "xyz1", "", "keys/"])
def test_remove_needs_four_hex_digits(repo: Repository, prefix: str) -> None:
    with pytest.raises(UsageError, match="4 or more hex digits"):
        remove_key(repo, prefix)


def test_remove_unknown_or_ambiguous_prefix(repo: Repository, storage: MemoryStorage) -> None:
    for suffix in ("1", "2"):
        storage.put("keys/" + "a" * 31 + suffix, wrap_master(repo.keys, SECOND, CHEAP_KDF, {}))
    with pytest.raises(UsageError, match="matches 2 keys"):
        remove_key(repo, "aaaa")
    with pytest.raises(UsageError, match="no key"):
        remove_key(repo, "0123456789")
    assert len(_key_names(storage)) == 3


def test_passwd_replaces_the_current_key(repo: Repository, storage: MemoryStorage) -> None:
    opened = Repository.open(storage, PASSPHRASE)
    old = opened.key_name
    new = passwd(opened, SECOND, CHEAP_KDF)
    assert opened.key_name == new
    assert _key_names(storage) == [new]
    assert old != new
    assert Repository.open(storage, SECOND).keys.material == repo.keys.material
    with pytest.raises(WrongPassphrase):
        Repository.open(storage, PASSPHRASE)


def test_passwd_needs_the_opening_key(repo: Repository, storage: MemoryStorage) -> None:
    repo.key_name = None
    with pytest.raises(UsageError, match="not opened by a key file"):
        passwd(repo, SECOND, CHEAP_KDF)
    assert len(_key_names(storage)) == 1


def test_an_empty_new_passphrase_is_refused(repo: Repository, storage: MemoryStorage) -> None:
    with pytest.raises(UsageError, match="empty passphrase"):
        add_key(repo, "", CHEAP_KDF)
    assert len(_key_names(storage)) == 1
