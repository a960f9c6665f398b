"""Compact JSON, the one encoding of what the collector stores and hashes: its bytes are a contract."""

from __future__ import annotations

from datetime import UTC, datetime

from collector.compact_json import compact_json, compact_json_bytes
from collector.tombstone import encode_tombstone


def test_compact_json_has_no_spaces_and_keeps_non_ascii_as_utf8() -> None:
    value = {"b": [1, 2.5, None, True], "a": "Zoë ✓", "c": {"d": ""}}
    assert compact_json(value) == '{"b":[1,2.5,null,true],"a":"Zoë ✓","c":{"d":""}}'
    assert compact_json(value, sort_keys=True) == '{"a":"Zoë ✓","b":[1,2.5,null,true],"c":{"d":""}}'
    assert compact_json_bytes(value) == compact_json(value).encode("utf-8")


def test_a_tombstone_keeps_its_stored_bytes() -> None:
    erased_at = datetime(2026, 3, 1, 10, 0, 0, 123000, tzinfo=UTC)
    assert encode_tombstone("P001ABC", erased_at, "ab" * 32) == (
        b'{"participantId":"P001ABC","erased":true,"erasedAt":"2026-03-01T10:00:00.123Z",'
        b'"participantKeyHash":"' + b"ab" * 32 + b'"}'
    )
