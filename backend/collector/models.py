"""Request parsing and validation: raw bytes in, a validated ``Upload`` out, or an ``InvalidUpload``.

Validation is by hand rather than by a pydantic model because the stored document must be the
client's JSON exactly as sent (types, unknown fields, order), and every refusal needs a message
a person understands. ``UploadRequest`` documents the same contract in the OpenAPI description.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from .errors import InvalidUpload, UnprocessableUpload
from .keys import (
    format_timestamp,
    is_valid_participant_id,
    parse_timestamp,
)
from .participant_keys import HASH_FIELD, KEY_FIELD, is_valid_participant_key
from .server_fields import without_server_fields

UPLOAD_TYPES = ("submission", "status")
# Status fields the restore endpoint never returns: survey answers stay in the bucket.
PRIVATE_STATUS_FIELDS = ("participantResponses", "submissionData", HASH_FIELD)


@dataclass(frozen=True)
class Upload:
    """One validated upload: the client's document plus what the server derived from it."""

    document: dict[str, Any]
    participant_id: str
    upload_type: Literal["submission", "status"]
    moment: datetime  # the upload's timestamp in UTC, or server time when absent/unparseable
    upload_id: str | None
    # Taken out of ``document`` at parse time, so it can never be stored or logged in clear.
    participant_key: str | None = None

    @property
    def timestamp_text(self) -> str:
        """The timestamp to answer with: the client's own text, else the server time used."""
        return self.document.get("timestamp") or format_timestamp(self.moment)


def parse_json(raw: bytes, *, max_depth: int) -> Any:
    """Decode a JSON body, refusing invalid UTF-8/JSON, duplicate keys and absurd nesting.

    Also refused, because they cannot be stored as valid JSON in UTF-8: NaN and Infinity
    (Python's json accepts them, JavaScript's JSON.parse does not), numbers that overflow to
    infinity, and unpaired UTF-16 surrogates (``"\\ud800"``), which UTF-8 cannot encode.

    orjson decodes (with these checks, 2.5x faster than Python's json on a 3 KB submission:
    bench/bench_json.py), and Python's json answers whenever orjson's answer could differ, so
    every body gets the value or the refusal it always got (tests/test_json_parse.py compares):

    * every body orjson refuses (invalid JSON, NaN, lone surrogates, a UTF-8 BOM, nesting past
      its 1,024 levels, ...) is parsed again by ``parse_json_exactly``, which says why;
    * orjson keeps the last of duplicate keys, silently; the value re-encoded compactly then has
      fewer ``:`` than the body (one per key, and those inside strings, which re-encoding keeps),
      so a count tells. A ``\\u003a`` escape (``:`` written escaped) could hide a duplicate from
      the count: such bodies take the exact parse;
    * orjson decodes an integer beyond 64 bits as a float, which re-encodes with an exponent
      (``e+``; any such float is at least 9e18): such bodies take the exact parse too.
    """
    try:
        value = orjson.loads(raw)
        compact = orjson.dumps(value)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # the encoder's: nesting past 254 levels
        return parse_json_exactly(raw, max_depth=max_depth)
    # One-byte searches (memchr) first: many times faster than the two-byte ones they spare.
    if (
        compact.count(b":") != raw.count(b":")
        or (b"\\" in raw and b"\\u003" in raw)
        or (b"+" in compact and b"e+" in compact)
    ):
        return parse_json_exactly(raw, max_depth=max_depth)
    # Nesting cannot exceed the number of brackets: no walk needed for most small uploads.
    if raw.count(b"{") + raw.count(b"[") > max_depth and _depth(value) > max_depth:
        raise InvalidUpload(f"the JSON is nested deeper than {max_depth} levels")
    return value


