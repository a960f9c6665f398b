"""Compact JSON: how the collector encodes what it stores, hashes and exports.

No spaces and non-ASCII kept as is (UTF-8 in bytes), and the same value always gives the same
text (with ``sort_keys``, whatever the key order). The dashboard and ``python -m json.tool`` show
stored objects formatted.

The text is Python's ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``, byte for
byte, as it always was: names derived from a hash of it (submission and trial file names) must
not change with the encoder. orjson writes it about 5x faster (bench/bench_json.py), and writes
the same text for every JSON value but two kinds, which go to Python's encoder instead:

* floats under 1e-4 (``1e-07``, ``1e-05`` for Python; ``1e-7``, ``0.00001`` for orjson): any text
  with ``e-`` or ``0.0000`` in it, strings included, is encoded again by Python;
* what orjson refuses: integers beyond 64 bits, keys that are not strings, unpaired surrogates
  (Python writes them in a str, which UTF-8 cannot encode), nesting past 254 levels, and, by the
  options below, datetimes, dataclasses and subclasses of str, int, float, dict and list, which
  Python's encoder writes, or refuses, as it always did.

One difference remains, for a value no upload can hold (``models.parse_json`` refuses them) and
the collector never stores: a NaN or infinite float is written ``null``, as JavaScript's
``JSON.stringify`` does, where Python's encoder wrote ``NaN``, which no JSON parser reads.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# Types JSON has no value for go to Python's encoder, which raises as it always did.
_NOT_JSON = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
_NOT_JSON |= orjson.OPT_PASSTHROUGH_SUBCLASS
_SORTED = _NOT_JSON | orjson.OPT_SORT_KEYS


def compact_json_bytes(value: Any, *, sort_keys: bool = False) -> bytes:
    text = _orjson(value, sort_keys)
    return text if text is not None else _python_encoder(value, sort_keys).encode("utf-8")


def compact_json(value: Any, *, sort_keys: bool = False) -> str:
    text = _orjson(value, sort_keys)
    return text.decode("utf-8") if text is not None else _python_encoder(value, sort_keys)


def _orjson(value: Any, sort_keys: bool) -> bytes | None:
    """orjson's text when it is Python's, else None."""
    try:
        text = orjson.dumps(value, option=_SORTED if sort_keys else _NOT_JSON)
    except orjson.JSONEncodeError:
        return None
    return None if b"e-" in text or b"0.0000" in text else text


def _python_encoder(value: Any, sort_keys: bool) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys)
