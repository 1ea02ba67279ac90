"""Damage every kind of repository file three ways; surety must never be silently wrong.

One repository with three restore points (``a`` twice, ``b`` once; ``b`` and
the second ``a`` share chunks with the first ``a``) is made per module and
copied per case. Each case damages one object (flip one bit in the middle,
truncate to half, delete) and runs ``points``, a restore of every point,
``check --read-data``, a backup and ``prune``. The rules:

* never a traceback; a failure is one error line with a documented exit code;
* a restore that exits 0 is byte-identical to its source; a point that does not
  need the damaged object restores (before and after prune);
* ``check`` exits 6 and names the object when something a point needs is damaged;
* backups go on, except when the config or the only key is damaged (exit 6, or 3);
* ``prune`` deletes nothing when it cannot know what points use (a damaged
  manifest or image index), and never deletes data points use (a damaged or
  deleted index object): every point restores after it;
* a damaged lock is never removed as stale: exit 7, naming `surety unlock`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from surety.app.repository import open_repository
from surety.repo.index import decode_index
from tests.cli import PASSPHRASE, Cli, cli_for
from tests.faults.conftest import (
    Command,
    assert_failed_cleanly,
    assert_no_traceback,
    damage,
    dead_pid,
    flip_bit,
    lock_document,
    make_repository,
    object_path,
    repo_files,
    restored_ok,
    run_many,
)
from tests.integration.conftest import rewrite_blocks, write_image

KINDS = ["config", "keys", "data", "index", "images", "points", "locks", "damaged"]
MODES = ["flip", "truncate", "delete"]
GARBAGE_ADVICE = "prune` removes them"


@dataclass
class Sweep:
    """The pristine repository and what each of its objects is needed by."""

    repo: Path
    sources: dict[str, Path]  # point id -> the image it was made from
    fresh: Path  # a new image for the backup each case makes
    needed_by: dict[str, set[str]] = field(default_factory=dict)  # object -> point ids
    damage_record: bytes = b""  # a valid damaged/<id> object, made on a throwaway copy

    def target(self, kind: str) -> str:
        """The object a case damages: the one the fewest points need (at least one)."""
        if kind == "config":
            return "config"
        if kind == "points":
            first = min(self.sources, key=lambda p: self.sources[p].name)
            return f"points/{first}"
        names = [n for n in self.needed_by if n.startswith(f"{kind}/")]
        assert names, f"the sweep repository has no {kind} object"
        return min(names, key=lambda n: (len(self.needed_by[n]), n))


def _build(root: Path) -> Sweep:
    repo = root / "repo"
    cli = make_repository(repo)
    a1, b1, a2, fresh = (root / f"{n}.img" for n in ("a1", "b1", "a2", "fresh"))
    write_image(a1, 1536 << 10, seed=11)
    write_image(b1, 1 << 20, seed=12)
    with open(b1, "r+b") as out:  # b starts like a: shared chunks across names
        out.write(a1.read_bytes()[: 512 << 10])
    shutil.copyfile(a1, a2)
    rewrite_blocks(a2, 0.2, seed=13)
    write_image(fresh, 512 << 10, seed=14)
    for name, image in (("a", a1), ("b", b1), ("a", a2)):
        cli.run("backup", "image", image, "--name", name)
    points = cli.json("points")
    sweep = Sweep(repo, {p["id"]: s for p, s in zip(points, (a1, b1, a2), strict=True)}, fresh)
    _map_objects(sweep)
    sweep.damage_record = _make_damage_record(root, sweep)
    return sweep


def _map_objects(sweep: Sweep) -> None:
    repo = open_repository(str(sweep.repo), PASSPHRASE)
    index = repo.index()
    everyone = set(sweep.sources)
    sweep.needed_by["config"] = set(everyone)
    for name, _ in repo.storage.list("keys/"):
        sweep.needed_by[name] = set(everyone)
    for point in repo.points():
        needs = {f"points/{point.id}"}
        for disk in point.disks:
            needs.add(f"images/{disk.image}")
            for chunk in repo.get_image(disk.image).stored_ids():
                location = index.get(chunk)
                assert location is not None
                needs.add(f"data/{location.pack}")
        for name in needs:
            sweep.needed_by.setdefault(name, set()).add(point.id)
    for name, _ in repo.storage.list("index/"):
        packs = {p for p, _ in decode_index(repo.get_object("index", name[6:]), name)}
        sweep.needed_by[name] = set().union(*(sweep.needed_by.get(f"data/{p}", ()) for p in packs))


def _make_damage_record(root: Path, sweep: Sweep) -> bytes:
    """Flip a byte of a pack in a copy; ``check --read-data`` (or a restore) records it."""
    copy = root / "throwaway"
    shutil.copytree(sweep.repo, copy)
    cli = cli_for(copy, dict(os.environ))
    pack = object_path(copy, sweep.target("data"))
    flip_bit(pack, offset=pack.stat().st_size // 3, mask=0x01)
    assert cli.run("check", "--read-data", check=False).returncode == 6
    if not list((copy / "damaged").glob("*")):
        for point in sweep.needed_by[sweep.target("data")]:
            cli.run("restore", "image", point, "--to", root / f"t-{point}.img", check=False)
    (record,) = (copy / "damaged").iterdir()
    data = record.read_bytes()
    shutil.rmtree(copy)
    return data


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Sweep:
    return _build(tmp_path_factory.mktemp("sweep"))


def _prepare(sweep: Sweep, repo: Path, kind: str) -> str:
    """Put in place what only some cases have (a lock, a damage record); returns the name."""
    if kind == "locks":
        name = f"locks/{secrets.token_hex(16)}"
        (repo / "locks").mkdir(exist_ok=True)
        (repo / name).write_bytes(lock_document(pid=dead_pid()))
        return name
    if kind == "damaged":
        (repo / "damaged").mkdir(exist_ok=True)
        name = f"damaged/{secrets.token_hex(32)}"
        (repo / name).write_bytes(sweep.damage_record)
        return name
    return sweep.target(kind)


@dataclass
class Run:
    """The commands of one case and their results."""

    cli: Cli
    out: Path
    listed: subprocess.CompletedProcess[str]
    restores: dict[str, subprocess.CompletedProcess[str]]
    checked: subprocess.CompletedProcess[str]
    backed_up: subprocess.CompletedProcess[str]
    pruned: subprocess.CompletedProcess[str]
    files_before_prune: set[str]
    files_after_prune: set[str]


def _run_case(sweep: Sweep, cli: Cli, out: Path, *, all_at_once: bool) -> Run:
    """Reads at once, then a backup, then prune (``all_at_once``: every command together)."""
    points = sorted(sweep.sources)
    reads: list[Command] = [
        ("points", "--json"),
        ("check", "--read-data", "--json"),
        *(("restore", "image", p, "--to", out / f"{p}.img") for p in points),
    ]
    backup: Command = ("backup", "image", sweep.fresh, "--name", "z", "--json")
    before = repo_files(cli.repo)
    if all_at_once:  # no command can open the repository, none changes it
        *results, backed_up, pruned = run_many(cli, [*reads, backup, ("prune",)])
    else:
        results = run_many(cli, reads)
        backed_up = cli.run(*backup, check=False)
        before = repo_files(cli.repo)
        pruned = cli.run("prune", check=False)
    return Run(
        cli,
        out,
        listed=results[0],
        checked=results[1],
        restores=dict(zip(points, results[2:], strict=True)),
        backed_up=backed_up,
        pruned=pruned,
        files_before_prune=before,
        files_after_prune=repo_files(cli.repo),
    )


@dataclass(frozen=True)
class Case:
    """One damaged object and what it means for the restore points."""

    kind: str
    mode: str
    name: str  # the object damaged, e.g. data/<id>
    affected: frozenset[str]  # the points that need it
    lost: str | None  # the point whose manifest it is

    @property
    def ident(self) -> str:
        return self.name.partition("/")[2][:12] or self.name


def _case(sweep: Sweep, kind: str, mode: str, name: str) -> Case:
    lost = name[7:] if kind == "points" else None
    # a deleted manifest is a forgotten point: nothing a point needs is damaged
    affected = set() if (kind, mode) == ("points", "delete") else sweep.needed_by.get(name, set())
    return Case(kind, mode, name, frozenset(affected), lost)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_damaged_object(sweep: Sweep, tmp_path: Path, kind: str, mode: str) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(sweep.repo, repo)
    cli = cli_for(repo, dict(os.environ))
    case = _case(sweep, kind, mode, _prepare(sweep, repo, kind))
    damage(object_path(repo, case.name), mode)
    out = tmp_path / "out"
    out.mkdir()
    # nothing opens a repository with a damaged config or key: no command takes a lock
    run = _run_case(sweep, cli, out, all_at_once=kind in ("config", "keys"))
    for proc in _all_commands(run):
        assert_no_traceback(proc)
    if kind in ("config", "keys"):
        _assert_locked_out(run, case)
    elif kind == "locks" and mode != "delete":
        _assert_lock_respected(run, case)
    else:
        _assert_contained(sweep, run, case)


def _all_commands(run: Run) -> list[subprocess.CompletedProcess[str]]:
    return [run.listed, run.checked, run.backed_up, run.pruned, *run.restores.values()]


def _assert_locked_out(run: Run, case: Case) -> None:
    """Config or the only key damaged: every command fails with one line, exit 6 (or 3)."""
    no_key = (case.kind, case.mode) == ("keys", "delete")
    for proc in _all_commands(run):
        assert_failed_cleanly(proc, {3, 6} if no_key else {6}, *(() if no_key else ("damaged",)))
        assert "wrong passphrase" not in proc.stderr, proc.stderr
    for point in run.restores:
        assert not (run.out / f"{point}.img").exists()
    assert run.files_after_prune == run.files_before_prune


def _assert_lock_respected(run: Run, case: Case) -> None:
    """A lock that cannot be read is held by someone unknown: exit 7, never removed."""
    for proc in _all_commands(run):
        assert_failed_cleanly(proc, {7}, "unreadable lock", "surety unlock")
    assert (run.cli.repo / case.name).exists()
    assert run.files_after_prune == run.files_before_prune


def _assert_contained(sweep: Sweep, run: Run, case: Case) -> None:
    """Damage stays where it is: other points restore, check names it, prune is safe."""
    # points: lists every point but a damaged or deleted manifest, which is named
    assert run.listed.returncode == 0, run.listed.stderr
    listed = {p["id"] for p in json.loads(run.listed.stdout)}
    assert listed == set(sweep.sources) - {case.lost}
    if case.lost and case.mode != "delete":
        assert case.ident in run.listed.stderr, run.listed.stderr
    # restores: never wrong bytes; points that do not need the object restore
    _assert_restores(run.restores, sweep.sources, run.out, case)
    # check: exit 6 and the object named whenever a point needs what was damaged
    _assert_check(run.checked, case)
    # backups go on; the new point is restored after prune
    assert run.backed_up.returncode == 0, run.backed_up.stderr
    # prune: refuses, deleting nothing, when it cannot know what points use
    if case.kind == "images" or (case.kind == "points" and case.mode != "delete"):
        assert_failed_cleanly(run.pruned, {6}, case.ident)
        assert run.files_after_prune == run.files_before_prune
        return
    assert run.pruned.returncode == 0, run.pruned.stderr
    _assert_after_prune(sweep, run, case)


def _assert_restores(
    restores: dict[str, subprocess.CompletedProcess[str]],
    sources: dict[str, Path],
    out: Path,
    case: Case,
) -> set[str]:
    """Judge restores of points (by id); returns the points that did not restore."""
    failed = set()
    for point, proc in restores.items():
        if point == case.lost:
            assert_failed_cleanly(proc, {5} if case.mode == "delete" else {6})
            failed.add(point)
            continue
        if point not in case.affected:
            assert proc.returncode == 0, f"{point[:12]} does not need the damage: {proc.stderr}"
        if not restored_ok(proc, out / f"{point}.img", sources[point], {6, 9}):
            failed.add(point)
    return failed


_KIND_WORD = {"data": "pack", "index": "index", "images": "image", "points": "point"}


def _assert_check(checked: subprocess.CompletedProcess[str], case: Case) -> None:
    said = checked.stdout + checked.stderr
    if case.affected:
        assert checked.returncode == 6, said
        named = case.ident in said or (case.mode == "delete" and _KIND_WORD[case.kind] in said)
        assert named, f"check does not name {case.name}: {said}"
    elif case.kind == "damaged" and case.mode != "delete":
        assert checked.returncode in (0, 6), said
        assert case.ident in said, f"check does not name the damaged damage record: {said}"
    else:
        assert checked.returncode == 0, said
    if case.kind == "index":
        # the packs the index named hold chunks points use: prune must not be advised
        assert GARBAGE_ADVICE not in said, said


def _assert_after_prune(sweep: Sweep, run: Run, case: Case) -> None:
    """Every point that need not fail restores after prune, the new one too."""
    cli, after = run.cli, run.out.parent / "after"
    after.mkdir()
    sources = {**sweep.sources, json.loads(run.backed_up.stdout)["id"]: sweep.fresh}
    points = sorted(sources)
    results = run_many(
        cli,
        [
            ("check", "--read-data", "--json"),
            *(("restore", "image", p, "--to", after / f"{p}.img") for p in points),
        ],
    )
    failed = _assert_restores(dict(zip(points, results[1:], strict=True)), sources, after, case)
    checked = results[0]
    said = checked.stdout + checked.stderr
    if case.kind == "index" and failed:
        # a damaged or deleted index must lose no data: prune keeps what points use
        _repair_index_then_restore(cli, sources, failed, after)
    elif case.kind == "data":
        assert checked.returncode == 6, said  # the only copy is still damaged or gone
    else:
        assert checked.returncode == 0, said
        assert GARBAGE_ADVICE not in said, said


def _repair_index_then_restore(
    cli: Cli, sources: dict[str, Path], failed: set[str], after: Path
) -> None:
    repair = cli.run("repair", "index", check=False)
    if repair.returncode == 2 and "no such command" in repair.stderr.lower():
        pytest.fail(
            f"after prune, point(s) {sorted(p[:12] for p in failed)} that need a damaged index "
            "object no longer restore, and there is no `surety repair index`"
        )
    assert repair.returncode == 0, repair.stderr
    for point in failed:
        target = after / f"{point}.repaired.img"
        proc = cli.run("restore", "image", point, "--to", target, check=False)
        assert proc.returncode == 0, proc.stderr
        assert restored_ok(proc, target, sources[point], ())
