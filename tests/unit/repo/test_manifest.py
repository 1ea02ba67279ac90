"""Manifests (restore points): JSON encoding, decoding and its failure modes."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from surety.core.errors import IntegrityError
from surety.repo.format import MANIFEST_FORMAT
from surety.repo.manifest import DiskRecord, Manifest
from tests.unit.conftest import make_manifest

POINT_ID = "0123456789abcdef" * 4


def _rich_manifest() -> Manifest:
    started = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)
    return Manifest(
        name="wëb-01 ✓ 日本",
        kind="vm",
        started=started,
        finished=started + timedelta(seconds=3, microseconds=1),
        host="hypervisor-ä",
        disks=(
            DiskRecord("vda", 10 * 2**30, "aa" * 32, "/var/lib/libvirt/images/a.qcow2", {"new": 3}),
            DiskRecord("vdb", 0, "bb" * 32),
        ),
        consistency="application",
        consistency_reason="fsfreeze ok; postgres backup mode",
        config={"domain.xml": "<domain type='kvm'>\n  <name>wëb</name>\n</domain>\n", "nvram": ""},
        applications={"postgres": {"lsn": "0/3000028", "databases": ["a", "b"], "ok": True}},
        parent="cd" * 32,
        stats={"bytes_read": 12345, "chunks_new": 7},
    )


def test_round_trip_of_a_rich_manifest() -> None:
    manifest = _rich_manifest()
    decoded = Manifest.decode(manifest.encode(), POINT_ID)
    assert decoded == dataclasses.replace(manifest, id=POINT_ID)
    assert decoded.started.tzinfo is not None
    assert decoded.disks[0].stats == {"new": 3}
    assert decoded.disk("vdb") == DiskRecord("vdb", 0, "bb" * 32)
    assert decoded.disk("vdc") is None


def test_round_trip_of_defaults() -> None:
    manifest = make_manifest()
    decoded = Manifest.decode(manifest.encode(), POINT_ID)
    assert decoded == dataclasses.replace(manifest, id=POINT_ID)
    assert decoded.parent is None
    assert decoded.config == {}
    assert decoded.consistency == "crash"


def test_encoding_is_canonical_json_without_the_id() -> None:
    manifest = _rich_manifest()
    doc = json.loads(manifest.encode())
    assert doc["format"] == MANIFEST_FORMAT
    assert "id" not in doc
    assert list(doc) == sorted(doc)
    assert doc["started"] == "2024-02-29T23:59:58.123456+00:00"
    # the id is not part of the plaintext: same content -> same bytes
    assert dataclasses.replace(manifest, id="x").encode() == manifest.encode()


def test_naive_and_offset_datetimes_round_trip() -> None:
    tz = timezone(timedelta(hours=-3, minutes=-30))
    for finished in (datetime(2023, 1, 1, 0, 0), datetime(2023, 1, 1, 0, 0, tzinfo=tz)):
        manifest = make_manifest(finished=finished, started=finished)
        assert Manifest.decode(manifest.encode(), POINT_ID).finished == finished


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63), st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(), inner, max_size=4)
    ),
    max_leaves=12,
)
# fixed offsets: a zoneinfo time in a DST fold/gap never compares equal across zones
offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
datetimes = st.datetimes(
    min_value=datetime(1971, 1, 1),
    max_value=datetime(2200, 1, 1),
    timezones=st.one_of(st.none(), offsets),
)
disks = st.builds(
    DiskRecord,
    name=st.text(min_size=1),
    size=st.integers(min_value=0, max_value=2**63),
    image=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    source=st.text(),
    stats=st.dictionaries(st.text(), st.integers(min_value=0, max_value=2**63)),
)
manifests = st.builds(
    Manifest,
    name=st.text(min_size=1),
    kind=st.sampled_from(["image", "vm"]),
    started=datetimes,
    finished=datetimes,
    host=st.text(),
    disks=st.lists(disks, max_size=3).map(tuple),
    consistency=st.sampled_from(["crash", "filesystem", "application"]),
    consistency_reason=st.text(),
    config=st.dictionaries(st.text(), st.text(), max_size=3),
    applications=st.dictionaries(st.text(), json_values, max_size=3),
    parent=st.one_of(st.none(), st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
    stats=st.dictionaries(st.text(), st.integers(min_value=0, max_value=2**63), max_size=3),
)


@given(manifests)
def test_round_trip_property(manifest: Manifest) -> None:
    decoded = Manifest.decode(manifest.encode(), POINT_ID)
    assert decoded == dataclasses.replace(manifest, id=POINT_ID)
    assert decoded.encode() == manifest.encode()


def _doc() -> dict[str, object]:
    return json.loads(make_manifest().encode())


@pytest.mark.parametrize("version", [0, 3, MANIFEST_FORMAT + 2, "1", None])
def test_unknown_format_version_is_rejected(version: object) -> None:
    doc = _doc()
    doc["format"] = version
    with pytest.raises(IntegrityError, match="unknown format"):
        Manifest.decode(json.dumps(doc).encode(), POINT_ID)


def test_missing_format_version_is_rejected() -> None:
    doc = _doc()
    del doc["format"]
    with pytest.raises(IntegrityError):
        Manifest.decode(json.dumps(doc).encode(), POINT_ID)


@pytest.mark.parametrize("field", ["name", "kind", "started", "finished", "host", "disks"])
def test_missing_required_field_is_rejected(field: str) -> None:
    doc = _doc()
    del doc[field]
    with pytest.raises(IntegrityError, match="damaged manifest"):
        Manifest.decode(json.dumps(doc).encode(), POINT_ID)


@pytest.mark.parametrize(
    ("field", "value"),
    [("started", "yesterday"), ("finished", 17), ("disks", [["vda", 1]]), ("disks", [{}])],
)
def test_malformed_field_is_rejected(field: str, value: object) -> None:
    doc = _doc()
    doc[field] = value
    with pytest.raises(IntegrityError, match="damaged manifest"):
        Manifest.decode(json.dumps(doc).encode(), POINT_ID)


def test_unknown_top_level_key_is_tolerated() -> None:
    doc = _doc()
    doc["added_by_a_newer_writer"] = {"x": 1}
    decoded = Manifest.decode(json.dumps(doc).encode(), POINT_ID)
    assert decoded.name == "web01"


def test_unknown_disk_key_is_tolerated() -> None:
    doc = _doc()
    doc["disks"][0]["added_by_a_newer_writer"] = 1  # type: ignore[index]
    decoded = Manifest.decode(json.dumps(doc).encode(), POINT_ID)
    assert decoded.disks[0].name == "vda"


@pytest.mark.parametrize(
    "garbage",
    [b"", b"{", b"\xff\xfe\x00", b"not json at all", b"[]", b"[1,2]", b"{}", b'{"format": 1}'],
)
def test_garbage_is_integrity_error(garbage: bytes) -> None:
    with pytest.raises(IntegrityError, match=POINT_ID[:12]):
        Manifest.decode(garbage, POINT_ID)


@pytest.mark.parametrize("garbage", [b"42", b'"text"', b"null", b"true"])
def test_json_scalar_is_integrity_error(garbage: bytes) -> None:
    with pytest.raises(IntegrityError):
        Manifest.decode(garbage, POINT_ID)
