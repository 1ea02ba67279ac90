"""Which VMs of a host a policy covers (pure: the caller lists the host's VMs and tags).

``select_vms``: every VM matching a name or glob of ``vms`` (``all`` and ``*`` match
every VM) or carrying one of ``tags`` in its libvirt metadata, minus every VM matching
an ``exclude`` glob — excludes win. ``unknown_names``: plain names in ``vms`` that are
no VM of the host (status shows them as warnings; they do not stop anything).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase

from surety.config.model import Selection

__all__ = ["is_pattern", "select_vms", "unknown_names"]

ALL = ("all", "*")


def select_vms(selection: Selection, domains: Mapping[str, Sequence[str]]) -> list[str]:
    """The names of ``domains`` (name -> its tags) that ``selection`` covers, sorted."""
    patterns = ["*" if name in ALL else name for name in selection.vms]
    wanted = set(selection.tags)
    return sorted(
        name
        for name, tags in domains.items()
        if (any(fnmatchcase(name, p) for p in patterns) or wanted.intersection(tags))
        and not any(fnmatchcase(name, p) for p in selection.exclude)
    )


def unknown_names(selection: Selection, domains: Mapping[str, Sequence[str]]) -> list[str]:
    """Names in ``selection.vms`` that are neither a glob nor a VM of ``domains``."""
    return [
        name
        for name in selection.vms
        if name not in ALL and not is_pattern(name) and name not in domains
    ]


def is_pattern(name: str) -> bool:
    """True for a glob (``*``, ``?``, ``[...]``), as fnmatch reads it."""
    return any(c in name for c in "*?[")
