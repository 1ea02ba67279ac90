"""The two-DC Samba AD harness (tests/guests/ad.py) on real guests (issue 18).

One pair per session (the ``ad_lab`` fixture of conftest; from the cache when present):
both DCs answer, replication works both ways, ``ldapcmp`` finds the domain
and configuration NCs equal, no SID is used twice, ``drs showrepl`` is clean,
and each DC's up-to-dateness vector holds the other's invocationId.
"""

from __future__ import annotations

import secrets

import pytest

from tests.guests import ad

pytestmark = [pytest.mark.vm, pytest.mark.ad, pytest.mark.timeout(2700)]


def test_pair_is_two_distinct_dcs(ad_lab: ad.AdPair) -> None:
    ids = {dc.dc_name: ad.invocation_id(dc) for dc in ad_lab.dcs}
    assert ids["DC1"] != ids["DC2"], ids
    for dc in ad_lab.dcs:
        assert ad.highest_usn(dc) > 1000, dc
    assert "DC1" in ad.fsmo_roles(ad_lab.dc1)


def test_replication_both_ways(ad_lab: ad.AdPair) -> None:
    tag = secrets.token_hex(2)
    for dc in ad_lab.dcs:
        made = ad.create_contacts(dc, f"c{tag}{dc.hostname}-", 2)
        assert made.created == [f"c{tag}{dc.hostname}-1", f"c{tag}{dc.hostname}-2"], made
        users = ad.create_users(dc, f"u{tag}{dc.hostname}-", 1)
        assert not users.failed, users
    ad.drs_replicate(ad_lab.dc2, ad_lab.dc1)
    ad.drs_replicate(ad_lab.dc1, ad_lab.dc2)
    for dc in ad_lab.dcs:
        assert ad.contacts_on(dc, f"c{tag}") == [
            f"c{tag}dc1-1", f"c{tag}dc1-2", f"c{tag}dc2-1", f"c{tag}dc2-2",
        ], dc  # fmt: skip
        assert ad.users_on(dc, f"u{tag}") == [f"u{tag}dc1-1", f"u{tag}dc2-1"], dc


def test_uptodateness_vectors_hold_the_partner(ad_lab: ad.AdPair) -> None:
    for dc in ad_lab.dcs:
        other = ad_lab.other(dc)
        seen = ad.uptodateness(dc, ad.invocation_id(other))
        assert seen is not None, f"{dc.dc_name} never saw {other.dc_name}"
        assert 0 < seen <= ad.highest_usn(other)


def test_ldapcmp_equal(ad_lab: ad.AdPair) -> None:
    # Both NCs ldapcmp compares: the KCC writes connection objects in the configuration NC.
    for nc in (ad.BASE_DN, ad.CONFIG_DN):
        ad.drs_replicate(ad_lab.dc2, ad_lab.dc1, nc)
        ad.drs_replicate(ad_lab.dc1, ad_lab.dc2, nc)
    equal, text = ad.ldapcmp_equal(ad_lab.dc1, ad_lab.dc2)
    assert equal, text[-4000:]


def test_no_duplicate_sids(ad_lab: ad.AdPair) -> None:
    assert ad.duplicate_sids(ad_lab) == []


def test_showrepl_clean(ad_lab: ad.AdPair) -> None:
    for dc in ad_lab.dcs:
        assert ad.showrepl_failures(dc) == [], ad.samba_log_tail(dc, 30)
