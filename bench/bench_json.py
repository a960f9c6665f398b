"""JSON on the upload path: Python's json, orjson and msgspec, parsing bodies and encoding what is stored.

For each payload, microseconds per call (best of several rounds, one process, in the same run)
and the ratio to Python's json:

* ``parse``: ``models.parse_json_exactly`` (Python's json with the duplicate-key, NaN and
  surrogate checks: the reference), ``models.parse_json`` (orjson, with the checks that send a
  body whose answer could differ to the reference), the same scheme with msgspec (decode,
  re-encode, count ``:``; msgspec keeps big integers, so no ``e+`` check), and what the
  collector runs (``request_body.parser_for``: orjson's, or Python's for a body of long
  values). The bare decoders are shown too, without any check;
* ``encode``: the compact text of the decoded value, unsorted (what is stored) and sorted (the
  hash that names a submission): Python's json, ``compact_json_bytes`` (orjson, with its check
  for small floats), and msgspec with the check its own float text would need (any digit
  followed by ``e``: it writes ``1e16`` where Python writes ``1e+16``).

Payloads: a ~3 KB submission (bench_collector.upload_document, what bench_ingest.py sends), a
4 MB submission of ~10,000 jsPsych-like trial objects, and a 4 MB one of 250 long strings.

Usage::

    .venv/bin/python bench/bench_json.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR.parent / "backend")]

from bench_collector import upload_document  # noqa: E402

from collector.compact_json import compact_json_bytes  # noqa: E402
from collector.models import _depth, parse_json, parse_json_exactly  # noqa: E402
from collector.web.request_body import estimate_json_values, parser_for  # noqa: E402

DEPTH = 64


def trials_body(size: int) -> bytes:
    """A submission of jsPsych-like trials up to ``size`` bytes."""
    trial = {
        "trial_type": "html-keyboard-response",
        "trial_index": 0,
        "time_elapsed": 183746,
        "internal_node_id": "0.0-12.0-3.2",
        "rt": 834.2000000001863,
        "stimulus": "<p>Which volcano erupted first?</p>",
        "response": "f",
        "correct": True,
        "extra": None,
        "tags": ["practice", "block-2"],
    }
    per_trial = len(json.dumps(trial)) + 2
    trials = [{**trial, "trial_index": i, "time_elapsed": 183746 + 900 * i} for i in range(size // per_trial)]
    document = upload_document("Pbench4mb", "submission", "2025-11-19T14:30:44.000Z")
    document["submissionData"] = {"trials": trials}
    return json.dumps(document).encode()


def long_strings_body(count: int = 250, length: int = 16_000) -> bytes:
    document = upload_document("Pbenchlong", "submission", "2025-11-19T14:30:44.000Z")
    document["submissionData"] = {f"s{i}": "volcano " * (length // 8) for i in range(count)}
    return json.dumps(document).encode()


def msgspec_parse(raw: bytes, *, max_depth: int) -> Any:
    """The scheme of models.parse_json with msgspec in orjson's place."""
    try:
        value = msgspec.json.decode(raw)
        compact = msgspec.json.encode(value)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return parse_json_exactly(raw, max_depth=max_depth)
    if compact.count(b":") != raw.count(b":") or b"\\u003" in raw:
        return parse_json_exactly(raw, max_depth=max_depth)
    if raw.count(b"{") + raw.count(b"[") > max_depth and _depth(value) > max_depth:
        raise ValueError("too deep")
    return value


def python_compact(value: Any, sort_keys: bool = False) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=sort_keys).encode()


_MSGSPEC_OWN_FLOAT = re.compile(rb"[0-9]e|0\.0000")


def msgspec_compact(value: Any, sort_keys: bool = False) -> bytes:
    text = msgspec.json.encode(value, order="sorted" if sort_keys else None)
    if _MSGSPEC_OWN_FLOAT.search(text):
        return python_compact(value, sort_keys)
    return text


def per_call_us(call: Callable[[], Any], rounds: int, budget: float = 0.25) -> float:
    """Best of ``rounds`` rounds, each of as many calls as fit in ``budget`` seconds."""
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-7)
    number = max(1, int(budget / once))
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def rows_for(raw: bytes) -> list[list[tuple[str, Callable[[], Any]]]]:
    """The calls to time for one payload, in groups whose first call is the reference."""
    value = parse_json_exactly(raw, max_depth=DEPTH)
    collector_parse = parser_for(raw, estimate_json_values(raw))
    chosen = "orjson" if collector_parse is parse_json else "Python's"
    for candidate in (parse_json, msgspec_parse, collector_parse):
        assert candidate(raw, max_depth=DEPTH) == value
    assert compact_json_bytes(value) == python_compact(value)
    groups = [
        [
            ("parse: Python's json + checks", lambda: parse_json_exactly(raw, max_depth=DEPTH)),
            ("parse: orjson + checks", lambda: parse_json(raw, max_depth=DEPTH)),
            ("parse: msgspec + checks", lambda: msgspec_parse(raw, max_depth=DEPTH)),
            (f"parse: collector ({chosen})", lambda: collector_parse(raw, max_depth=DEPTH)),
            ("parse: orjson.loads alone", lambda: orjson.loads(raw)),
            ("parse: msgspec decode alone", lambda: msgspec.json.decode(raw)),
        ]
    ]
    for sort_keys, label in ((False, "encode"), (True, "encode sorted")):
        groups.append(
            [
                (f"{label}: Python's json", lambda s=sort_keys: python_compact(value, s)),
                (
                    f"{label}: orjson + check (collector)",
                    lambda s=sort_keys: compact_json_bytes(value, sort_keys=s),
                ),
                (f"{label}: msgspec + check", lambda s=sort_keys: msgspec_compact(value, s)),
            ]
        )
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    small = upload_document("Pbench3kb", "submission", "2025-11-19T14:30:44.000Z")
    payloads = {
        "3 KB submission": json.dumps(small).encode(),
        "4 MB of trials": trials_body(4 * 1024 * 1024),
        "4 MB of long strings": long_strings_body(),
    }
    print(
        f"JSON on the upload path: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
        f"us per call, best of {args.rounds} rounds; x = Python's json / this (higher is faster)\n"
    )
    print(f"{'payload':<22} {'step':<40} {'us':>10} {'x':>6}")
    for name, raw in payloads.items():
        label = name
        for group in rows_for(raw):
            reference = None
            for step, call in group:
                us = per_call_us(call, args.rounds)
                reference = reference or us
                print(f"{label:<22} {step:<40} {us:>10,.1f} {reference / us:>5.1f}x", flush=True)
                label = ""
        print()


if __name__ == "__main__":
    main()
