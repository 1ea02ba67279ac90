"""Finding the line of a key path in TOML text (headers, dotted and quoted keys, inline tables)."""

from __future__ import annotations

from surety.config.lines import key_lines, line_of

TEXT = """\
# comment
[service]
timezone = "UTC"   # trailing comment

[policy."web.servers"]
vms = ["a",
       "b"]
retries = { attempts = 3, backoff = "5m" }
retention.keep_daily = 7

  [ policy.nightly.verify ]  # indented header
schedule = "Sat 06:00"
[[extra.list]]
name = "x"
"""


def test_key_lines() -> None:
    lines = key_lines(TEXT)
    assert lines[("service",)] == 2
    assert lines[("service", "timezone")] == 3
    assert lines[("policy", "web.servers")] == 5
    assert lines[("policy", "web.servers", "vms")] == 6
    assert lines[("policy", "web.servers", "retries", "backoff")] == 8
    assert lines[("policy", "web.servers", "retention", "keep_daily")] == 9
    assert lines[("policy", "nightly", "verify", "schedule")] == 12
    assert lines[("extra", "list", "name")] == 14


def test_line_of_falls_back_to_the_parent_or_the_first_child() -> None:
    lines = key_lines(TEXT)
    assert line_of(lines, ("policy", "web.servers", "schedule")) == 5
    assert line_of(lines, ("policy", "nightly", "verify", "group")) == 11
    assert line_of(lines, ("policy",)) == 5
    assert line_of(lines, ("nothing",)) is None
