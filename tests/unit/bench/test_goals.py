"""bench/goals.py's verdicts from the benches' JSON documents."""

from __future__ import annotations

from typing import Any

from bench import goals


def _figures() -> dict[str, Any]:
    return {
        "errors": {},
        "compare": {
            "changed": 100e6,
            "tools": {
                "surety": {"full_s": 10.0, "restore_mb_s": 600.0, "second_added_mb": 250.0},
                "zstd": {"full_s": 5.0, "restore_mb_s": 1500.0, "second_added_mb": 0.0},
                "surety-64k": {"full_s": 12.0, "restore_mb_s": 500.0, "second_added_mb": 110.0},
                "restic": {"full_s": 20.0, "restore_mb_s": 300.0, "second_added_mb": 800.0},
            },
        },
        "vm": {
            "tools": {
                "surety": {"full_s": 30.0, "incremental_s": 3.0, "restore_s": 5.0},
                "virtnbdbackup": {"full_s": 20.0, "incremental_s": 4.0, "restore_s": 15.0},
            },
            "ratios": {"full_s": 1.5, "incremental_s": 0.75, "restore_s": 1 / 3},
            "goals": {"full_s": 0.5, "incremental_s": 1.0, "restore_s": 0.5},
        },
        "index": {
            "entries": 4_000_000,
            "lookups": {"rss_anon_mib": 26.0},
            "check": {"peak_anon_mib": 169.0},
            "prune": {"peak_anon_mib": 320.0},
            "backup_large": {"peak_anon_mib": 113.0, "mb_per_s": 380.0},
            "backup_empty": {"peak_anon_mib": 95.0, "mb_per_s": 400.0},
        },
        "instant": {
            "plain_seconds_to_agent": [60.0, 70.0, 65.0],
            "instant_seconds_to_ping": [68.0, 69.0, 90.0],
            "goal_slack_s": 5.0,
        },
        "service": {
            "job": "backup (crash)",
            "service, spare": {"fixed": 0.25},
            "service, no spare": {"fixed": 0.9},
        },
    }


def _by_goal(figures: dict[str, Any]) -> dict[str, goals.Verdict]:
    return {line.goal.split(" ", 1)[1]: line for line in goals.verdicts(figures)}


def test_each_goal_is_judged_against_its_own_target() -> None:
    lines = _by_goal(_figures())
    assert lines["full backup time / zstd -1 -T2"].met is False  # 2.0x > 1.0x
    assert lines["full backup time / zstd -1 -T2"].measured.startswith("2.00x")
    assert lines["restore speed / restic"].met is True  # 2.0x >= 1.5x
    assert lines["incremental stored / changed bytes"].met is False  # 2.5x > 1.2x
    small = lines["incremental stored / changed bytes, 64 KiB chunks"]
    assert small.met is True  # 1.1x
    assert "full backup 1.20x and restore 1.20x the time at 256 KiB" in small.measured
    assert lines["full time / virtnbdbackup"].met is False
    assert lines["incremental time / virtnbdbackup"].met is True
    assert lines["restore time / virtnbdbackup"].met is True
    memory = lines["anonymous memory at 4 million entries"]
    assert memory.met is False
    assert "prune 320" in memory.measured
    assert lines["backup speed into the large / an empty repository"].met is True  # 0.95x
    service = lines["fixed cost of a small run in the service"]
    assert service.met is True
    assert service.measured == "0.250 s (0.900 s without the spare worker; backup (crash))"
    instant = lines["instant VM's agent - plain boot's (medians)"]
    assert instant.met is True
    assert instant.measured.startswith("+4.0 s")


def test_a_bench_that_failed_or_did_not_run_is_named_not_judged() -> None:
    figures = _figures()
    del figures["vm"], figures["service"]
    figures["errors"]["vm"] = "failed (exit 1)"
    lines = goals.verdicts(figures)
    vm = next(line for line in lines if line.goal == "3")
    assert vm.met is None
    assert vm.measured == "vm: failed (exit 1)"
    service = next(line for line in lines if line.goal == "5 (fixed cost)")
    assert service.met is None
    assert "not run" in service.measured
    text = goals.table(lines)
    assert "NOT met" in text
    assert "vm: failed (exit 1)" in text
