"""Prune in two phases (format 4): the candidate list's format and the decision rule.

On a memory repository with an injected clock: what no point references is
marked, not deleted; a later prune deletes it only once the grace has passed
and only if it is still unreferenced; a candidate referenced again is kept and
named; a backup that wrote its data before the mark and commits after it keeps
every chunk. A list that does not open never makes prune delete anything.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from surety.cli.main import cli
from surety.core.errors import UsageError
from surety.core.progress import NullProgress
from surety.repo.candidates import (
    DEFAULT_GRACE,
    PREFIX,
    CandidateList,
    decide,
    read_lists,
    write_list,
)
from surety.repo.check import check_repository
from surety.repo.format import ZERO_ID
from surety.repo.image import ImageIndex
from surety.repo.manifest import DiskRecord, Manifest
from surety.repo.prune import PruneReport, prune_repository
from surety.repo.repository import Repository
from surety.repo.storage import LocalStorage, MemoryStorage
from surety.repo.writer import ChunkWriter, prepare_chunk
from tests.unit.conftest import CHEAP_KDF, PASSPHRASE, make_manifest
from tests.unit.repo.test_check import CHUNK, START, back_up

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def prune_at(repo: Repository, when: datetime, **options: object) -> PruneReport:
    options.setdefault("grace", DEFAULT_GRACE)
    return prune_repository(repo, NullProgress(), clock=lambda: when, **options)  # type: ignore[arg-type]


def names(repo: Repository, prefix: str) -> set[str]:
    return {name for name, _ in repo.storage.list(prefix)}


def restore(repo: Repository, point_id: str) -> bytes:
    (disk,) = repo.points_get(point_id).disks
    image = repo.get_image(disk.image)
    return b"".join(
        bytes(image.chunk_length(i)) if c == ZERO_ID else repo.read_chunk(c)
        for i, c in enumerate(image.chunk_ids)
    )


def data(seed: int, chunks: int = 4) -> bytes:
    return random.Random(seed).randbytes(chunks * CHUNK)


# -- the list ---------------------------------------------------------------------------


def test_a_list_round_trips_sealed_and_the_newest_is_current(repo: Repository) -> None:
    older = CandidateList(T0, "h1", DEFAULT_GRACE, {"data/" + "a" * 64: T0})
    newer = CandidateList(T0 + HOUR, "h2", DEFAULT_GRACE, {"images/" + "b" * 64: T0 + HOUR})
    first, second = write_list(repo, older), write_list(repo, newer)
    assert first.startswith(PREFIX + "20261206T120000000000Z-")
    assert first < second
    lists = read_lists(repo)
    assert lists.current == newer
    assert set(lists.names) == {first, second}
    assert lists.problems == ()
    plaintext = CandidateList.decode(newer.encode(), "x")
    assert plaintext == newer


def test_a_damaged_newest_list_is_a_warning_and_deletes_nothing(
    repo: Repository, storage: MemoryStorage
) -> None:
    kept = back_up(repo, {"vda": data(1)}, "web01", 1)
    gone = back_up(repo, {"vda": data(2)}, "web01", 2)
    repo.forget(gone)
    prune_at(repo, T0)  # marks the forgotten point's pack and image index
    prune_at(repo, T0 + 30 * 60 * timedelta(seconds=1))  # writes a newer list, same marks
    (newest,) = sorted(names(repo, PREFIX))[-1:]
    sealed = bytearray(storage.get(newest))
    sealed[-1] ^= 1
    storage.put(newest, bytes(sealed))
    before = names(repo, "data/") | names(repo, "images/")
    report = prune_at(repo, T0 + 5 * HOUR)  # the older list alone would make them due
    assert report.deleted_packs == report.deleted_images == 0
    assert report.marked == 2
    assert any("candidate list" in n and "marked afresh" in n for n in report.notes)
    assert names(repo, "data/") | names(repo, "images/") == before
    checked = check_repository(repo, read_data=True, progress=NullProgress())
    assert checked.ok, checked.errors
    assert checked.candidates == 2
    assert restore(repo, kept) == data(1)


# -- the decision rule --------------------------------------------------------------------


def test_decide_marks_waits_deletes_and_drops() -> None:
    previous = {"data/due": T0 - 2 * HOUR, "data/young": T0 - HOUR / 2, "data/used": T0 - 2 * HOUR}
    previous["data/gone"] = T0 - 2 * HOUR
    previous["images/ahead"] = T0 + 3 * HOUR  # another host's clock: counts as now
    decision = decide(
        ["data/due", "data/young", "data/new", "images/ahead"],
        previous,
        now=T0,
        grace=HOUR,
        stored=["data/due", "data/young", "data/new", "data/used", "images/ahead"],
    )
    assert decision.delete == ("data/due",)
    assert decision.new == ("data/new",)
    assert decision.dropped == ("data/used",)  # referenced again; data/gone is just gone
    assert decision.objects == {
        "data/due": T0 - 2 * HOUR,
        "data/young": T0 - HOUR / 2,
        "data/new": T0,
        "images/ahead": T0,
    }
    assert sorted(decision.waiting()) == ["data/new", "data/young", "images/ahead"]
    assert decision.next_due(HOUR) == T0 + HOUR / 2


def test_grace_below_the_stale_age_is_refused(repo: Repository) -> None:
    with pytest.raises(UsageError, match="shorter than the stale-lock age"):
        prune_at(repo, T0, grace=timedelta(minutes=29))


# -- prune in two phases ------------------------------------------------------------------


def test_mark_then_delete_after_the_grace(repo: Repository) -> None:
    kept = back_up(repo, {"vda": data(1)}, "web01", 1)
    gone = back_up(repo, {"vda": data(2)}, "web01", 2)
    repo.forget(gone)
    before = names(repo, "data/")
    first = prune_at(repo, T0)
    assert (first.deleted_packs, first.deleted_images, first.marked) == (0, 0, 2)
    assert (first.two_phase, first.grace_seconds) == (True, 3600)
    assert first.next_deletion == (T0 + HOUR).isoformat(timespec="seconds")
    assert names(repo, "data/") == before
    assert len(names(repo, PREFIX)) == 1
    waiting = prune_at(repo, T0 + HOUR - timedelta(seconds=1))
    assert (waiting.deleted_packs, waiting.marked, waiting.waiting) == (0, 0, 2)
    assert waiting.next_deletion == first.next_deletion  # the first mark counts
    assert len(names(repo, PREFIX)) == 1  # the superseded list is gone
    done = prune_at(repo, T0 + HOUR)
    assert (done.deleted_packs, done.deleted_images, done.waiting) == (1, 1, 0)
    assert done.freed_bytes > 0
    assert len(names(repo, "data/")) == len(before) - 1
    assert restore(repo, kept) == data(1)
    checked = check_repository(repo, read_data=True, progress=NullProgress())
    assert (checked.errors, checked.warnings) == ([], [])


def test_a_candidate_referenced_again_is_kept_and_named(repo: Repository) -> None:
    gone = back_up(repo, {"vda": data(3)}, "web01", 1)
    repo.forget(gone)
    assert prune_at(repo, T0).marked == 2
    # the same data again: deduplicated against the marked pack (still indexed)
    again = back_up(repo, {"vda": data(3)}, "web01", 2)
    packs = names(repo, "data/")
    report = prune_at(repo, T0 + 2 * HOUR)
    assert (report.deleted_packs, report.deleted_images, report.referenced_again) == (0, 0, 2)
    assert any("referenced again" in n for n in report.notes)
    assert names(repo, "data/") == packs
    assert restore(repo, again) == data(3)
    assert report.waiting == 0


def stage(repo: Repository, disk: bytes) -> Manifest:
    """A backup up to its commit: packs, index and image index written, no manifest yet."""
    writer, zero, ids = ChunkWriter(repo), bytes(CHUNK), []
    for offset in range(0, len(disk), CHUNK):
        chunk = prepare_chunk(repo.keys, disk[offset : offset + CHUNK], zero, writer, 1)
        writer.add(chunk)
        ids.append(chunk.chunk_id)
    image = repo.put_image(ImageIndex(CHUNK, len(disk), tuple(ids)))
    writer.finish()
    record = DiskRecord("vda", len(disk), image)
    return make_manifest("late", finished=START + 5 * HOUR, disks=(record,))


def test_a_backup_that_commits_between_two_prunes_keeps_its_data(repo: Repository) -> None:
    old = data(4, 6)
    gone = back_up(repo, {"vda": old}, "web01", 1)
    repo.forget(gone)  # its chunks stay indexed: the late backup deduplicates against them
    changed = old[: 3 * CHUNK] + data(5, 3)
    late = stage(repo, changed)  # its lock is judged stale from here on (another host)
    marked = prune_at(repo, T0)
    assert marked.deleted_packs == marked.deleted_images == 0
    assert marked.marked == 4  # the forgotten pack + image, the late one's pack + image
    point = repo.commit(late)  # it passed its lock check just before the prune
    assert restore(repo, point) == changed  # indexed all along: restorable at once
    report = prune_at(repo, T0 + 2 * HOUR)
    assert (report.deleted_packs, report.referenced_again) == (0, 3)
    assert report.deleted_images == 1  # the forgotten point's image index only
    assert restore(repo, point) == changed
    checked = check_repository(repo, read_data=True, progress=NullProgress())
    assert checked.ok, checked.errors


def test_repacking_replaced_packs_wait_too(repo: Repository) -> None:
    repo.config = type(repo.config)(**{**repo.config.__dict__, "pack_size": 64 * CHUNK})
    both = data(6, 8)
    gone = back_up(repo, {"vda": both}, "web01", 1)  # one pack of 8 chunks
    kept = back_up(repo, {"vda": both[: 4 * CHUNK]}, "web01", 2)  # shares 4 of them
    repo.forget(gone)
    first = prune_at(repo, T0)
    assert first.repacked_packs == 1
    assert first.deleted_packs == 0
    assert restore(repo, kept) == both[: 4 * CHUNK]
    done = prune_at(repo, T0 + HOUR)
    assert done.repacked_packs == 0  # the replaced pack lists only its unused blobs now
    assert done.deleted_packs >= 1
    assert restore(repo, kept) == both[: 4 * CHUNK]
    checked = check_repository(repo, read_data=True, progress=NullProgress())
    assert (checked.errors, checked.warnings) == ([], [])


def test_a_dry_run_writes_nothing_and_a_local_default_is_one_phase(repo: Repository) -> None:
    gone = back_up(repo, {"vda": data(7)}, "web01", 1)
    repo.forget(gone)
    dry = prune_at(repo, T0, dry_run=True)
    assert (dry.marked, dry.candidate_list) == (2, None)
    assert names(repo, PREFIX) == set()
    one = prune_repository(repo, NullProgress())  # memory/local: one phase by default
    assert (one.two_phase, one.deleted_packs) == (False, 1)
    assert names(repo, "data/") == set()


# -- the command ----------------------------------------------------------------------------


def _prune_cli(location: Path, *args: str) -> Result:
    env = {
        "SURETY_REPOSITORY": str(location),
        "SURETY_PASSPHRASE": PASSPHRASE,
        "SURETY_NO_CACHE": "1",
    }
    return CliRunner().invoke(cli, ["prune", *args], env=env)


def test_prune_grace_on_the_command_line(tmp_path: Path) -> None:
    location = tmp_path / "repo"
    location.mkdir()
    repo = Repository.init(LocalStorage(location), PASSPHRASE, CHUNK, CHEAP_KDF)
    repo.forget(back_up(repo, {"vda": data(8)}, "web01", 1))
    short = _prune_cli(location, "--grace", "10m")
    assert short.exit_code == 2
    assert "shorter than the stale-lock age (30 min)" in short.output
    assert "Traceback" not in short.output
    marked = _prune_cli(location, "--grace", "45m", "--json")  # two phases on a local disk too
    assert marked.exit_code == 0, marked.output
    report = json.loads(marked.output)
    assert (report["two_phase"], report["grace_seconds"], report["marked"]) == (True, 2700, 2)
    assert (report["deleted_packs"], report["waiting"]) == (0, 2)
    plain = _prune_cli(location, "--grace", "45m")
    assert "marked 0 unreferenced object(s)" in plain.output
    assert "2 candidate(s)" in plain.output
    assert "(grace 45m)" in plain.output
    one = json.loads(_prune_cli(location, "--json").output)  # the local default: one phase
    assert (one["two_phase"], one["deleted_packs"], one["deleted_images"]) == (False, 1, 1)
