"""Keys and sealing: every stored object is authenticated-encrypted.

* ``MasterKeys``: 32-byte AES-256-GCM key for sealing, 32-byte BLAKE3 key
  for chunk ids. Random at ``init``; never stored in the clear.
* ``seal``/``unseal``: ``version(1) || nonce(12) || ciphertext||tag(16)``.
  The associated data binds the blob to its *kind* (and a chunk to its id),
  so a blob cannot be swapped for another one unnoticed. ``unseal_view`` is
  the same check without copies of the input (restore's data path): one
  ``AESGCM.decrypt`` reads the caller's buffer and returns the plaintext only
  after the tag verified. cryptography >= 50 does it in one call that releases
  the GIL, with an OpenSSL whose AES-GCM runs ~9.5 GB/s per core here
  (cryptography 38 with Debian 12's OpenSSL: ~3.4 GB/s through a cipher
  context, 14 us of Python per call, eight GIL round trips per chunk).
* Key files wrap the master keys under a key derived from the passphrase
  with argon2id (memory-hard); their parameters live in the key file.
  Version 2 adds ``check``, a SHA-256 of the other fields, so a damaged key
  file (``IntegrityError``) is told from a wrong passphrase (``WrongPassphrase``)
  before any key is derived. Version 1 files (no check) stay readable.
* ``remember_derived_keys``: a long-lived process that opens the same
  repositories again (the service's spare worker, ``surety.service.worker``)
  keeps each passphrase-derived key in memory, keyed by exactly what argon2
  takes (passphrase, salt, parameters): a second derivation of the same key
  skips argon2; any other passphrase, salt or cost derives afresh. The memo is
  never written anywhere and never logged; it is off unless a process asks.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from typing import Any

import blake3
from argon2.exceptions import HashingError
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from surety.core.errors import IntegrityError, WrongPassphrase
from surety.repo.format import SEAL_VERSION

__all__ = [
    "KEYFILE_VERSION",
    "KdfParams",
    "KeyFile",
    "MasterKeys",
    "read_keyfile",
    "remember_derived_keys",
    "unwrap_master",
    "wrap_master",
]

_NONCE = 12
_TAG = 16
_OVERHEAD = 1 + _NONCE + _TAG

KEYFILE_VERSION = 2  # 1: no "check" field (still read); 2: with "check"
_KEYFILE_FIELDS = frozenset(
    {"version", "kdf", "time_cost", "memory_kib", "parallelism", "salt", "nonce", "master", "check"}
)
_B64_FIELDS = ("salt", "nonce", "master")


@dataclass(frozen=True)
class KdfParams:
    """argon2id cost; the defaults take ~0.15 s and 64 MiB on a 2-core host."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 2


class MasterKeys:
    def __init__(self, material: bytes) -> None:
        if len(material) != 64:
            raise ValueError("master key material must be 64 bytes")
        self.material = material
        self._aead = AESGCM(material[:32])
        self._id_key = material[32:]

    @classmethod
    def generate(cls) -> MasterKeys:
        return cls(secrets.token_bytes(64))

    def chunk_id(self, data: bytes | memoryview) -> bytes:
        """Keyed BLAKE3 of plaintext: equal content -> equal id, unguessable without the key."""
        return blake3.blake3(data, key=self._id_key, max_threads=1).digest()

    def object_id(self, data: bytes) -> str:
        return blake3.blake3(data, key=self._id_key).hexdigest()

    def seal(self, kind: bytes, plaintext: bytes | memoryview) -> bytes:
        nonce = os.urandom(_NONCE)
        return bytes([SEAL_VERSION]) + nonce + self._aead.encrypt(nonce, plaintext, kind)

    def unseal(self, kind: bytes, sealed: bytes | memoryview, what: str) -> bytes:
        """The plaintext of ``sealed``, returned only when its tag matched; no copy of
        ``sealed`` is made (a view of a larger buffer is read in place)."""
        nonce, body = _opened(sealed, what)
        try:
            return self._aead.decrypt(nonce, body, kind)
        except InvalidTag as exc:
            raise IntegrityError(f"{what}: authentication failed (data is damaged)") from exc

    def unseal_view(self, kind: bytes, sealed: bytes | memoryview, what: str) -> memoryview:
        """``unseal`` as a view (restore's data path slices the payload without a copy)."""
        return memoryview(self.unseal(kind, sealed, what))

    def unseal_into(
        self, kind: bytes, sealed: bytes | memoryview, out: memoryview, what: str
    ) -> memoryview:
        """``unseal`` into ``out``, a writable buffer at least as long as the plaintext
        (``sealed`` less its version, nonce and tag): the plaintext as a view of ``out``,
        returned only when its tag matched. On a failed tag ``out`` holds garbage and
        ``IntegrityError`` is raised."""
        nonce, body = _opened(sealed, what)
        if len(body) - _TAG > len(out):
            raise IntegrityError(f"{what}: stored length {len(sealed)} is more than a chunk's")
        plain = out[: len(body) - _TAG]
        try:
            self._aead.decrypt_into(nonce, body, kind, plain)
        except InvalidTag as exc:
            raise IntegrityError(f"{what}: authentication failed (data is damaged)") from exc
        return plain


def _opened(sealed: bytes | memoryview, what: str) -> tuple[bytes, memoryview]:
    """A sealed blob's nonce and its ciphertext with the tag (a view, not a copy)."""
    view = memoryview(sealed)
    if len(view) < _OVERHEAD or view[0] != SEAL_VERSION:
        raise IntegrityError(f"{what}: not a sealed object (damaged or foreign)")
    return bytes(view[1 : 1 + _NONCE]), view[1 + _NONCE :]


