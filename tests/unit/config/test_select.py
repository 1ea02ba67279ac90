"""Which VMs a policy covers: names, globs, all, tags, excludes win; unknown plain names."""

from __future__ import annotations

from surety.config import Selection, select_vms, unknown_names

HOST = {"db-1": ["prod"], "db-scratch": [], "web1": ["prod", "web"], "web2": [], "mail": ["mail"]}


def test_names_and_globs() -> None:
    assert select_vms(Selection(vms=("db-*", "web1")), HOST) == ["db-1", "db-scratch", "web1"]


def test_all_and_star_mean_every_vm() -> None:
    assert select_vms(Selection(vms=("all",)), HOST) == sorted(HOST)
    assert select_vms(Selection(vms=("*",)), HOST) == sorted(HOST)


def test_tags_add_vms() -> None:
    assert select_vms(Selection(vms=("mail",), tags=("web",)), HOST) == ["mail", "web1"]
    assert select_vms(Selection(tags=("prod",)), HOST) == ["db-1", "web1"]


def test_excludes_win_over_names_globs_and_tags() -> None:
    selection = Selection(vms=("all",), exclude=("db-scratch", "web*"), tags=("web",))
    assert select_vms(selection, HOST) == ["db-1", "mail"]
    assert select_vms(Selection(vms=("web1",), exclude=("web1",)), HOST) == []


def test_selection_is_case_sensitive_like_libvirt_names() -> None:
    assert select_vms(Selection(vms=("WEB1", "Db-*")), HOST) == []


def test_unknown_names_are_plain_names_that_are_not_vms() -> None:
    selection = Selection(vms=("all", "db-*", "web1", "gone", "ghost[12]", "old"))
    assert unknown_names(selection, HOST) == ["gone", "old"]
    assert unknown_names(Selection(vms=("web?",)), {}) == []
