"""Deletion candidates: prune in two phases with a grace period (format 4).

On object storage a backup's lock is judged stale by its age alone, so a
backup whose lock was removed as stale may still be between its last lock
check and its manifest write while a prune runs. A one-phase prune would
delete the packs and image indexes that backup is about to reference. So
prune there *marks* what no restore point references in a **candidate
list**, and deletes a candidate only in a later prune, once it was marked at
least a grace period ago (default 2 x the stale age, never less than the
stale age) and only if it is still unreferenced then. A candidate that a
point references again is dropped from the list (kept) and named.

Object name::

    candidates/<time>-<list id>

``<time>`` is the writing prune's UTC time as ``YYYYMMDDTHHMMSSffffffZ``
(names sort by it), ``<list id>`` the keyed hash of the plaintext. Sealed
with AD ``candidates`` over ``u64 raw length || codec byte || payload`` like
every small sealed object. Plaintext (JSON, sorted keys, compact)::

    {"format": 1, "time": "<ISO 8601 UTC, = the name's>", "host": "...",
     "grace": <seconds the writer used>,
     "objects": {"data/<id>": "<ISO 8601 UTC: first marked>", "images/<id>": "..."}}

Rules: the **newest** list (by name) is the current one; it carries every
candidate still unreferenced with the time it was *first* marked. Older
lists are superseded (left by a crash, or still locked on an immutable
repository) and never read for decisions. A newest list that cannot be read
is a warning: no list is used, every unreferenced object is marked afresh
(deletion waits a new grace period) - never a reason to delete. A marked
time in the future (another host's clock) counts as now.

Must not know: the storage backend (prune decides where two phases apply).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from surety.core.errors import IntegrityError, StorageError, UsageError
from surety.repo import codec
from surety.repo.lock import STALE_AFTER
from surety.repo.repository import Repository

__all__ = [
    "DEFAULT_GRACE",
    "MIN_GRACE",
    "PREFIX",
    "CandidateList",
    "Decision",
    "Lists",
    "check_grace",
    "decide",
    "default_grace",
    "new_list",
    "read_lists",
    "write_list",
]

PREFIX = "candidates/"
_KIND = b"candidates"
_FORMAT = 1
_STAMP = "%Y%m%dT%H%M%S%fZ"
_NAME = re.compile(r"^candidates/(\d{8}T\d{12}Z)-([0-9a-f]{64})$")
MIN_GRACE = timedelta(seconds=STALE_AFTER)
DEFAULT_GRACE = 2 * MIN_GRACE


def default_grace(repo: Repository) -> timedelta | None:
    """Two phases on object storage (a lock is judged by its age there); one on a local disk.

    On a local directory a backup's lock is judged by its pid (same host, boot and
    PID namespace), never stale while the backup lives, and prune frees space at
    once (what a full disk needs); ``prune --grace`` asks for two phases there too
    (a directory several hosts share, e.g. over NFS).
    """
    return DEFAULT_GRACE if repo.object_lock is not None else None


def check_grace(grace: timedelta) -> timedelta:
    if grace < MIN_GRACE:
        raise UsageError(
            f"--grace {_minutes(grace)} is shorter than the stale-lock age "
            f"({_minutes(MIN_GRACE)}): a backup whose lock is judged stale could still "
            "commit and lose its data; give at least 30m"
        )
    return grace


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:g} min"


@dataclass(frozen=True)
class CandidateList:
    """One prune's deletion candidates: object name -> when it was first marked."""

    time: datetime
    host: str
    grace: timedelta
    objects: Mapping[str, datetime] = field(default_factory=dict)

    def encode(self) -> bytes:
        doc = {
            "format": _FORMAT,
            "time": self.time.isoformat(),
            "host": self.host,
            "grace": self.grace.total_seconds(),
            "objects": {name: when.isoformat() for name, when in sorted(self.objects.items())},
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes, what: str) -> CandidateList:
        try:
            doc = json.loads(data)
            if doc["format"] != _FORMAT:
                raise IntegrityError(f"{what}: unknown candidate list format {doc['format']!r}")
            objects = {str(n): _utc(t) for n, t in doc["objects"].items()}
            return cls(
                _utc(doc["time"]), str(doc["host"]), timedelta(seconds=doc["grace"]), objects
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise IntegrityError(f"{what}: not a candidate list ({exc})") from None

    def name(self, list_id: str) -> str:
        return f"{PREFIX}{self.time.astimezone(UTC).strftime(_STAMP)}-{list_id}"


def _utc(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return when.astimezone(UTC)


def write_list(repo: Repository, candidates: CandidateList) -> str:
    """Seal and store ``candidates``; returns its object name."""
    plaintext = candidates.encode()
    name = candidates.name(repo.keys.object_id(plaintext))
    body = len(plaintext).to_bytes(8, "little") + codec.encode(plaintext, 3)
    repo.storage.put(name, repo.keys.seal(_KIND, body))
    return name


def _read(repo: Repository, name: str) -> CandidateList:
    what = f"candidate list {name[len(PREFIX) :]}"
    match = _NAME.match(name)
    if match is None:
        raise IntegrityError(f"{what}: not a candidate list name")
    body = repo.keys.unseal(_KIND, repo.storage.get(name), what)
    plaintext = codec.decode(body[8:], int.from_bytes(body[:8], "little"), what)
    if repo.keys.object_id(plaintext) != match.group(2):
        raise IntegrityError(f"{what}: content does not match its name")
    found = CandidateList.decode(plaintext, what)
    if found.time.strftime(_STAMP) != match.group(1):
        raise IntegrityError(f"{what}: its time does not match its name")
    return found


@dataclass(frozen=True)
class Lists:
    """The candidate lists in a repository: the current one, every name, what did not open."""

    current: CandidateList | None
    names: tuple[str, ...]
    problems: tuple[str, ...]


def read_lists(repo: Repository, every: bool = False) -> Lists:
    """The newest list (None when there is none, or it does not open: a problem, never a
    reason to delete). ``every``: open the older lists too, to name those that do not
    open (``check``); prune reads only the newest."""
    names = sorted((name for name, _ in repo.storage.list(PREFIX)), reverse=True)
    current, problems = None, []
    for position, name in enumerate(names):
        if position > 0 and not every:
            break
        try:
            found = _read(repo, name)
        except (IntegrityError, StorageError) as exc:
            why = "ignored: its candidates are marked afresh (their deletion waits a new grace)"
            problems.append(f"{exc} ({why if position == 0 else 'superseded'})")
            continue
        if position == 0:
            current = found
    return Lists(current, tuple(names), tuple(problems))


@dataclass(frozen=True)
class Decision:
    """What one prune does with the unreferenced objects (``decide``)."""

    delete: tuple[str, ...]  # marked at least a grace ago and still unreferenced
    objects: dict[str, datetime]  # the new list: every unreferenced object, first marked
    new: tuple[str, ...]  # marked by this prune
    dropped: tuple[str, ...]  # were candidates, still stored, referenced again: kept

    def waiting(self) -> list[str]:
        gone = set(self.delete)
        return [name for name in self.objects if name not in gone]

    def next_due(self, grace: timedelta) -> datetime | None:
        """When the earliest waiting candidate may be deleted (None: none waits)."""
        marks = [self.objects[name] for name in self.waiting()]
        return min(marks) + grace if marks else None


def decide(
    unreferenced: Iterable[str],
    previous: Mapping[str, datetime],
    *,
    now: datetime,
    grace: timedelta,
    stored: Iterable[str],
    replaced: Iterable[str] = (),
) -> Decision:
    """The decision rule: an unreferenced object is deleted iff the current list marked it
    at least ``grace`` before ``now``; otherwise it is (or stays) marked. A pack
    ``replaced`` by repacking held chunks points use until now: it is marked afresh (and
    counts as referenced again when it was a candidate)."""
    objects: dict[str, datetime] = {}
    delete, new = [], []
    fresh = set(replaced)
    for name in sorted(set(unreferenced) | fresh):
        marked = None if name in fresh else previous.get(name)
        if marked is None:
            new.append(name)
            objects[name] = now
            continue
        objects[name] = min(marked, now)  # a mark from a clock ahead of ours counts as now
        if objects[name] + grace <= now:
            delete.append(name)
    alive = set(stored)
    dropped = sorted(n for n in previous if (n not in objects or n in fresh) and n in alive)
    return Decision(tuple(delete), objects, tuple(new), tuple(dropped))


def new_list(objects: Mapping[str, datetime], now: datetime, grace: timedelta) -> CandidateList:
    return CandidateList(now, socket.gethostname(), grace, dict(objects))
