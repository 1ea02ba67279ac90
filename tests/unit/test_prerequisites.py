"""tests.prerequisites: a missing prerequisite skips a test here and fails it in CI."""

from __future__ import annotations

import json

import pytest

from tests.prerequisites import in_ci, require, require_import


@pytest.fixture
def in_ci_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")


@pytest.fixture
def on_a_developer_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)


@pytest.mark.usefixtures("on_a_developer_machine")
def test_a_missing_prerequisite_skips_outside_ci() -> None:
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception, match="nbdkit"):
        require(False, "nbdkit")
    with pytest.raises(pytest.skip.Exception, match="python3-libnbd"):
        require_import("surety_no_such_module", "python3-libnbd")


@pytest.mark.usefixtures("in_ci_run")
def test_a_missing_prerequisite_fails_in_ci() -> None:
    assert in_ci()
    with pytest.raises(pytest.fail.Exception, match="nbdkit"):
        require(False, "nbdkit")
    with pytest.raises(pytest.fail.Exception, match="python3-libnbd"):
        require_import("surety_no_such_module", "python3-libnbd")


@pytest.mark.parametrize("value", ["false", "0", "", "yes"])
def test_only_ci_true_means_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert not in_ci()
    with pytest.raises(pytest.skip.Exception):
        require(False, "root")


@pytest.mark.parametrize("ci", ["true", None])
def test_a_present_prerequisite_passes_either_way(
    monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    require(True, "root")
    assert require_import("json") is json
