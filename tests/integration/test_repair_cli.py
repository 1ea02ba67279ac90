"""The ways out of damage through the real CLI: unlock, forget ID, repair index|points."""

from __future__ import annotations

import filecmp
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.conftest import Cli, rewrite_blocks

CHUNK = 64 * 1024  # the `initialized` repository's chunk size


def _packs(cli: Cli) -> set[Path]:
    return {p for p in (cli.repo / "data").rglob("*") if p.is_file() and p.name[0] != "."}


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert text in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _write_lock(cli: Cli, name: str, content: bytes) -> Path:
    path = cli.repo / "locks" / name
    path.parent.mkdir(exist_ok=True)  # made by the first lock taken
    path.write_bytes(content)
    return path


def _point_ids(cli: Cli) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for point in cli.json("points"):
        found.setdefault(point["name"], []).append(point["id"])
    return found


def _restores_identical(cli: Cli, ref: str, original: Path, target: Path) -> None:
    cli.run("restore", "image", ref, "--to", target)
    assert filecmp.cmp(original, target, shallow=False), ref
    target.unlink()


# -- unlock -----------------------------------------------------------------------------


def test_unlock_removes_an_unreadable_lock_and_the_repository_works_again(
    initialized: Cli, image_factory: Callable[..., Path]
) -> None:
    image = image_factory(size=1 << 20)
    _write_lock(initialized, "d" * 32, b'{"host": "half a lock')
    for command in (["points"], ["backup", "image", image, "--name", "u"]):
        _one_line_error(initialized.run(*command, check=False), 7, "surety unlock")
    unlocked = initialized.run("unlock")
    assert "removed unreadable lock" in unlocked.stdout
    assert "d" * 32 in unlocked.stdout
    assert not list((initialized.repo / "locks").iterdir())
    initialized.run("backup", "image", image, "--name", "u")
    assert len(initialized.json("points")) == 1


def test_unlock_leaves_a_live_lock_of_another_host_unless_all(initialized: Cli) -> None:
    lock = {
        "version": 2,
        "host": f"not-{socket.gethostname()}",
        "boot_id": "another-boot",
        "pid_ns": "1",
        "pid": 1234,
        "start_time": "99",
        "exclusive": False,
        "operation": "backup vm web01",
        "created": time.time(),
        "refreshed": time.time(),
    }
    path = _write_lock(initialized, "e" * 32, json.dumps(lock).encode())
    unlocked = initialized.run("unlock")
    assert path.exists()
    assert "left live shared lock by 'backup vm web01'" in unlocked.stdout
    assert "warning" not in unlocked.stderr
    everything = initialized.run("unlock", "--all", "--json")
    assert not path.exists()
    assert "removing a live lock lets prune delete data a running backup is writing" in (
        everything.stderr
    )
    assert [lock["lock"] for lock in json.loads(everything.stdout)["removed"]] == [
        f"locks/{'e' * 32}"
    ]


# -- forget ID --------------------------------------------------------------------------


