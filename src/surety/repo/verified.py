"""Verification summaries in the repository: what recovery needs to know without a catalog.

A host's catalog records every verification, but a disaster takes the host
with it. So each verification also writes a small sealed summary into the
repository itself: a fresh host with only the storage, its credentials and the
passphrase lists the restore points *with their verified state*
(``surety points``) before it restores one.

Object name (repository format 3)::

    verified/<point id>-<summary id>

``<point id>`` is the restore point's id (so listing ``verified/`` tells which
points have summaries without opening them, and ``prune`` drops the summaries
of forgotten points by name alone); ``<summary id>`` is the keyed hash of the
plaintext, checked on read as for every small sealed object. The object is
sealed with AD ``verified`` over ``u64 raw length || codec byte || payload``.
It is written with create-if-absent and never rewritten: a newer verification
is a new object, and the one with the latest ``verified`` time wins. Plaintext (sorted keys)::

    {"format": 1, "point": "<point id>", "verdict": "passed" | "failed",
     "verified": "<ISO 8601 UTC>", "host": "<host that verified>",
     "lab": "<lab id>", "group": "<application group>",
     "boot_seconds": 12.3 | null, "reason": "...",
     "probes": [{"probe": "agent", "ok": true, "evidence": "<one line, <= 200 chars>"}]}

A summary that does not open (damaged, or another repository's) is named in
``notes`` and skipped: it never hides a restore point, and a point without a
readable summary is simply "not verified" here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import asdict, dataclass, field

from surety.core.errors import IntegrityError, ObjectExists, StorageError
from surety.repo import codec
from surety.repo.repository import Repository

__all__ = [
    "PREFIX",
    "ProbeSummary",
    "VerificationSummary",
    "check_summaries",
    "latest_summaries",
    "orphaned_summaries",
    "read_summaries",
    "write_summary",
]

PREFIX = "verified/"
_KIND = b"verified"
_FORMAT = 1
EVIDENCE_MAX = 200


@dataclass(frozen=True)
class ProbeSummary:
    probe: str
    ok: bool
    evidence: str


@dataclass(frozen=True)
class VerificationSummary:
    point: str
    verdict: str  # passed | failed
    verified: str  # ISO 8601 UTC
    host: str
    lab: str = ""
    group: str = ""
    boot_seconds: float | None = None
    reason: str = ""
    probes: tuple[ProbeSummary, ...] = field(default_factory=tuple)

    def document(self) -> dict[str, object]:
        return {"format": _FORMAT, **asdict(self), "probes": [asdict(p) for p in self.probes]}

    def encode(self) -> bytes:
        return json.dumps(self.document(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes, what: str) -> VerificationSummary:
        try:
            doc = json.loads(data)
            if doc.pop("format") != _FORMAT:
                raise IntegrityError(f"{what}: unknown verification summary format")
            probes = tuple(ProbeSummary(**p) for p in doc.pop("probes"))
            return cls(**doc, probes=probes)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"{what}: not a verification summary ({exc})") from None


def one_line(text: str) -> str:
    """Evidence as one short line (the proof on the verifying host keeps it whole)."""
    line = " ".join(text.split())
    return line if len(line) <= EVIDENCE_MAX else line[: EVIDENCE_MAX - 3] + "..."


def write_summary(repo: Repository, summary: VerificationSummary) -> str:
    """Store ``summary`` (create-if-absent; an identical one already there counts as done)."""
    plaintext = summary.encode()
    name = f"{PREFIX}{summary.point}-{repo.keys.object_id(plaintext)}"
    body = len(plaintext).to_bytes(8, "little") + codec.encode(plaintext, 3)
    with suppress(ObjectExists):  # content-addressed: the same summary is there already
        repo.storage.create(name, repo.keys.seal(_KIND, body))
    return name


def read_summaries(repo: Repository) -> list[VerificationSummary]:
    """Every summary that opens; damaged ones are named in ``repo.notes`` and skipped."""
    found, problems = _read_all(repo)
    repo.notes.extend(problems)
    return found


def check_summaries(repo: Repository) -> tuple[int, list[str]]:
    """(summaries that open, one line per damaged one) for ``check``: never an error."""
    found, problems = _read_all(repo)
    return len(found), problems


def _read_all(repo: Repository) -> tuple[list[VerificationSummary], list[str]]:
    found, problems = [], []
    for name, _ in repo.storage.list(PREFIX):
        try:
            found.append(_read(repo, name))
        except (IntegrityError, StorageError) as exc:
            problems.append(f"{exc} (skipped: no restore point is affected)")
    return found, problems


def latest_summaries(repo: Repository) -> dict[str, VerificationSummary]:
    """Point id -> its latest summary (by ``verified`` time)."""
    latest: dict[str, VerificationSummary] = {}
    for summary in sorted(read_summaries(repo), key=lambda s: s.verified):
        latest[summary.point] = summary
    return latest


def orphaned_summaries(repo: Repository, points: Iterable[str] | None = None) -> list[str]:
    """Names of summaries whose restore point is gone (``prune`` deletes them)."""
    if points is None:
        points = (name[len("points/") :] for name, _ in repo.storage.list("points/"))
    alive = set(points)
    return [
        name
        for name, _ in repo.storage.list(PREFIX)
        if name[len(PREFIX) :].partition("-")[0] not in alive
    ]


def _read(repo: Repository, name: str) -> VerificationSummary:
    what = f"verification summary {name[len(PREFIX) : len(PREFIX) + 12]}"
    point, _, summary_id = name[len(PREFIX) :].partition("-")
    body = repo.keys.unseal(_KIND, repo.storage.get(name), what)
    plaintext = codec.decode(body[8:], int.from_bytes(body[:8], "little"), what)
    if repo.keys.object_id(plaintext) != summary_id:
        raise IntegrityError(f"{what}: content does not match its name")
    summary = VerificationSummary.decode(plaintext, what)
    if summary.point != point:
        raise IntegrityError(f"{what}: names point {summary.point[:12]}, not {point[:12]}")
    return summary
