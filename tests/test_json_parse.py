"""orjson on the hot path gives the answers Python's json gave: the same value or the same refusal
for every body, and the same stored bytes for every value (models.parse_json, compact_json)."""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from collector.app import create_app
from collector.compact_json import compact_json, compact_json_bytes
from collector.errors import InvalidUpload
from collector.keys import KeyLayout
from collector.models import parse_json, parse_json_exactly
from collector.storage import ObjectStore, open_store
from tests.support.settings import local_settings

URL = "/api/upload-user-data"
DEPTH = 64


def outcome(parse: Any, raw: bytes, max_depth: int = DEPTH) -> tuple[str, str]:
    """What a parse answers: the value as exact text (types kept apart), or the refusal's message."""
    try:
        value = parse(raw, max_depth=max_depth)
    except InvalidUpload as refusal:
        return "refused", refusal.message
    return "value", json.dumps(value, ensure_ascii=True) + " " + repr(value)


def nested(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


# Each where orjson's own answer differs from Python's json, or could.
EDGES = [
    pytest.param(b'{"a": NaN}', id="nan"),
    pytest.param(b'{"a": -Infinity}', id="infinity"),
    pytest.param(b'{"a": 1e999}', id="overflowing-float"),
    pytest.param(b'{"a": 1e-999}', id="underflowing-float"),
    pytest.param(b'{"a": 123456789012345678901234567890}', id="int-beyond-64-bits"),
    pytest.param(b'{"a": 18446744073709551616}', id="int-2-to-the-64"),
    pytest.param(b'{"a": -9223372036854775809}', id="int-below-64-bits"),
    pytest.param(b'{"a": 18446744073709551615, "b": -9223372036854775808}', id="ints-at-64-bits"),
    pytest.param(b'{"a": ' + b"9" * 5000 + b"}", id="int-past-python-digit-limit"),
    pytest.param(b'{"a": 1e20, "b": "e+"}', id="exponent-text"),
    pytest.param(b'{"a": "\\ud800"}', id="lone-surrogate"),
    pytest.param(b'{"\\udc00": 1}', id="lone-surrogate-key"),
    pytest.param(b'{"a": "\\ud83d\\ude00"}', id="surrogate-pair"),
    pytest.param(b'{"a": 1, "a": 2}', id="duplicate"),
    pytest.param(b'{"a": {"b": 1, "b": 2}}', id="nested-duplicate"),
    pytest.param(b'{"a": "x:y", "a": "z"}', id="duplicate-with-colon-in-string"),
    pytest.param(b'{"\\u0061": 1, "a": 2}', id="duplicate-spelled-escaped"),
    pytest.param(b'{"a": 1, "a": 2, "b": "\\u003a"}', id="duplicate-hidden-by-escaped-colon"),
    pytest.param(b'{"a": 1, "a": 2, "b": "\\u003A\\u003A"}', id="duplicate-hidden-by-escaped-colons"),
    pytest.param(b'{"a:b": "c:d", "t": "2025-01-01T10:00:00Z"}', id="colons-in-strings"),
    pytest.param(b'{"a" : 1 , "b"\n:\t2}', id="whitespace-around-colons"),
    pytest.param(nested(DEPTH), id="nested-to-the-limit"),
    pytest.param(nested(DEPTH + 1), id="nested-past-the-limit"),
    pytest.param(b"[" * 2000 + b"]" * 2000, id="nested-past-orjson-limit"),
    pytest.param(b"[" * 100_000, id="absurd-nesting"),
    pytest.param(b'\xef\xbb\xbf{"a": 1}', id="utf8-bom"),
    pytest.param('{"a": "é"}'.encode("utf-16"), id="utf16"),
    pytest.param(b'{"a": "\xff"}', id="invalid-utf8"),
    pytest.param(b'{"a": "\xed\xa0\x80"}', id="surrogate-in-utf8"),
    pytest.param(b'{"a": "\x01"}', id="raw-control-character"),
    pytest.param(b'{"a": 1} {"b": 2}', id="two-documents"),
    pytest.param(b'{"a": 01}', id="leading-zero"),
    pytest.param(b'{"a": -0, "b": -0.0, "c": 1E5, "d": 1.5e-7}', id="number-forms"),
    pytest.param(b"null", id="null"),
    pytest.param(b"", id="empty"),
]


@pytest.mark.parametrize("raw", EDGES)
def test_an_edge_gets_the_answer_python_json_gave(raw: bytes) -> None:
    assert outcome(parse_json, raw) == outcome(parse_json_exactly, raw)


def test_nesting_past_orjson_encoders_limit_is_kept_when_the_settings_allow_it() -> None:
    assert outcome(parse_json, nested(300), 400) == outcome(parse_json_exactly, nested(300), 400)
    assert outcome(parse_json, nested(300), 400)[0] == "value"


def test_random_bodies_get_the_answer_python_json_gave() -> None:
    """Differential: fragments of the edges above, joined at random, parsed both ways."""
    pieces = [
        *(b"{", b"}", b"[", b"]", b":", b",", b" ", b"\n", b'"a"', b'"b"', b'"a:"', b'"\\u003a"'),
        *(b"1", b"-0", b"1.5", b"1e5", b"1E+2", b"1e-7", b"1e400", b"01", b"0.1"),
        *(b"12345678901234567890", b"-9223372036854775809", b"99999999999999999999999"),
        *(b"NaN", b"Infinity", b"null", b"true", b'"e+"', b'"\\ud800"', b'"\\ud83d\\ude00"'),
        *(b'"\\"', b'"\\\\"', b"\xef\xbb\xbf", '"é"'.encode(), b'"\xff"', b'"\x01"'),
    ]
    chance = random.Random(18)
    differences = []
    for _ in range(20_000):
        raw = b"".join(chance.choice(pieces) for _ in range(chance.randint(1, 12)))
        if outcome(parse_json, raw) != outcome(parse_json_exactly, raw):
            differences.append(raw)
    assert differences == []


# --- the stored bytes -------------------------------------------------------------------------


def python_compact(value: Any, *, sort_keys: bool = False) -> str:
    """What compact_json wrote before orjson: its contract."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)


def random_float(chance: random.Random) -> float:
    while True:
        if chance.random() < 0.5:
            number = struct.unpack("d", struct.pack("Q", chance.getrandbits(64)))[0]
        else:
            number = chance.choice([1, 1.5, 2.25, 9.999]) * 10.0 ** chance.randint(-30, 30)
        if number == number and abs(number) != float("inf"):
            return number


def test_floats_are_written_as_python_wrote_them() -> None:
    chance = random.Random(18)
    values = [random_float(chance) for _ in range(20_000)] + [1e-7, 1e-5, 9.99e-5, 1e-4, 1e16, -0.0, 5e-324]
    different = [v for v in values if compact_json(v) != python_compact(v)]
    assert different == []


STRINGS = ["", "a", "é", "\U0001f600", "\x00", "\x1f", "\x7f", "\u2028", '"', "\\", "/", "\t\n", "\uffff"]


def test_strings_keys_and_integers_are_written_as_python_wrote_them() -> None:
    value = {
        "".join(reversed(STRINGS)): STRINGS,
        **{f"k{s}": s for s in STRINGS},
        "ints": [0, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30],
        "nested": [{"z": 1, "a": [None, True, False, {}], "é": 2, "e\u0301": 3, "\U0001f600": 4}],
        "tuple": (1, "x"),
    }
    for sort_keys in (False, True):
        assert compact_json(value, sort_keys=sort_keys) == python_compact(value, sort_keys=sort_keys)
        assert compact_json_bytes(value, sort_keys=sort_keys) == python_compact(
            value, sort_keys=sort_keys
        ).encode("utf-8")
    assert compact_json({7: "an int key", "a": 1.5}) == python_compact({7: "an int key", "a": 1.5})


def test_what_json_has_no_value_for_is_refused_as_before() -> None:
    from datetime import UTC, datetime

    class Named(str):
        pass

    for value in (datetime(2026, 1, 1, tzinfo=UTC), {b"bytes": 1}, object()):
        with pytest.raises(TypeError):
            compact_json_bytes(value)
    assert compact_json_bytes({"a": Named("x")}) == b'{"a":"x"}'
    with pytest.raises(UnicodeEncodeError):  # str with an unpaired surrogate: no UTF-8 for it
        compact_json_bytes("\ud800")
    assert compact_json("\ud800") == python_compact("\ud800")


def test_a_non_finite_float_is_written_null_not_the_invalid_nan() -> None:
    """The one difference, documented in compact_json: no upload carries one (refused above)."""
    assert compact_json_bytes([float("nan"), float("inf")]) == b"[null,null]"


# --- over HTTP --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def collector(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[TestClient, ObjectStore, KeyLayout]]:
    settings = local_settings(tmp_path_factory.mktemp("json") / "data")
    with TestClient(create_app(settings)) as client:
        yield client, open_store(settings), KeyLayout(settings.data_prefix)


def test_numbers_orjson_would_change_are_stored_exactly_as_sent(
    collector: tuple[TestClient, ObjectStore, KeyLayout],
) -> None:
    client, store, _ = collector
    data = (
        b'{"big": 123456789012345678901234567890, "low": -9223372036854775809, "small": 1e-7,'
        b' "tiny": 0.00001, "key:colon": "10:00", "e": "e+"}'
    )
    raw = b'{"participantId": "J1", "uploadType": "submission", "submissionData": ' + data + b"}"
    answer = client.post(URL, content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    stored = store.get(answer.json()["filesUploaded"][1]).body
    assert (
        b'"submissionData":{"big":123456789012345678901234567890,"low":-9223372036854775809,'
        b'"small":1e-07,"tiny":1e-05,"key:colon":"10:00","e":"e+"}'
    ) in stored


def test_a_duplicate_hidden_behind_an_escaped_colon_is_refused(
    collector: tuple[TestClient, ObjectStore, KeyLayout],
) -> None:
    client, store, layout = collector
    raw = b'{"participantId": "J2", "participantId": "J3", "note": "\\u003a"}'
    answer = client.post(URL, content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert "twice" in answer.json()["error"]
    assert not [i for i in store.list(layout.participants_root) if "/J2/" in i.key or "/J3/" in i.key]
