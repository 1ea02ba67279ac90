"""Loading surety.toml: the typed result, and every problem named by file, line and key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from surety.config import ConfigError, check_config, default_config_path, load_config
from surety.core.errors import UsageError
from tests.unit.config.conftest import WriteConfig, example_in

MINIMAL = """
[repository.local]
location = "/srv/repo"
passphrase_file = "passphrase"

[policy.nightly]
vms = ["db-*", "web1"]
schedule = "Mon..Fri 22:30"
"""


def problems(write_config: WriteConfig, text: str) -> list[str]:
    path = write_config(text)
    return [str(p).removeprefix(f"{path}:") for p in check_config(path)]


def test_the_shipped_example_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "surety.toml"
    path.write_text(example_in(tmp_path))
    config = load_config(path)
    policy = config.policies["nightly"]
    assert policy.repository == "local"
    assert policy.selection.vms == ("all",)
    assert policy.schedule.text == "*-*-* 02:00"
    assert policy.retention is not None
    assert (policy.retention.daily, policy.retention.weekly) == (7, 4)
    assert policy.prune
    assert config.repositories["local"].passphrase_file == tmp_path / "passphrase"


def test_the_example_with_every_option_switched_on_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "surety.toml"
    path.write_text(example_in(tmp_path, uncomment=True))
    assert check_config(path) == []
    config = load_config(path)
    db = config.policies["databases"]
    assert config.service.timezone == "Europe/Berlin"
    assert db.schedule.tz == ZoneInfo("Europe/Berlin")
    assert db.selection.exclude == ("db-scratch*",)
    assert db.selection.tags == ("backup-databases",)
    assert (db.consistency, db.on_quiesce_failure, db.truncate_logs) == (
        "application",
        "filesystem",
        "after-commit",
    )
    assert db.retries.attempts == 3
    assert db.retries.backoff == timedelta(minutes=5)
    assert db.rpo == timedelta(hours=26)
    assert db.retention is not None
    assert db.retention.within == timedelta(days=2)
    assert db.verify is not None
    assert db.verify.group == tmp_path / "databases.group.toml"
    assert db.check is not None
    assert db.check.read_data_parts == 30
    admins, chat = config.notifications["admins"], config.notifications["chat"]
    assert (admins.kind, admins.smtp_host, admins.smtp_port, admins.starttls) == (
        "email",
        "mail.example.org",
        587,
        True,
    )
    assert admins.recipients == ("ops@example.org",)
    assert admins.events == frozenset({"failure", "warning", "rpo"})
    assert admins.daily_summary == "08:00"
    assert chat.url == "https://chat.example.org/hooks/backup"
    assert chat.headers == {"Authorization": "Bearer see-your-chat-admin"}
    offsite = config.repositories["offsite"]
    assert offsite.s3_settings == {
        "endpoint": "https://s3.example.org",
        "region": "eu-central-1",
        "profile": "surety-backup",
        "credentials_file": str(tmp_path / "aws-credentials"),
        "ca_bundle": str(tmp_path / "s3-ca.pem"),
    }
    assert offsite.retention is not None
    assert (offsite.retention.daily, offsite.retention.monthly) == (14, 12)
    assert db.copy_to == "offsite"


def test_a_minimal_policy_takes_the_defaults(write_config: WriteConfig) -> None:
    config = load_config(write_config(MINIMAL))
    policy = config.policies["nightly"]
    assert policy.repository == "local"  # the only repository: no need to name it
    assert policy.consistency == "filesystem"
    assert policy.start_window == timedelta(hours=1)
    assert policy.retention is None
    assert config.service.max_jobs == 2


def test_one_line_per_problem_with_line_and_key_path(write_config: WriteConfig) -> None:
    text = MINIMAL + 'start_window = "90x"\nconsistancy = "crash"\n'
    assert problems(write_config, text) == [
        "9: policy.nightly.start_window: not a duration: '90x' (use e.g. 90s, 15m, 4h, 2d, 1w)",
        "10: policy.nightly.consistancy: unknown key (did you mean 'consistency'?)",
    ]


def test_every_problem_is_collected_not_just_the_first(write_config: WriteConfig) -> None:
    text = """
