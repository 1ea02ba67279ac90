"""The pure parts of bench/vm_backup.py (arguments, ratios, the table), so it does not rot.

The benchmark itself boots two guests and runs for many minutes: it is never
part of the test suite (docs/storage.md, "surety beside virtnbdbackup").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from bench import vm_backup as bench


def figures() -> dict[str, bench.ToolFigures]:
    """surety at 0.4x virtnbdbackup's full, 1.5x its incremental, 0.5x its restore."""
    return {
        "surety": bench.ToolFigures(20.0, 6.0, 10.0, 900.0, 150.0, 128.0, True),
        "virtnbdbackup": bench.ToolFigures(50.0, 4.0, 20.0, 2400.0, 140.0, 128.0, True),
    }


def test_defaults_run_both_tools_on_the_issue_sizes() -> None:
    args = bench.parse_args([])
    assert args.tool_list == ["surety", "virtnbdbackup"]
    assert (args.fill_mib, args.disk_size, args.freeze_runs) == (1536, "4G", 10)
    assert not args.skip_peers
    assert args.json is None


def test_options_parse() -> None:
    args = bench.parse_args(
        ["--tools", "virtnbdbackup", "--fill-mib", "64", "--json", "f.json", "--skip-peers"]
    )
    assert (args.tool_list, args.fill_mib, args.json, args.skip_peers) == (
        ["virtnbdbackup"],
        64,
        Path("f.json"),
        True,
    )


def test_an_unknown_tool_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(["--tools", "surety,restic"])
    assert exit_.value.code == 2
    assert "unknown tool(s) restic" in capsys.readouterr().err


def test_ratios_are_surety_over_virtnbdbackup() -> None:
    assert bench.ratios(figures()) == pytest.approx(
        {"full_s": 0.4, "incremental_s": 1.5, "restore_s": 0.5}
    )


def test_without_both_tools_there_are_no_ratios() -> None:
    only = {"surety": figures()["surety"]}
    assert bench.ratios(only) == {}
    assert "surety / virtnbdbackup" not in bench.table(only)


def test_the_table_has_a_row_per_tool_and_the_ratios_with_their_goals() -> None:
    lines = bench.table(figures()).splitlines()
    assert lines[0].startswith("| tool | full s | incremental s | restore s | stored MB full")
    assert lines[2] == "| surety | 20.0 | 6.0 | 10.0 | 900.0 | 150.0 | yes |"
    assert lines[3] == "| virtnbdbackup | 50.0 | 4.0 | 20.0 | 2400.0 | 140.0 | yes |"
    ratio_cells = [cell.strip() for cell in lines[4].split("|")[2:5]]
    assert ratio_cells == [
        "0.40x (goal <= 0.5x: met)",
        "1.50x (goal <= 1.0x: not met)",
        "0.50x (goal <= 0.5x: met)",
    ]


def test_a_restore_that_does_not_match_the_guest_says_so() -> None:
    data = figures()
    data["virtnbdbackup"] = bench.ToolFigures(50.0, 4.0, 20.0, 2400.0, 140.0, 128.0, False)
    assert bench.table(data).splitlines()[3].endswith("| NO |")


def test_the_json_document_carries_figures_ratios_goals_and_context() -> None:
    doc = json.loads(json.dumps(bench.document(figures(), load_before="1.0 1.0 1.0")))
    assert doc["load_before"] == "1.0 1.0 1.0"
    assert doc["tools"]["virtnbdbackup"]["full_s"] == 50.0
    assert doc["ratios"]["full_s"] == pytest.approx(0.4)
    assert doc["goals"] == {"full_s": 0.5, "incremental_s": 1.0, "restore_s": 0.5}


def test_the_cpu_line_names_each_step_or_says_it_was_not_measured() -> None:
    fig = bench.ToolFigures(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, True, {"full": 12.34, "restore": 3.0})
    assert bench.cpu_line("surety", fig) == (
        "surety CPU (user+sys of its processes): full 12.3 s, restore 3.0 s"
    )
    assert bench.cpu_line("virtnbdbackup", figures()["virtnbdbackup"]).endswith("not measured")


def test_the_cpu_line_adds_qemu_and_the_host_when_measured() -> None:
    fig = bench.ToolFigures(
        10.0, 2.0, 4.0, 1.0, 1.0, 1.0, True, {"full": 6.0},
        qemu_cpu_s={"full": 9.5}, host_busy_s={"full": 18.0, "restore": 4.0},
    )  # fmt: skip
    line = bench.cpu_line("surety", fig)
    assert "the guest's QEMU: full 9.5 s" in line
    assert f"full 18.0 core-s (1.80 of {os.cpu_count()} cores)" in line
    assert "restore 4.0 core-s (1.00 of" in line


def test_qemu_cpu_of_no_vm_is_zero_and_the_host_counter_grows() -> None:
    assert bench.qemu_cpu(None) == 0.0
    assert bench.qemu_cpu("no-such-vm-surety-test") == 0.0
    before = bench.host_busy()
    sum(range(2_000_000))
    assert bench.host_busy() >= before > 0
