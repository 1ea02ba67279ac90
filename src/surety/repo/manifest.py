"""Manifests: one per restore point; writing it is the atomic commit.

A manifest is JSON, zstd-compressed and sealed (kind b"point"), stored at
``points/<id>`` where the id is the keyed hash of its plaintext. It names the
source, every disk with its size and image index, the VM configuration blobs,
the consistency level reached (and why), application metadata and times.
Unknown keys are kept (a newer writer may add some); ``format`` guards the
rest: 1, or 2 for a salvaged point (``source["salvaged"]`` names the byte
ranges of each disk that were lost and are zeros), which older releases refuse.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from surety.core.errors import IntegrityError
from surety.repo.format import MANIFEST_FORMAT, MANIFEST_FORMAT_SALVAGED, MANIFEST_FORMATS

__all__ = ["CONSISTENCY_LEVELS", "DiskRecord", "Manifest"]

CONSISTENCY_LEVELS = ("crash", "filesystem", "application")


@dataclass(frozen=True)
class DiskRecord:
    name: str
    size: int
    image: str  # id of the images/<id> object
    source: str = ""
    stats: dict[str, int] = field(default_factory=dict)


_DISK_FIELDS = frozenset(f.name for f in fields(DiskRecord))


@dataclass(frozen=True)
class Manifest:
    name: str
    kind: str  # "image" | "vm"
    started: datetime
    finished: datetime
    host: str
    disks: tuple[DiskRecord, ...]
    consistency: str = "crash"
    consistency_reason: str = ""
    config: dict[str, str] = field(default_factory=dict)
    applications: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    stats: dict[str, int] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)  # e.g. libvirt uuid, checkpoint
    id: str = ""  # set from the stored object's name, not part of the plaintext

    def disk(self, name: str) -> DiskRecord | None:
        return next((d for d in self.disks if d.name == name), None)

    @property
    def salvaged(self) -> dict[str, list[list[int]]]:
        """Per disk, the byte ranges ``surety repair points --salvage`` replaced by zeros."""
        found = self.source.get("salvaged") or {}
        return found if isinstance(found, dict) else {}

    def disk_images(self) -> set[str]:
        """Ids of the image indexes this point's disks name."""
        return {d.image for d in self.disks}

    def encode(self) -> bytes:
        doc = asdict(self)
        doc.pop("id")
        doc["format"] = MANIFEST_FORMAT_SALVAGED if self.salvaged else MANIFEST_FORMAT
        doc["started"] = self.started.isoformat()
        doc["finished"] = self.finished.isoformat()
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes, point_id: str) -> Manifest:
        try:
            doc = json.loads(data)
            if not isinstance(doc, dict):
                raise TypeError("manifest is not a JSON object")
            if doc.pop("format") not in MANIFEST_FORMATS:
                raise IntegrityError(f"restore point {point_id[:12]}: unknown format")
            disks = tuple(
                DiskRecord(**{k: v for k, v in d.items() if k in _DISK_FIELDS})
                for d in doc.pop("disks")
            )
            return cls(
                name=doc["name"],
                kind=doc["kind"],
                started=datetime.fromisoformat(doc["started"]),
                finished=datetime.fromisoformat(doc["finished"]),
                host=doc["host"],
                disks=disks,
                consistency=doc.get("consistency", "crash"),
                consistency_reason=doc.get("consistency_reason", ""),
                config=doc.get("config", {}),
                applications=doc.get("applications", {}),
                parent=doc.get("parent"),
                stats=doc.get("stats", {}),
                source=doc.get("source", {}),
                id=point_id,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"restore point {point_id[:12]}: damaged manifest") from exc
