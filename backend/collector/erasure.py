"""Erasing a participant who withdrew: every object of theirs, then an audit record.

An erasure deletes everything under ``{prefix}/participants/{id}/`` (status, submissions,
trials, anything else), leaves the tombstone at ``status.json`` (``collector.tombstone``) and
writes one audit record ``{prefix}/audit/erasures/{stamp}_{id}_{8 hex}.json`` holding the ID,
times, who, why, and each erased object's key, size and SHA-256: no participant data.

Order, chosen so that a SIGKILL at any point can be re-run and finishes the job:

1. **Intent.** List the participant's objects, read each and hash it, and write the list to
   ``{prefix}/audit/erasures-in-progress/{id}.json`` *before anything is deleted*. A re-run
   finds the intent, keeps its start time, token and hashes, and adds what is there now. So
   every hash the audit will hold was recorded while the object still existed; an object that
   vanished between listing and reading (someone else deleted it) is recorded with
   ``"sha256": null`` and counted as ``unhashed``.
2. **Tombstone first**, over ``status.json`` (keeping the participant's key hash, so only
   their own browser learns of the erasure). From that moment uploads for the ID answer 410,
   so the participant's browser (which always sends its full local state) cannot put back what
   step 3 removes. Deleting first and marking last would leave a window, as long as the
   erasure takes (or forever, after a crash), in which one upload restores everything.
3. **Delete** every other object, wait until ``settle_seconds`` (the ``ERASURE_SETTLE_SECONDS``
   setting) have passed since the tombstone, then list again. An upload that confirmed the old
   status just before the tombstone may still land an object, but only within the confirmation
   window (``collector.tombstone``): by the end of the wait every such object is there to be
   listed, and none can appear after it. Stragglers are hashed into the intent and deleted, up to
   ``MAX_ROUNDS`` times; what is still there raises ``ErasureIncomplete`` (run it again).
   On a local folder the emptied folders go too. When this returns, nothing of the
   participant's but the tombstone is stored, and nothing will be.
4. **Audit record**, create-if-absent under a name fixed by the intent (start time + token),
   so a re-run after a crash between 4 and 5 finds it written and goes on. If that record
   lacks objects the re-run found, a supplementary record is written beside it.
5. **Remove the intent.** Only then is the erasure done; until then ``collector verify``
   reports it as unfinished.

A re-run when the tombstone is there, no intent is left and nothing else is stored has nothing
to do and writes no second record. Erasing an ID with nothing stored writes the tombstone and
a record of 0 objects: a withdrawal can precede the first upload, and the tombstone stops it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .audit import save_intent, write_record
from .errors import ErasureIncomplete, ErasureRefused
from .keys import KeyLayout, format_timestamp, is_valid_participant_id, parse_timestamp
from .participant_keys import StatusState
from .reading.scan import read_many
from .server_fields import ERASED_AT
from .storage import AlreadyExists, ObjectInfo, ObjectNotFound, ObjectStore, StorageError
from .tombstone import encode_tombstone

AUDIT_KIND = "erasures"
MAX_ROUNDS = 3
MAX_REASON_CHARS = 2000


@dataclass(frozen=True)
class ErasedObject:
    key: str
    size: int | None
    sha256: str | None  # None: it was gone before it could be read


@dataclass(frozen=True)
class ErasurePreview:
    """What an erasure would remove, for the confirmation prompt (nothing is read but the status)."""

    participant_id: str
    objects: list[ObjectInfo]  # everything but a tombstone
    erased_at: str | None  # the tombstone's time when the participant is already erased
    unfinished: bool  # an interrupted erasure waits to be finished


@dataclass
class ErasureResult:
    participant_id: str
    erased_at: str
    objects: list[ErasedObject] = field(default_factory=list)
    audit_keys: list[str] = field(default_factory=list)
    already_erased: bool = False  # nothing was left to do
    resumed: bool = False  # an interrupted erasure was finished


def preview_erasure(store: ObjectStore, layout: KeyLayout, participant_id: str) -> ErasurePreview:
    _check_id(participant_id)
    status_key = layout.status_key(participant_id)
    tombstone = _erased_at(StatusState.of(store.get_or_none(status_key)))
    objects = [
        info
        for info in store.list(layout.participant_dir(participant_id))
        if not (info.key == status_key and tombstone is not None)
    ]
    unfinished = store.get_or_none(layout.erasure_intent_key(participant_id)) is not None
    return ErasurePreview(participant_id, objects, tombstone, unfinished)


def erase_participant(
    store: ObjectStore,
    layout: KeyLayout,
    participant_id: str,
    *,
    who: str,
    reason: str,
    settle_seconds: float,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> ErasureResult:
    """Erase (or finish erasing) one participant; see the module docstring for the order.

    ``settle_seconds`` is ``Settings.erasure_settle_seconds``; one not longer than
    ``tombstone.CONFIRM_WINDOW_SECONDS`` breaks the promise that nothing is stored afterwards, so only
    tests that race nothing against the erasure pass a shorter one.
    """
    _check_id(participant_id)
    reason, who = reason.strip(), who.strip()
    if not reason:
        raise ErasureRefused("give the reason for the erasure (it goes into the audit record)")
    if len(reason) > MAX_REASON_CHARS:
        raise ErasureRefused(f"the reason is longer than {MAX_REASON_CHARS} characters")
    if not who:
        raise ErasureRefused("who asked for the erasure is unknown")

    status_key = layout.status_key(participant_id)
    pending_key = layout.erasure_intent_key(participant_id)
    stored_intent = store.get_or_none(pending_key)
    status = StatusState.of(store.get_or_none(status_key))
    tombstone_at = _erased_at(status)
    present = _present(store, layout, participant_id, status_key, tombstone_at is not None)

    if stored_intent is None and tombstone_at is not None and not present:
        return ErasureResult(
            participant_id,
            tombstone_at,
            audit_keys=_records_of(store, layout, participant_id),
            already_erased=True,
        )

    started = now()
    if stored_intent is not None:
        intent = json.loads(stored_intent.body)
        intent.setdefault("resumedBy", []).append({"who": who, "at": format_timestamp(started)})
    else:
        intent = {
            "participantId": participant_id,
            "startedAt": format_timestamp(started),
            "token": secrets.token_hex(4),
            "who": who,
            "reason": reason,
            "objects": [],
        }
    # 1. Intent: every hash recorded before anything is deleted.
    _hash_into(store, intent, present)
    save_intent(store, pending_key, intent)

    # 2. Tombstone, so no upload can put back what is deleted next. The key hash stays in it.
    erased_at = tombstone_at or intent.get("erasedAt") or intent["startedAt"]
    key_hash = status.key_hash
    tombstone = encode_tombstone(participant_id, _parsed(erased_at), key_hash)
    if tombstone_at is None:
        store.put(status_key, tombstone)
    settled_at = time.monotonic() + settle_seconds
    intent["erasedAt"] = erased_at

    # 3. Delete, let every upload that confirmed before the tombstone land, then look again.
    for _ in range(MAX_ROUNDS):
        for info in present:
            if info.key != status_key:
                store.delete(info.key)
        remaining = settled_at - time.monotonic()
        if remaining > 0:
            sleep(remaining)
        still_tombstone = _erased_at(StatusState.of(store.get_or_none(status_key))) is not None
        present = _present(store, layout, participant_id, status_key, still_tombstone)
        if not present:
            break
        _hash_into(store, intent, present)
        save_intent(store, pending_key, intent)
        if not still_tombstone:  # something replaced it: mark the participant erased again
            store.put(status_key, tombstone)
            present = [info for info in present if info.key != status_key]
    else:
        if present:
            raise ErasureIncomplete(
                f"{len(present)} object(s) of {participant_id} keep appearing; run the erasure again"
            )
    store.prune_empty_folders(layout.participant_dir(participant_id))

    # 4. The audit record, under a name the intent fixes; 5. the intent goes.
    objects = [ErasedObject(o["key"], o.get("size"), o.get("sha256")) for o in intent["objects"]]
    record = _audit_record(intent, objects, now())
    keys = _write_audit(store, layout, participant_id, intent, record)
    store.delete(pending_key)
    return ErasureResult(participant_id, erased_at, objects, keys, resumed=stored_intent is not None)


def _check_id(participant_id: str) -> None:
    if not is_valid_participant_id(participant_id):
        raise ErasureRefused(f"not a participant ID: {participant_id!r}")


def _erased_at(status: StatusState) -> str | None:
    """The tombstone's time ("" if it has none), or None when the status is no tombstone."""
    if not status.erased or status.document is None:
        return None
    erased_at = status.document.get(ERASED_AT)
    return erased_at if isinstance(erased_at, str) else ""