[service]
timezone = "Mars/Olympus"
max_jobs = 0

[repository.local]
location = "/srv/repo"
passphrase_file = "missing.passphrase"

[policy.nightly]
repository = "locl"
vms = "all"
schedule = "Mon..Fry 22:30"
consistency = "filesystem"
on_quiesce_failure = "application"
truncate_logs = "sometimes"
notify = ["admins"]
retries = { attempts = 0, backof = "5m" }

[policy.nightly.retention]
prune = true

[notify.admin]
type = "email"

[notify.hook]
type = "webhook"
to = ["x@example.org"]
"""
    got = problems(write_config, text)
    assert (
        "3: service.timezone: unknown time zone 'Mars/Olympus' (an IANA name such as Europe/Berlin)"
        in got
    )
    assert "4: service.max_jobs: must be at least 1, not 0" in got
    assert any(p.startswith("8: repository.local.passphrase_file: cannot read ") for p in got)
    assert (
        "13: policy.nightly.schedule: 'Fry' in 'Mon..Fry' is not a weekday (Mon, Tue, ... Sun)"
        in got
    )
    assert (
        "11: policy.nightly.repository: no [repository.locl] in this file (did you mean 'local'?)"
        in got
    )
    assert (
        "15: policy.nightly.on_quiesce_failure: application is above consistency filesystem "
        "(a fall-back must be lower)"
    ) in got
    assert (
        "16: policy.nightly.truncate_logs: "
        "'sometimes' is not one of never, after-commit, after-verify" in got
    )
    assert (
        "17: policy.nightly.notify: no [notify.admins] in this file (did you mean 'admin'?)" in got
    )
    assert "18: policy.nightly.retries.attempts: must be at least 1, not 0" in got
    assert "18: policy.nightly.retries.backof: unknown key (did you mean 'backoff'?)" in got
    assert any(p.startswith("20: policy.nightly.retention: no keep_* rule") for p in got)
    assert any(p.startswith("23: notify.admin.to: required") for p in got)
    assert "28: notify.hook.to: not used by a webhook target (only by email ones)" in got
    assert any(p.startswith("26: notify.hook.url: required") for p in got)
    assert len(got) == 14


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('timeout = "15"', "policy.nightly.timeout: not a duration: '15'"),
        ('rpo = "0h"', "policy.nightly.rpo: duration '0h' must be longer than zero"),
        (
            "freeze_window = 900",
            "policy.nightly.freeze_window: must be between 0.5 and 600, not 900",
        ),
        (
            'freeze_window = "10"',
            "policy.nightly.freeze_window: expected a number, got string '10'",
        ),
        ("vms = 3", "policy.nightly.vms: expected a list of names, got integer 3"),
        (
            'schedule = "2025-*-* 00:00"',
            "policy.nightly.schedule: date '2025-*-*': year restrictions",
        ),
        (
            'script_failure = "warn"',
            "policy.nightly.script_failure: 'warn' is not one of fail, ignore",
        ),
        (
            'truncate_logs = "after-verify"',
            "policy.nightly.truncate_logs: after-verify needs a [policy.nightly.verify] table",
        ),
    ],
)
def test_value_problems(write_config: WriteConfig, extra: str, expected: str) -> None:
    text = MINIMAL.replace('schedule = "Mon..Fri 22:30"', "") + 'schedule = "daily"\n' + extra
    if extra.startswith(("vms", "schedule")):
        key = extra.split(" ", maxsplit=1)[0]
        text = (
            "\n".join(line for line in text.splitlines() if not line.startswith(f"{key} "))
            + "\n"
            + extra
        )
    got = problems(write_config, text)
    assert len(got) == 1, got
    assert got[0].split(": ", 1)[1].startswith(expected)


def test_a_policy_must_select_and_schedule(write_config: WriteConfig) -> None:
    text = MINIMAL.replace('vms = ["db-*", "web1"]\nschedule = "Mon..Fri 22:30"\n', "")
    assert problems(write_config, text) == [
        "6: policy.nightly.schedule: required (e.g. 'daily', 'Mon..Fri 22:30', 'every 4h')",
        '6: policy.nightly: selects no VM: give vms (names, globs or "all") or tags',
    ]


def test_missing_passphrase_file_setting_is_a_problem_unless_the_environment_has_one(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = MINIMAL.replace('passphrase_file = "passphrase"\n', "")
    assert problems(write_config, text) == [
        "2: repository.local.passphrase_file: required: the service runs unattended and reads "
        "the passphrase from this file (or SURETY_PASSPHRASE in its environment)"
    ]
    monkeypatch.setenv("SURETY_PASSPHRASE", "secret")
    assert problems(write_config, text) == []


def test_several_repositories_need_a_name(write_config: WriteConfig) -> None:
    text = MINIMAL + '\n[repository.other]\nlocation = "/x"\npassphrase_file = "passphrase"\n'
    assert problems(write_config, text) == [
        "6: policy.nightly.repository: required: the name of a [repository.NAME] table"
    ]


def test_unknown_sections_and_inline_tables_point_at_their_line(write_config: WriteConfig) -> None:
    text = MINIMAL + "retention = { keep_dayly = 7 }\n[polcy.x]\n"
    got = problems(write_config, text)
    assert "10: polcy: unknown key (did you mean 'policy'?)" in got
    assert "9: policy.nightly.retention.keep_dayly: unknown key (did you mean 'keep_daily'?)" in got


def test_check_and_verify_rules(write_config: WriteConfig) -> None:
    text = MINIMAL + '[policy.nightly.check]\nschedule = "Sun 05:00"\nread_data_subset = "2/30"\n'
    got = problems(write_config, text)
    assert len(got) == 1
    assert got[0].startswith("11: policy.nightly.check.read_data_subset: '2/30' is not '1/M'")
    text = MINIMAL + "[policy.nightly.verify]\ngroup = 3\n"
    assert problems(write_config, text) == [
        "9: policy.nightly.verify.schedule: required (e.g. 'daily', 'Mon..Fri 22:30', 'every 4h')",
        "10: policy.nightly.verify.group: expected a string, got integer 3",
    ]


def test_notification_values(write_config: WriteConfig) -> None:
    text = MINIMAL + (
        '[notify.m]\ntype = "email"\nto = "a@b"\nsmtp = "host:99999"\nevents = ["failures"]\n'
        'daily_summary = "25:00"\nusername = "u"\n'
        '[notify.w]\ntype = "webhook"\nurl = "ftp://x"\n[notify.p]\ntype = "pager"\n'
    )
    assert problems(write_config, text) == [
        "9: notify.m.password_file: required with username (the SMTP password)",
        "12: notify.m.smtp: 'host:99999' is not HOST[:PORT] (e.g. 'mail.example.org:587')",
        "13: notify.m.events: unknown event 'failures' (events: failure, warning, success, rpo)",
        "14: notify.m.daily_summary: '25:00' is not a local time HH:MM (e.g. '08:00')",
        "18: notify.w.url: 'ftp://x' is not an http:// or https:// URL",
        "20: notify.p.type: 'pager' is not one of email, webhook",
    ]


def test_toml_syntax_error_names_the_line(write_config: WriteConfig) -> None:
    got = problems(write_config, MINIMAL + "schedule daily\n")
    assert len(got) == 1
    assert got[0].startswith("9: not valid TOML: Expected '=' after a key")


def test_missing_file_is_one_clear_problem(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert [str(p) for p in check_config(path)] == [
        f"{path}: no such configuration file (give --config FILE or set SURETY_CONFIG)"
    ]


def test_load_raises_a_usage_error_with_every_problem(write_config: WriteConfig) -> None:
    path = write_config(MINIMAL + 'rpo = "x"\ntimeout = "y"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert isinstance(caught.value, UsageError)
    assert caught.value.exit_code == 2
    assert len(caught.value.problems) == 2
    assert str(caught.value).count("\n") == 1


def test_default_path_is_surety_config_then_etc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SURETY_CONFIG", raising=False)
    assert default_config_path() == Path("/etc/surety/surety.toml")
    monkeypatch.setenv("SURETY_CONFIG", "/srv/my.toml")
    assert default_config_path() == Path("/srv/my.toml")
