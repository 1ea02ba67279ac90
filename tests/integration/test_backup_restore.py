"""Real backups and restores through the CLI, compared byte for byte."""

from __future__ import annotations

import filecmp
import json
import os
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import Cli, rewrite_blocks


def test_roundtrip_is_byte_identical_and_sparse(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    image = image_factory(size=24 << 20)
    with open(image, "r+b") as f:  # a 4 MiB hole: must come back as a hole
        f.seek(8 << 20)
        f.write(bytes(4 << 20))
    os.system(f"fallocate --dig-holes {image}")
    initialized.run("backup", "image", image, "--name", "web01")
    target = tmp_path / "restored.img"
    out = initialized.run("restore", "image", "web01@latest", "--to", target).stdout
    assert "every chunk verified" in out
    assert filecmp.cmp(image, target, shallow=False)
    assert target.stat().st_size == image.stat().st_size
    assert target.stat().st_blocks * 512 <= image.stat().st_size - (4 << 20)


def test_second_backup_stores_only_new_chunks(
    initialized: Cli, image_factory: Callable[..., Path]
) -> None:
    image = image_factory(size=16 << 20)
    first = initialized.json("backup", "image", image, "--name", "db")
    assert first["new_chunks"] > 0
    again = initialized.json("backup", "image", image, "--name", "db")
    assert again["new_chunks"] == 0
    assert again["stored_bytes"] == 0
    changed = rewrite_blocks(image, 0.01)
    third = initialized.json("backup", "image", image, "--name", "db")
    # every rewritten 4 KiB block dirties at most one 64 KiB chunk
    assert 0 < third["new_bytes"] <= changed * 16
    assert third["new_chunks"] <= changed // 4096


def test_every_restore_point_is_a_full(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    image = image_factory(size=8 << 20)
    copies = []
    for round_ in range(3):
        initialized.run("backup", "image", image, "--name", "vm")
        snapshot = tmp_path / f"copy{round_}.img"
        snapshot.write_bytes(image.read_bytes())
        copies.append(snapshot)
        rewrite_blocks(image, 0.05, seed=10 + round_)
    points = initialized.json("points")
    assert [p["name"] for p in points] == ["vm", "vm", "vm"]
    assert points[1]["parent"] == points[0]["id"]
    for point, expected in zip(points, copies, strict=True):
        target = tmp_path / f"r-{point['id'][:8]}.img"
        initialized.run("restore", "image", point["id"][:10], "--to", target)
        assert filecmp.cmp(expected, target, shallow=False)


def test_points_json_describes_the_restore_point(
    initialized: Cli, image_factory: Callable[..., Path]
) -> None:
    image = image_factory(name="root.img", size=2 << 20)
    initialized.run("backup", "image", image, "--name", "app1")
    (point,) = initialized.json("points")
    assert point["kind"] == "image"
    assert point["consistency"] == "crash"
    assert point["disks"][0]["name"] == "root.img"
    assert point["disks"][0]["size"] == 2 << 20
    assert len(point["id"]) == 64
    human = initialized.run("points").stdout
    assert point["id"][:12] in human
    assert "app1" in human


def test_restore_needs_disk_name_only_when_ambiguous(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    image = image_factory(size=1 << 20)
    initialized.run("backup", "image", image, "--name", "x", "--disk", "vda")
    proc = initialized.run(
        "restore", "image", "x@latest", "--disk", "vdb", "--to", tmp_path / "o.img", check=False
    )
    assert proc.returncode == 5
    assert "has no disk 'vdb'" in proc.stderr
    initialized.run("restore", "image", "x@latest", "--disk", "vda", "--to", tmp_path / "o.img")
    assert filecmp.cmp(image, tmp_path / "o.img", shallow=False)


def test_restore_refuses_to_overwrite_without_flag(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    image = image_factory(size=1 << 20)
    initialized.run("backup", "image", image, "--name", "x")
    target = tmp_path / "exists.img"
    target.write_bytes(b"precious")
    proc = initialized.run("restore", "image", "x@latest", "--to", target, check=False)
    assert proc.returncode == 11
    assert "--overwrite" in proc.stderr
    assert target.read_bytes() == b"precious"
    initialized.run("restore", "image", "x@latest", "--to", target, "--overwrite")
    assert filecmp.cmp(image, target, shallow=False)


def test_forget_and_prune_free_space_and_keep_the_rest_restorable(
    initialized: Cli, image_factory: Callable[..., Path], tmp_path: Path
) -> None:
    image = image_factory(size=8 << 20, seed=5)
    initialized.run("backup", "image", image, "--name", "s")
    for seed in (6, 7):
        image_factory(size=8 << 20, seed=seed)  # entirely new content each time
        initialized.run("backup", "image", image, "--name", "s")
    size_before = sum(f.stat().st_size for f in (initialized.repo / "data").rglob("*"))
    dry = initialized.json("forget", "--keep-last", "1", "--dry-run")
    assert [d["keep"] for d in dry].count(False) == 2
    assert len(initialized.json("points")) == 3
    initialized.run("forget", "--keep-last", "1")
    (kept,) = initialized.json("points")
    report = initialized.json("prune")
    assert report["freed_bytes"] > 0
    size_after = sum(f.stat().st_size for f in (initialized.repo / "data").rglob("*"))
    assert size_after < size_before
    initialized.run("check", "--read-data")
    initialized.run("restore", "image", kept["id"], "--to", tmp_path / "k.img")
    assert filecmp.cmp(image, tmp_path / "k.img", shallow=False)


def test_forget_without_rule_is_refused(initialized: Cli) -> None:
    proc = initialized.run("forget", check=False)
    assert proc.returncode == 2
    assert "refusing" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_json_reports_counts(initialized: Cli, image_factory: Callable[..., Path]) -> None:
    initialized.run("backup", "image", image_factory(size=4 << 20), "--name", "c")
    report = json.loads(initialized.run("check", "--read-data", "--json").stdout)
    assert report["ok"] is True
    assert report["points"] == 1
    assert report["bytes_read"] > 0