def test_forget_by_id_drops_a_point_whose_manifest_is_damaged(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    keep, lose = image_factory("keep.img", size=1 << 20), image_factory("lose.img", seed=5)
    initialized.run("backup", "image", keep, "--name", "keep")
    before = {p.name for p in (initialized.repo / "points").iterdir()}
    initialized.run("backup", "image", lose, "--name", "lose")
    (victim,) = {p.name for p in (initialized.repo / "points").iterdir()} - before
    _flip(initialized.repo / "points" / victim, 40)
    checked = initialized.run("check", check=False)
    assert checked.returncode == 6
    assert victim[:12] in checked.stdout
    both = initialized.run("forget", victim[:8], "--keep-last", "1", check=False)
    _one_line_error(both, 2, "not both")
    _one_line_error(initialized.run("forget", "0000ffff", check=False), 5, "no restore point")
    forgot = initialized.run("forget", victim[:8])
    assert f"{victim[:12]}  damaged manifest" in forgot.stdout
    assert not (initialized.repo / "points" / victim).exists()
    checked = initialized.run("check")
    assert victim[:12] not in checked.stdout + checked.stderr
    assert "error:" not in checked.stdout
    _restores_identical(initialized, "keep@latest", keep, tmp_path / "k.img")


# -- repair index -----------------------------------------------------------------------


def test_repair_index_rebuilds_a_deleted_index_and_every_point_restores(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    image = image_factory(size=4 << 20)
    first = tmp_path / "first.img"
    initialized.run("backup", "image", image, "--name", "r")
    shutil.copyfile(image, first)
    rewrite_blocks(image, 0.05)
    initialized.run("backup", "image", image, "--name", "r")
    indexes = list((initialized.repo / "index").iterdir())
    assert len(indexes) == 2
    for index in indexes:
        index.unlink()
    broken = initialized.run("restore", "image", "r@latest", "--to", tmp_path / "x", check=False)
    assert broken.returncode == 6
    report = initialized.json("repair", "index")
    assert report["packs"] == len(_packs(initialized))
    assert report["damaged_packs"] == {}
    assert report["lost_points"] == []
    assert [p.name for p in (initialized.repo / "index").iterdir()] == [report["new_index"]]
    old_id, new_id = _point_ids(initialized)["r"]
    _restores_identical(initialized, old_id, first, tmp_path / "a.img")
    _restores_identical(initialized, new_id, image, tmp_path / "b.img")
    checked = initialized.run("check")
    assert "warning:" not in checked.stdout
    assert "error:" not in checked.stdout


def test_repair_index_names_the_points_a_damaged_pack_header_loses(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    lost, kept = image_factory("lost.img", seed=3), image_factory("kept.img", seed=4)
    initialized.run("backup", "image", lost, "--name", "lost")
    (lost_pack,) = _packs(initialized)
    initialized.run("backup", "image", kept, "--name", "kept")
    for index in (initialized.repo / "index").iterdir():
        index.unlink()
    _flip(lost_pack, lost_pack.stat().st_size - 20)  # inside the sealed header
    points = _point_ids(initialized)
    repaired = initialized.run("repair", "index", check=False)
    _one_line_error(repaired, 6, "`surety repair points`")
    assert f"damaged: pack {lost_pack.name[:12]}" in repaired.stdout
    assert points["lost"][0][:12] in repaired.stdout
    assert points["kept"][0][:12] not in repaired.stdout
    dropped = initialized.json("repair", "points")
    assert [p["id"] for p in dropped["points"]] == points["lost"]
    assert _point_ids(initialized) == {"kept": points["kept"]}
    _restores_identical(initialized, "kept@latest", kept, tmp_path / "k.img")


# -- repair points ----------------------------------------------------------------------


def _second_backup_pack_lost(
    cli: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> dict[str, Any]:
    """x twice (the second a little changed) and y; the second x backup's new pack deleted."""
    image, other = image_factory("x.img", size=4 << 20), image_factory("y.img", seed=9)
    cli.run("backup", "image", image, "--name", "x")
    cli.run("backup", "image", other, "--name", "y")
    first = tmp_path / "x-first.img"
    shutil.copyfile(image, first)
    rewrite_blocks(image, 0.01)
    before = _packs(cli)
    cli.run("backup", "image", image, "--name", "x")
    (new_pack,) = _packs(cli) - before
    new_pack.unlink()
    known = {_chunk(p, i) for p in (first, other) for i in range(p.stat().st_size // CHUNK)}
    numbers = [
        i
        for i in range(image.stat().st_size // CHUNK)
        if _chunk(image, i) not in known and any(_chunk(image, i))
    ]
    ids = _point_ids(cli)
    return {
        "image": image,
        "first": first,
        "other": other,
        "x1": ids["x"][0],
        "x2": ids["x"][1],
        "y": ids["y"][0],
        "ranges": _merged([[i * CHUNK, (i + 1) * CHUNK] for i in numbers]),
        "chunks": len(numbers),
    }


def _chunk(path: Path, number: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(number * CHUNK)
        return f.read(CHUNK)


def _merged(ranges: list[list[int]]) -> list[list[int]]:
    merged: list[list[int]] = []
    for start, end in ranges:
        if merged and merged[-1][1] == start:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    return merged


def test_repair_points_drops_exactly_the_points_a_lost_pack_breaks(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    case = _second_backup_pack_lost(initialized, image_factory, tmp_path)
    assert case["chunks"] > 0
    preview = initialized.json("repair", "points", "--dry-run")
    assert [p["id"] for p in preview["points"]] == [case["x2"]]
    assert case["x2"] in {p["id"] for p in initialized.json("points")}
    repaired = initialized.run("repair", "points")
    assert f"{case['x2'][:12]}  x" in repaired.stdout
    assert "dropped" in repaired.stdout
    assert f"x.img: {case['chunks']} chunk(s)" in repaired.stdout
    start, end = case["ranges"][0]
    assert f"[{start}, {end})" in repaired.stdout
    assert _point_ids(initialized) == {"x": [case["x1"]], "y": [case["y"]]}
    _restores_identical(initialized, case["x1"], case["first"], tmp_path / "out-x1.img")
    _restores_identical(initialized, "y@latest", case["other"], tmp_path / "out-y.img")
    initialized.run("prune")
    assert "error:" not in initialized.run("check").stdout


def test_repair_points_salvage_keeps_the_point_with_zeros_in_the_named_ranges(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    case = _second_backup_pack_lost(initialized, image_factory, tmp_path)
    report = initialized.json("repair", "points", "--salvage")
    (point,) = report["points"]
    assert (point["id"], point["action"]) == (case["x2"], "salvage")
    assert point["lost"]["x.img"]["ranges"] == case["ranges"]
    assert point["lost"]["x.img"]["chunks"] == case["chunks"]
    salvaged = next(p for p in initialized.json("points") if p["id"] == point["new_id"])
    assert salvaged["source"]["salvaged"] == {"x.img": case["ranges"]}
    assert salvaged["salvaged"] == {"x.img": case["ranges"]}
    assert "salvaged" in initialized.run("points").stdout
    assert case["x2"] not in {p["id"] for p in initialized.json("points")}
    expected = bytearray(case["image"].read_bytes())
    for start, end in case["ranges"]:
        expected[start:end] = bytes(end - start)
    target = tmp_path / "salvaged.img"
    initialized.run("restore", "image", "x@latest", "--to", target)
    assert target.read_bytes() == bytes(expected)
    assert target.read_bytes() != case["image"].read_bytes()
    initialized.run("prune")
    assert "error:" not in initialized.run("check").stdout
