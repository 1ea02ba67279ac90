"""The pure parts of bench/s3.py (arguments, request counting, the report), so it does not rot.

The benchmark itself runs a radosgw and peers for minutes: it is never part of
the test suite (docs/storage.md, "S3 speed").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench import s3 as bench

GIB = 1 << 30

LOG = (
    "2026-12-06T17:20:01.000+0000 7f 1 beast: 0x1: 127.0.0.1 - surety-backup "
    '[06/Dec/2026:17:20:01.000 +0000] "PUT /bench-surety-1/repo/data/ab HTTP/1.1" 200 0 - '
    '"Boto3/1.26" - latency=0.01s\n'
    "2026-12-06T17:20:01.100+0000 7f 1 beast: 0x1: 127.0.0.1 - surety-backup "
    '[06/Dec/2026:17:20:01.100 +0000] "GET /bench-surety-1/repo/index/?list-type=2 HTTP/1.1"'
    " 200 10 - - - latency=0.01s\n"
    "2026-12-06T17:20:01.200+0000 7f 1 beast: 0x1: 127.0.0.1 - surety-backup "
    '[06/Dec/2026:17:20:01.200 +0000] "GET /bench-surety-1?list-type=2&prefix=repo HTTP/1.1"'
    " 200 10 - - - latency=0.01s\n"
    "2026-12-06T17:20:01.300+0000 7f 1 beast: 0x1: 127.0.0.1 - surety-backup "
    '[06/Dec/2026:17:20:01.300 +0000] "HEAD /bench-surety-1/.bench-mark-00ff HTTP/1.1" 404 0'
    " - - - latency=0.01s\n"
    "2026-12-06T17:20:01.400+0000 7f 1 beast: 0x1: 127.0.0.1 - surety-backup "
    '[06/Dec/2026:17:20:01.400 +0000] "PUT /bench-restic-2/data/00/00aa HTTP/1.1" 200 0 - '
    "- - latency=0.01s\n"
    "2026-12-06T17:20:01.500+0000 7f 1 RGWDataChangesLog::ChangesRenewThread: start\n"
)


def figures() -> dict[str, Any]:
    """Figures as the bench writes them: surety half raw's backup speed, 2x restic's restore."""

    def steps(full: float, second: float, restore: float) -> dict[str, Any]:
        return {
            name: bench.step_figures(GIB, seconds, 100 * 1024, 64, 1.5, client_cpu=2.25)
            for name, seconds in (("full", full), ("second", second), ("restore", restore))
        }

    return {
        "size": GIB,
        "changed": 30 << 20,
        "part_size": 16 << 20,
        "cold_cache": True,
        "load_before": "2.00 2.00 2.00",
        "load_after": "3.00 2.50 2.10",
        "tools": {
            "surety": {"steps": steps(10, 2, 4), "stored_full_mib": 300.0,
                       "added_second_mib": 40.0},
            "raw": {"steps": steps(5, 5, 4), "stored_full_mib": 1024.0,
                    "added_second_mib": 1024.0},
            "restic": {"steps": steps(12, 3, 8), "stored_full_mib": 310.0,
                       "added_second_mib": 90.0},
        },
    }  # fmt: skip


def test_defaults_are_one_gib_every_tool_and_a_bench_started_server() -> None:
    args = bench.parse_args([])
    assert args.size == "1G"
    assert args.tools == ["surety", "raw", "zstd", "restic"]
    assert args.s3_env is None
    assert args.json is None


def test_options_parse(tmp_path: Path) -> None:
    env = tmp_path / "env"
    args = bench.parse_args(
        ["--size", "4G", "--tools", "surety, restic", "--s3-env", str(env), "--json", "f.json"]
    )
    assert (args.size, args.tools, args.s3_env, args.json) == (
        "4G",
        ["surety", "restic"],
        env,
        Path("f.json"),
    )


def test_an_unknown_tool_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.parse_args(["--tools", "surety,borg"])
    assert exit_.value.code == 2
    assert "unknown tools: borg" in capsys.readouterr().err


def test_the_env_file_of_s3_up_is_read() -> None:
    text = (
        "export AWS_ENDPOINT_URL=http://127.0.0.1:4242\n"
        "export AWS_ACCESS_KEY_ID=ABC\nexport AWS_SECRET_ACCESS_KEY='s3cr3t'\n"
        "# a comment\n"
    )
    assert bench.parse_exports(text) == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:4242",
        "AWS_ACCESS_KEY_ID": "ABC",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
    }


def test_requests_are_counted_per_bucket_without_markers() -> None:
    assert bench.count_requests(LOG, "bench-surety-1") == {"PUT": 1, "GET": 2}
    assert bench.count_requests(LOG, "bench-restic-2") == {"PUT": 1}
    assert bench.count_requests(LOG, "bench-raw-3") == {}


def test_step_figures_per_gib() -> None:
    step = bench.step_figures(2 * GIB, 4.0, 2048, 100, None)
    assert step["mib_s"] == 512
    assert step["requests_per_gib"] == 50
    assert step["peak_rss_mib"] == 2
    assert bench.step_figures(GIB, 1.0, 1024, None, None)["requests_per_gib"] is None


def test_the_report_shows_every_step_the_ratios_and_the_goals() -> None:
    report = bench.format_report(figures())
    lines = report.splitlines()
    assert "page cache dropped" in lines[0]
    assert "load average 2.00 2.00 2.00 before, 3.00 2.50 2.10 after" in lines[0]
    rows = [line.split() for line in lines if line.startswith(("surety ", "raw ", "restic "))]
    assert len(rows) == 9
    assert rows[0] == ["surety", "full", "10.00", "102", "64.0", "1.5", "2.2", "100", "300.0"]
    assert rows[2][-1] == "—"  # nothing stored by a restore
    assert "surety/raw speed: full 0.50x, second 2.50x, restore 1.00x" in lines
    assert "surety/restic speed: full 1.20x, second 1.50x, restore 2.00x" in lines
    assert "goal backup >= 0.8x the raw upload: 0.50x, NOT met" in lines
    assert "goal restore >= 1.5x restic: 2.00x, met" in lines
    assert not any(" runs: " in line for line in lines)  # one run each: nothing more


def test_runs_of_a_step_are_listed_and_the_median_is_the_step() -> None:
    runs = [bench.step_figures(GIB, seconds, 1024, 10, None) for seconds in (9.0, 3.0, 4.0)]
    median = bench.median_step(runs)
    assert median["seconds"] == 4.0
    data = figures()
    data["tools"]["surety"]["steps"]["restore"] = {**median, "runs": runs}
    lines = bench.format_report(data).splitlines()
    assert "surety restore runs: 9.00, 3.00, 4.00 s (median 4.00)" in lines
    assert bench.median_step(runs[:2])["seconds"] == 3.0  # an even count: the lower middle


def test_without_surety_there_are_no_ratios() -> None:
    data = figures()
    del data["tools"]["surety"]
    assert "surety/" not in bench.format_report(data)


def test_restores_are_timed_to_disk_and_the_time_to_exit_is_reported_beside() -> None:
    def restore(durable: float, exited: float) -> dict[str, Any]:
        step = bench.step_figures(GIB, durable, 1024, 10, None, exit_seconds=exited)
        return {**step, "runs": [step]}

    data = figures()
    data["tools"]["surety"]["steps"]["restore"] = restore(5.0, 4.9)
    data["tools"]["restic"]["steps"]["restore"] = restore(8.0, 6.0)
    lines = bench.format_report(data).splitlines()
    assert "goal restore >= 1.5x restic: 1.60x, met" in lines  # the ratio of times to disk
    assert "surety restore until it exited: 4.90 s (median 4.90)" in lines
    assert "restic restore until it exited: 6.00 s (median 6.00)" in lines
    assert any(
        line.startswith("surety/restic restore until each tool exited") and line.endswith(": 1.22x")
        for line in lines
    )
    assert not any(line.startswith("surety/raw restore until") for line in lines)  # not recorded


def test_flush_fsyncs_the_file_and_times_it(tmp_path: Path) -> None:
    out = tmp_path / "restored.img"
    out.write_bytes(b"x" * 65536)
    assert 0 <= bench.flush(out) < 10
    with pytest.raises(FileNotFoundError):
        bench.flush(tmp_path / "missing")
