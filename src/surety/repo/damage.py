"""Damage records: chunks found damaged or missing, kept in the repository itself.

When ``check --read-data`` or a restore finds a chunk whose stored copy fails
authentication or its hash, or whose pack is gone, it records the pair
(chunk id, pack id) in a ``damaged/<id>`` object (sealed JSON, format 2 of the
repository). Every host that opens the repository reads these records before
the index, so the damaged copy stops counting for deduplication: the next
backup that meets the same data stores the chunk afresh and every restore
point that names the chunk is healed (chunk ids are content hashes). A
reader still tries a damaged-only copy (every byte is hash-checked anyway),
so a wrong record costs an upload, never data.

Records are only added by commands that may write; on storage that refuses
writes the finding is reported, not recorded. ``prune`` keeps the records
whose copy is still indexed and drops the rest.

Plaintext::

    {"format": 1, "chunks": [{"chunk": "<hex id>", "pack": "<hex id>",
      "reason": "...", "found": "<ISO 8601>", "host": "..."}]}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from surety.core.errors import IntegrityError

__all__ = ["Damage", "decode_damage", "encode_damage"]

_FORMAT = 1


@dataclass(frozen=True)
class Damage:
    chunk: str  # hex chunk id
    pack: str  # hex pack id
    reason: str
    found: str
    host: str

    @property
    def chunk_id(self) -> bytes:
        return bytes.fromhex(self.chunk)


def encode_damage(records: Iterable[Damage]) -> bytes:
    doc = {"format": _FORMAT, "chunks": [asdict(r) for r in records]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode_damage(data: bytes, what: str) -> list[Damage]:
    try:
        doc = json.loads(data)
        if doc["format"] != _FORMAT:
            raise IntegrityError(f"{what}: unknown damage record format")
        records = [Damage(**entry) for entry in doc["chunks"]]
        for record in records:
            bytes.fromhex(record.chunk + record.pack)
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{what}: damaged damage record") from exc
    return records
