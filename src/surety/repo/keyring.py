"""Key slots: several key files (``keys/<id>``) wrap the same master keys.

Each key file is one passphrase (restic's "keys"): any of them opens the
repository, so a damaged or forgotten one is not the end while another is
known. Invariants:

* every key file of a repository wraps the same master keys; a key that
  unwraps but fails the caller's ``verify`` (a stray key of a concurrent
  ``init``) is skipped, never used;
* the key that opened the repository and the last key are never removed;
* ``passwd`` writes the new key and reads it back before the old one is
  deleted: a crash between leaves two keys, never none.

Opening tells damage (``IntegrityError``) from a wrong passphrase
(``WrongPassphrase``) and names every damaged key file it met.
Knows nothing of the CLI; takes no lock (the caller holds the exclusive one).
"""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from surety.core.errors import (
    IntegrityError,
    ObjectNotFound,
    RepositoryNotFound,
    UsageError,
    WrongPassphrase,
)
from surety.repo.crypto import KdfParams, MasterKeys, read_keyfile, wrap_master
from surety.repo.storage.base import Storage

if TYPE_CHECKING:
    from surety.repo.repository import Repository

__all__ = ["KeySlot", "OpenedKey", "add_key", "list_keys", "open_keys", "passwd", "remove_key"]

_PREFIX = "keys/"
_ID_PREFIX = re.compile(r"^[0-9a-f]{4,}$")


@dataclass(frozen=True)
class OpenedKey:
    """The master keys and the key file (``keys/<id>``) that gave them."""

    keys: MasterKeys
    name: str


@dataclass(frozen=True)
class KeySlot:
    """One key file as read without a passphrase; ``problem`` is empty unless damaged."""

    id: str
    host: str
    created: str
    version: int | None
    problem: str = ""
    current: bool = False

    @property
    def damaged(self) -> bool:
        return bool(self.problem)


# -- opening ------------------------------------------------------------------------


def open_keys(
    storage: Storage,
    passphrase: str,
    verify: Callable[[MasterKeys], bool] | None = None,
) -> OpenedKey:
    """Try every key file; the first that opens (and passes ``verify``) wins."""
    names = sorted(name for name, _ in storage.list(_PREFIX))
    if not names:
        raise RepositoryNotFound(f"{storage.describe()}: repository has no key files")
    tried = _Tried()
    for name in names:
        try:
            keyfile = read_keyfile(storage.get(name), name)
        except ObjectNotFound:  # removed since the listing (a concurrent `key remove`)
            continue
        except IntegrityError as exc:  # try the others; report only if none opens
            tried.damaged.append((name, exc))
            continue
        try:
            keys = keyfile.unwrap(passphrase)
        except WrongPassphrase:
            (tried.unchecked if keyfile.version == 1 else tried.refused).append(name)
            continue
        except IntegrityError as exc:
            tried.damaged.append((name, exc))
            continue
        if verify is None or verify(keys):
            return OpenedKey(keys, name)
        tried.foreign.append(name)
    raise tried.error()


@dataclass
class _Tried:
    """What the key files said when none opened, to say why in one line."""

    damaged: list[tuple[str, IntegrityError]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # version 1: refused, or damaged
    foreign: list[str] = field(default_factory=list)  # opened, but failed ``verify``

    def error(self) -> IntegrityError | WrongPassphrase:
        broken = "".join(f"; {exc}" for _, exc in self.damaged)
        if self.foreign:  # a key fits but not the config: damage, or a stray of another init
            return IntegrityError(
                f"{_join(self.foreign)} opens with this passphrase but not the config: the "
                f"config is damaged, or the key is a stray of another `surety init`{broken}"
            )
        if self.damaged and not (self.refused or self.unchecked):
            if len(self.damaged) == 1:
                return self.damaged[0][1]
            return IntegrityError(f"every key file is damaged{broken}")
        message = "wrong passphrase for this repository"
        if self.unchecked:
            files = "file" if len(self.unchecked) == 1 else "files"
            named = f"{files} {_join(self.unchecked)} {_is(self.unchecked)}"
            message = f"wrong passphrase (or the key {named} damaged)"
        if self.damaged:
            names = [name for name, _ in self.damaged]
            message += f", and {_join(names)} {_is(names)} damaged"
        return WrongPassphrase(message)


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _is(names: list[str]) -> str:
    return "is" if len(names) == 1 else "are"


# -- key slots ----------------------------------------------------------------------


def list_keys(storage: Storage, current: str | None = None) -> list[KeySlot]:
    """Every key file, oldest first; ``current`` (``keys/<id>``) is marked. No passphrase."""
    slots = []
    for name in sorted(name for name, _ in storage.list(_PREFIX)):
        slot_id = name.removeprefix(_PREFIX)
        try:
            keyfile = read_keyfile(storage.get(name), name)
        except IntegrityError as exc:
            slots.append(KeySlot(slot_id, "", "", None, str(exc), name == current))
            continue
        extra = keyfile.extra
        host, created = str(extra.get("host", "")), str(extra.get("created", ""))
        slots.append(KeySlot(slot_id, host, created, keyfile.version, "", name == current))
    return sorted(slots, key=lambda slot: (slot.created, slot.id))


def add_key(repo: Repository, new_passphrase: str, kdf: KdfParams | None = None) -> str:
    """Write a new key file for the repository's master keys; returns ``keys/<id>``.

    The key is read back and opened before this returns, so a caller may rely on it.
    """
    with repo.lock(exclusive=True, operation="key add"):
        if not new_passphrase:
            raise UsageError("an empty passphrase is not allowed")
        name = f"{_PREFIX}{secrets.token_hex(16)}"
        extra = {"host": socket.gethostname(), "created": datetime.now(UTC).isoformat()}
        repo.storage.put(name, wrap_master(repo.keys, new_passphrase, kdf or KdfParams(), extra))
        opened = read_keyfile(repo.storage.get(name), name).unwrap(new_passphrase)
        if opened.material != repo.keys.material:
            raise IntegrityError(f"{name}: the new key file does not read back")
        return name


def remove_key(repo: Repository, key_id_prefix: str) -> str:
    """Delete the key file a unique id prefix names; returns ``keys/<id>``."""
    with repo.lock(exclusive=True, operation="key remove"):
        prefix = key_id_prefix.lower().removeprefix(_PREFIX)
        if not _ID_PREFIX.match(prefix):
            raise UsageError(f"{key_id_prefix!r} is not a key id (give 4 or more hex digits)")
        names = sorted(name for name, _ in repo.storage.list(_PREFIX))
        matches = [name for name in names if name.startswith(_PREFIX + prefix)]
        if not matches:
            raise UsageError(f"no key {prefix!r} (see `surety key list`)")
        if len(matches) > 1:
            raise UsageError(f"{prefix!r} matches {len(matches)} keys; give more digits")
        (name,) = matches
        if name == repo.key_name:
            raise UsageError(
                f"{name} opened this repository and cannot remove itself: "
                "open with another key's passphrase, or use `surety key passwd`"
            )
        if len(names) == 1:
            raise UsageError(f"{name} is the last key: without it the data cannot be read")
        repo.storage.delete(name)
        return name


def passwd(repo: Repository, new_passphrase: str, kdf: KdfParams | None = None) -> str:
    """Replace the key that opened the repository by one for ``new_passphrase``."""
    with repo.lock(exclusive=True, operation="key passwd"):
        old = repo.key_name
        if old is None:
            raise UsageError("the repository was not opened by a key file; nothing to replace")
        new = add_key(repo, new_passphrase, kdf)  # durable and read back before the old goes
        repo.storage.delete(old)
        repo.key_name = new
        return new