# (passphrase, salt, parameters) -> derived key; None: off (``remember_derived_keys``)
_derived: dict[tuple[bytes, bytes, KdfParams], bytes] | None = None


def remember_derived_keys(on: bool = True) -> None:
    """Keep (``on``; what is kept stays) or stop keeping and forget the derived keys."""
    global _derived  # noqa: PLW0603 - one memo per process, like the key material it holds
    if not on:
        _derived = None
    elif _derived is None:
        _derived = {}


def _kek(passphrase: str, salt: bytes, params: KdfParams) -> AESGCM:
    memo = _derived
    secret = passphrase.encode()
    if memo is not None and (found := memo.get((secret, salt, params))) is not None:
        return AESGCM(found)
    raw = hash_secret_raw(
        secret,
        salt,
        time_cost=params.time_cost,
        memory_cost=params.memory_kib,
        parallelism=params.parallelism,
        hash_len=32,
        type=Type.ID,
    )
    if memo is not None:
        memo[(secret, salt, params)] = raw
    return AESGCM(raw)


def wrap_master(
    keys: MasterKeys, passphrase: str, params: KdfParams, extra: dict[str, Any]
) -> bytes:
    """A key file (JSON): KDF parameters + master keys sealed under the passphrase key."""
    if _KEYFILE_FIELDS & extra.keys():
        raise ValueError(f"extra fields may not replace {sorted(_KEYFILE_FIELDS & extra.keys())}")
    salt = secrets.token_bytes(16)
    nonce = os.urandom(_NONCE)
    sealed = _kek(passphrase, salt, params).encrypt(nonce, keys.material, b"keyfile")
    doc = {
        "version": KEYFILE_VERSION,
        "kdf": "argon2id",
        "time_cost": params.time_cost,
        "memory_kib": params.memory_kib,
        "parallelism": params.parallelism,
        "salt": base64.b64encode(salt).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "master": base64.b64encode(sealed).decode(),
        **extra,
    }
    doc["check"] = _checksum(doc)
    return json.dumps(doc, indent=1).encode()


def _checksum(doc: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of every field but ``check``."""
    fields = {key: value for key, value in doc.items() if key != "check"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class KeyFile:
    """A parsed key file whose structure (and, from version 2, checksum) is sound."""

    name: str
    version: int
    params: KdfParams
    salt: bytes
    nonce: bytes
    sealed: bytes
    extra: dict[str, Any]

    def unwrap(self, passphrase: str) -> MasterKeys:
        """The master keys; ``WrongPassphrase`` if the passphrase does not fit."""
        try:
            material = _kek(passphrase, self.salt, self.params).decrypt(
                self.nonce, self.sealed, b"keyfile"
            )
        except InvalidTag as exc:
            if self.version == 1:  # no checksum: damage looks like a wrong passphrase
                raise WrongPassphrase(
                    f"wrong passphrase (or the key file {self.name} is damaged)"
                ) from exc
            raise WrongPassphrase("wrong passphrase for this repository") from exc
        except (HashingError, ValueError) as exc:
            raise IntegrityError(f"{self.name}: damaged key file ({exc})") from exc
        if len(material) != 64:
            raise IntegrityError(f"{self.name}: damaged key file (key length)")
        return MasterKeys(material)


def read_keyfile(keyfile: bytes, what: str) -> KeyFile:
    """Parse and check a key file without its passphrase; ``IntegrityError`` if damaged."""
    try:
        doc = json.loads(keyfile)
        version = _check_version(doc, what)
        params = KdfParams(doc["time_cost"], doc["memory_kib"], doc["parallelism"])
        salt, nonce, sealed = (base64.b64decode(doc[k], validate=True) for k in _B64_FIELDS)
        if doc["kdf"] != "argon2id":
            raise IntegrityError(f"{what}: unknown key derivation {doc['kdf']!r}")
        _check_params(params, salt, nonce)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"{what}: damaged key file") from exc
    extra = {key: value for key, value in doc.items() if key not in _KEYFILE_FIELDS}
    return KeyFile(what, version, params, salt, nonce, sealed, extra)


def _check_version(doc: Any, what: str) -> int:
    """Verify the checksum first: a damaged field must never reach the KDF."""
    if not isinstance(doc, dict):
        raise TypeError("not a JSON object")
    if "check" in doc:
        if doc["check"] != _checksum(doc):
            raise IntegrityError(f"{what}: damaged key file (checksum mismatch)")
    elif doc.get("version") != 1:
        raise IntegrityError(f"{what}: damaged key file (no checksum)")
    version = doc["version"]
    if type(version) is not int or not 1 <= version <= KEYFILE_VERSION:
        raise IntegrityError(f"{what}: key file version {version!r} is not supported")
    return version


def unwrap_master(keyfile: bytes, passphrase: str, what: str) -> MasterKeys:
    """Open a key file: ``IntegrityError`` if damaged, ``WrongPassphrase`` if it does not fit."""
    return read_keyfile(keyfile, what).unwrap(passphrase)


def _check_params(params: KdfParams, salt: bytes, nonce: bytes) -> None:
    """Refuse parameters no surety writes (and that could exhaust memory)."""
    numbers = (params.time_cost, params.memory_kib, params.parallelism)
    if not all(type(n) is int for n in numbers):
        raise ValueError("KDF parameters must be integers")
    if not (
        1 <= params.time_cost <= 64
        and 8 * params.parallelism <= params.memory_kib <= 4 * 1024 * 1024
        and 1 <= params.parallelism <= 64
    ):
        raise ValueError("KDF parameters out of range")
    if len(salt) < 8 or len(nonce) != _NONCE:
        raise ValueError("salt or nonce length")