def _present(
    store: ObjectStore, layout: KeyLayout, participant_id: str, status_key: str, tombstoned: bool
) -> list[ObjectInfo]:
    # The folder's trailing slash keeps P1 from also matching P10's objects.
    return [
        info
        for info in store.list(layout.participant_dir(participant_id))
        if not (tombstoned and info.key == status_key)
    ]


def _hash_into(store: ObjectStore, intent: dict[str, Any], objects: list[ObjectInfo]) -> None:
    """Add each object's (key, size, SHA-256) to the intent, unless that exact entry is there."""
    known = {(o["key"], o.get("sha256")) for o in intent["objects"]}
    sizes = {info.key: info.size for info in objects}
    for key, body in read_many(store, sizes, workers=8):
        if isinstance(body, ObjectNotFound):
            entry = {"key": key, "size": sizes[key], "sha256": None}
        elif isinstance(body, StorageError):
            raise body  # nothing of this round was deleted yet: safe to stop here
        else:
            entry = {"key": key, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        if (entry["key"], entry["sha256"]) not in known:
            known.add((entry["key"], entry["sha256"]))
            intent["objects"].append(entry)


def _parsed(moment: str) -> datetime:
    return parse_timestamp(moment) or datetime.now(UTC)


def _audit_record(intent: dict[str, Any], objects: list[ErasedObject], completed: datetime) -> dict[str, Any]:
    unhashed = sum(1 for o in objects if o.sha256 is None)
    record: dict[str, Any] = {
        "participantId": intent["participantId"],
        "action": "erasure",
        "erasedAt": intent["erasedAt"],
        "startedAt": intent["startedAt"],
        "completedAt": format_timestamp(completed),
        "who": intent["who"],
        "reason": intent["reason"],
        "objectCount": len({o.key for o in objects}),
        "objects": [{"key": o.key, "size": o.size, "sha256": o.sha256} for o in objects],
        "unhashed": unhashed,
    }
    if intent.get("resumedBy"):
        record["resumedBy"] = intent["resumedBy"]
    if unhashed:
        record["note"] = "objects with sha256 null were gone before they could be read"
    return record


def _write_audit(
    store: ObjectStore, layout: KeyLayout, participant_id: str, intent: dict[str, Any], record: dict[str, Any]
) -> list[str]:
    started = _parsed(intent["startedAt"])
    key = layout.audit_key(AUDIT_KIND, participant_id, started, intent["token"])
    try:
        write_record(store, key, record)
        return [key]
    except AlreadyExists:
        pass
    # A run before this one wrote the record and died before removing the intent.
    try:
        earlier = json.loads(store.get(key).body)
    except (ObjectNotFound, ValueError):
        earlier = {}
    seen = {(o.get("key"), o.get("sha256")) for o in earlier.get("objects", [])}
    missing = [o for o in record["objects"] if (o["key"], o["sha256"]) not in seen]
    if not missing:
        return [key]
    extra = {**record, "supplements": key, "objects": missing, "objectCount": len(missing)}
    extra_key = layout.audit_key(AUDIT_KIND, participant_id, started, secrets.token_hex(4))
    write_record(store, extra_key, extra)
    return [key, extra_key]


def _records_of(store: ObjectStore, layout: KeyLayout, participant_id: str) -> list[str]:
    """Audit records already written for this participant (names: ``{date}_{time}_{id}_{token}.json``)."""
    found = []
    for info in store.list(layout.audit_dir(AUDIT_KIND)):
        name = info.key.rsplit("/", 1)[-1]
        parts = name.split("_", 2)
        if len(parts) == 3 and parts[2].rsplit("_", 1)[0] == participant_id:
            found.append(info.key)
    return found