def parse_json_exactly(raw: bytes, *, max_depth: int) -> Any:
    """``parse_json`` with Python's json alone: the reference answer for every body, and the
    refusal's message for every body refused."""
    try:
        value = json.loads(
            raw,
            object_pairs_hook=_refuse_duplicate_keys,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except _DuplicateKey as exc:
        raise InvalidUpload(f"the JSON object has the key {exc.args[0]!r} twice") from None
    except _NotJson as exc:
        raise InvalidUpload(str(exc)) from None
    except RecursionError:
        raise InvalidUpload(f"the JSON is nested deeper than {max_depth} levels") from None
    except ValueError as exc:  # invalid UTF-8 or JSON, or an integer too long to convert
        raise InvalidUpload(f"the body is not valid JSON: {exc}") from None
    # Only a \uD800-\uDFFF escape can produce a surrogate (raw bytes were strict UTF-8), so
    # the per-string check runs only for bodies that contain one.
    encodable = True
    if _SURROGATE_ESCAPE.search(raw) is not None:
        depth, encodable = _inspect(value, check_strings=True)
    elif raw.count(b"{") + raw.count(b"[") <= max_depth:
        # Nesting cannot exceed the number of brackets: no walk needed (most small uploads).
        depth = 0
    else:
        depth = _depth(value)
    if depth > max_depth:
        raise InvalidUpload(f"the JSON is nested deeper than {max_depth} levels")
    if not encodable:
        raise InvalidUpload("the JSON has an unpaired UTF-16 surrogate (\\ud800-\\udfff); send valid Unicode")
    return value


@dataclass(frozen=True)
class Envelope:
    """The fields every upload type shares (status, submission, trial), checked one way."""

    participant_id: str
    timestamp: str | None
    upload_id: str | None
    participant_key: str | None


def parse_envelope(value: Any) -> Envelope:
    """Check an upload's shared fields; raises ``InvalidUpload`` (400) or ``UnprocessableUpload`` (422)."""
    if not isinstance(value, dict):
        raise InvalidUpload("the body must be a JSON object")
    participant_id = value.get("participantId")
    if participant_id is None:
        raise InvalidUpload("participantId is required")
    if not is_valid_participant_id(participant_id):
        raise InvalidUpload(
            f"participantId must be 1 to 64 letters, digits, '_' or '-' (got {preview(participant_id)})"
        )
    timestamp = value.get("timestamp")
    if timestamp is not None and not isinstance(timestamp, str):
        raise UnprocessableUpload("timestamp must be an ISO-8601 string")
    upload_id = value.get("uploadId")
    if upload_id is not None and (not isinstance(upload_id, str) or not 0 < len(upload_id) <= 128):
        raise UnprocessableUpload("uploadId must be a string of 1 to 128 characters")
    key = value.get(KEY_FIELD)
    if key is not None and not is_valid_participant_key(key):
        raise UnprocessableUpload("participantKey must be 16 to 256 letters, digits, '_' or '-'")
    return Envelope(participant_id, timestamp, upload_id, key)


def parse_upload(value: Any, *, received_at: datetime, clock_skew: timedelta) -> Upload:
    """Check one upload against the contract (docs/api.md).

    A ``timestamp`` more than ``clock_skew`` ahead of ``received_at`` is kept in the document
    but not used: the upload is ordered and named by ``received_at`` instead.
    """
    envelope = parse_envelope(value)
    upload_type = value.get("uploadType")
    if upload_type is None:
        upload_type = "submission" if "submissionData" in value else "status"
    if upload_type not in UPLOAD_TYPES:
        raise UnprocessableUpload(f"uploadType must be 'submission' or 'status' (got {preview(upload_type)})")
    if upload_type == "submission" and not isinstance(value.get("submissionData"), dict):
        raise UnprocessableUpload("a submission needs submissionData, a JSON object")
    # The key is a secret and the server fields are the collector's (server_fields): neither is
    # stored from the client.
    document = without_server_fields({k: v for k, v in value.items() if k != KEY_FIELD})
    moment = parse_timestamp(envelope.timestamp)
    if moment is None or moment > received_at + clock_skew:
        moment = received_at  # a clock years ahead must not freeze the status or name files
    return Upload(
        document=document,
        participant_id=envelope.participant_id,
        upload_type=upload_type,
        moment=moment,
        upload_id=envelope.upload_id,
        participant_key=envelope.participant_key,
    )


def parse_batch(value: Any, *, max_items: int) -> list[Any]:
    """The list of uploads in a batch body ``{"uploads": [...]}``; items are validated one by one."""
    if not isinstance(value, dict) or not isinstance(value.get("uploads"), list):
        raise InvalidUpload('a batch body must be {"uploads": [ ... ]}')
    items = value["uploads"]
    if not items:
        raise UnprocessableUpload("a batch needs at least one upload")
    if len(items) > max_items:
        raise UnprocessableUpload(f"a batch holds at most {max_items} uploads, not {len(items)}")
    return items


class _DuplicateKey(ValueError):
    pass


class _NotJson(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON; send null or a string instead")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NotJson(f"the number {text[:20]} is too large to store")
    return number


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _inspect(value: Any, *, check_strings: bool) -> tuple[int, bool]:
    """Nesting depth of a decoded JSON value, and whether all its strings encode as UTF-8."""
    if not isinstance(value, dict | list):
        return 0, not check_strings or not isinstance(value, str) or _utf8_encodable(value)
    deepest, encodable, stack = 0, True, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            if check_strings:
                encodable = encodable and all(_utf8_encodable(key) for key in item)
            item = item.values()
        for child in item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif check_strings and isinstance(child, str) and not _utf8_encodable(child):
                encodable = False
    return deepest, encodable


_CONTAINERS = (dict, list)


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, level by level (half the cost of ``_inspect``).

    The decoder makes exactly ``dict`` and ``list`` containers, so ``type() in`` is enough.
    """
    depth = 0
    level = [value] if type(value) in _CONTAINERS else []
    while level:
        depth += 1
        below: list[Any] = []
        for item in level:
            children = item.values() if type(item) is dict else item
            below += [child for child in children if type(child) in _CONTAINERS]
        level = below
    return depth


def _utf8_encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def preview(value: Any) -> str:
    """A short JSON rendering of a refused value, for an error message."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 40 else text[:37] + "..."


# --- OpenAPI description of the same contract -------------------------------------------------
#
# These models only describe (parsing above is by hand); their JSON schemas must say exactly what
# ``parse_upload`` accepts, because clients are generated from them and fuzzers test against them.

_ID_PATTERN = "^[A-Za-z0-9_-]+$"  # with the lengths below, PARTICIPANT_ID_PATTERN
_KEY_PATTERN = "^[A-Za-z0-9_-]+$"


class UploadRequest(BaseModel):
    """One participant upload (docs/api.md §3). Unknown fields are accepted and stored as sent."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra=lambda schema: schema.update(_UPLOAD_RULES),
    )

    participantId: str = Field(min_length=1, max_length=64, pattern=_ID_PATTERN, examples=["P001ABC"])
    uploadType: Literal["submission", "status", "trial"] | None = Field(
        default=None,
        description="When absent or null: 'submission' if submissionData is present, else 'status'.",
    )
    timestamp: str | None = Field(
        default=None,
        examples=["2025-11-19T14:30:45.123Z"],
        description="ISO-8601; orders status.json and names submission files (docs/trust-model.md §3).",
    )
    uploadId: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="Client-generated id; a retry with the same id stores nothing new.",
    )
    participantKey: str | None = Field(
        default=None,
        min_length=16,
        max_length=256,
        pattern=_KEY_PATTERN,
        description="The participant's key (docs/trust-model.md §2); never stored in clear.",
    )
    submissionData: Any = Field(
        default=None,
        description="The study's full data dump: a JSON object, required for submissions.",
    )
    sessionId: Any = Field(
        default=None,
        description="Trials: one run of the experiment, 1 to 64 of [A-Za-z0-9_-].",
    )
    trialIndex: Any = Field(default=None, description="Trials: the trial's index, 0 to 100000.")
    trialData: Any = Field(default=None, description="Trials: the trial's data, a JSON object.")


_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
# What parse_upload checks beyond each field on its own: which fields each upload type needs.
_UPLOAD_RULES: dict[str, Any] = {
    "allOf": [
        {  # a submission, named or inferred from submissionData being present, needs an object
            "if": {
                "anyOf": [
                    {"properties": {"uploadType": {"const": "submission"}}, "required": ["uploadType"]},
                    {
                        "properties": {"uploadType": {"type": "null"}},
                        "required": ["submissionData"],
                    },
                    {"not": {"required": ["uploadType"]}, "required": ["submissionData"]},
                ]
            },
            "then": {"required": ["submissionData"], "properties": {"submissionData": _OBJECT}},
        },
        {
            "if": {"properties": {"uploadType": {"const": "trial"}}, "required": ["uploadType"]},
            "then": {
                "required": ["sessionId", "trialIndex", "trialData"],
                "properties": {
                    "sessionId": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": _ID_PATTERN},
                    "trialIndex": {"type": "integer", "minimum": 0, "maximum": 100000},
                    "trialData": _OBJECT,
                },
            },
        },
    ]
}


class RestoreRequest(BaseModel):
    """Read back one participant's status: only with their key (docs/api.md)."""

    participantId: str = Field(min_length=1, max_length=64, pattern=_ID_PATTERN, examples=["P001ABC"])
    participantKey: str | None = Field(default=None, min_length=16, max_length=256, pattern=_KEY_PATTERN)


class BatchRequest(BaseModel):
    """Several uploads, each stored and answered on its own (docs/api.md §4)."""

    # Items are any JSON on purpose: each is validated on its own and an invalid one is answered
    # in its result (httpStatus 400/422), so it does not make the batch itself invalid.
    uploads: list[Any] = Field(
        min_length=1,
        max_length=50,
        description="Each item is a body of POST /api/upload-user-data (UploadRequest), answered "
        "on its own. At most MAX_BATCH_ITEMS (default 50).",
    )


class UploadResponse(BaseModel):
    status: Literal["success"]
    participantId: str
    timestamp: str
    filesUploaded: list[str]
    statusSuperseded: bool | None = Field(
        default=None, description="true: a newer status.json was already stored; this one was not written."
    )
    keyVerified: bool | None = Field(
        default=None, description="false: stored, but the participant key was missing or wrong."
    )


class ErrorResponse(BaseModel):
    status: Literal["error"]
    error: str
    reason: Literal["participant-key", "erased"] | None = Field(
        default=None, description="Present on 403 (participant-key) and 410 (erased): docs/api.md §3.4."
    )
