"""Integrity check: does everything under the prefix fit the layout and the contract?

Reports objects whose key the layout does not make, objects that are not a JSON object,
status, submission or trial files whose ``participantId`` is not their folder's, trials whose
``sessionId``/``trialIndex`` are not the ones in their key, and participants with submissions
but no status.json (trials alone need none: a trial never writes status.json). An erased
participant (a tombstone at status.json) is not a defect; anything else left in their folder,
or an erasure's intent that was never removed, is an incomplete erasure. Audit records under
``{prefix}/audit/`` are counted, not defects. On the local folder, temporary files that
interrupted writes left behind are reported too: each holds disk space, and a disk full of them
refuses uploads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import VerifyFailed
from .keys import KeyLayout
from .reading.scan import DEFAULT_READERS, decode_object, list_bucket, read_many
from .storage import ObjectNotFound, ObjectStore, StorageError
from .tombstone import is_tombstone

STRAY_KEY = "key does not fit the layout"
NOT_JSON = "not a valid JSON object"
WRONG_PARTICIPANT = "participantId does not match its folder"
NO_STATUS = "submissions but no status.json"
INCOMPLETE_ERASURE = "incomplete erasure"
WRONG_TRIAL = "sessionId/trialIndex do not match the trial's key"
LEFTOVER_TEMPORARY = "temporary file left by an interrupted write"
DEFECT_KINDS = (
    STRAY_KEY,
    NOT_JSON,
    WRONG_PARTICIPANT,
    WRONG_TRIAL,
    NO_STATUS,
    INCOMPLETE_ERASURE,
    LEFTOVER_TEMPORARY,
)


@dataclass(frozen=True)
class Defect:
    kind: str
    key: str
    detail: str


@dataclass
class VerifyReport:
    objects: int = 0
    participants: int = 0
    statuses: int = 0
    submissions: int = 0
    trials: int = 0
    erased: int = 0  # participants whose status.json is an erasure tombstone
    audit_records: int = 0
    defects: list[Defect] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.defects

    def count(self, kind: str) -> int:
        return sum(1 for defect in self.defects if defect.kind == kind)


def verify_bucket(
    store: ObjectStore,
    layout: KeyLayout,
    *,
    workers: int = DEFAULT_READERS,
    on_object: Callable[[], None] | None = None,
) -> VerifyReport:
    """Walk every object under the layout's prefix; ``on_object`` is called once per object read."""
    try:
        listing = list_bucket(store, layout)
    except StorageError as exc:
        raise VerifyFailed(f"cannot list the bucket: {exc}") from exc
    report = VerifyReport(participants=len(listing.participants))
    report.objects = len(listing.stray) + sum(
        len(e.keys) + len(e.trials) for e in listing.participants.values()
    )
    intents = layout.erasure_intents_dir
    strays_by_participant: dict[str, list[str]] = {}
    for info in listing.audit:
        if info.key.startswith(intents):
            report.defects.append(Defect(INCOMPLETE_ERASURE, info.key, "erasure started, not finished"))
        else:
            report.audit_records += 1
    for info in listing.stray:
        if info.key in layout.server_keys:  # the collector's own objects, not participant data
            continue
        report.defects.append(Defect(STRAY_KEY, info.key, f"{info.size} bytes"))
        folder = info.key[len(layout.participants_root) :].split("/", 1)[0]
        if info.key.startswith(layout.participants_root):
            strays_by_participant.setdefault(folder, []).append(info.key)
    owners: dict[str, str] = {}
    for entry in listing.participants.values():
        if entry.status is None and entry.submissions:
            first = entry.submissions[0].key
            report.defects.append(
                Defect(NO_STATUS, first, f"participant {entry.participant_id}: {len(entry.submissions)}")
            )
        elif entry.status is not None:
            report.statuses += 1
        report.submissions += len(entry.submissions)
        report.trials += len(entry.trials)
        owners.update(dict.fromkeys(entry.keys, entry.participant_id))
        owners.update({info.key: entry.participant_id for info in entry.trials})

    for key, body in read_many(store, owners, workers=workers):
        if on_object:
            on_object()
        if isinstance(body, ObjectNotFound):
            continue  # deleted since listing: nothing left to check
        if isinstance(body, StorageError):
            raise VerifyFailed(f"cannot read {key}: {body}")
        try:
            document = decode_object(body)
        except ValueError as exc:
            report.defects.append(Defect(NOT_JSON, key, str(exc)))
            continue
        claimed = document.get("participantId")
        if claimed != owners[key]:
            report.defects.append(Defect(WRONG_PARTICIPANT, key, f"participantId is {claimed!r}"))
        elif is_tombstone(document) and key == layout.status_key(owners[key]):
            report.erased += 1
            report.statuses -= 1
            entry = listing.participants[owners[key]]
            left = [other for other in entry.keys if other != key] + [info.key for info in entry.trials]
            left += strays_by_participant.get(owners[key], [])
            for leftover in left:
                report.defects.append(
                    Defect(INCOMPLETE_ERASURE, leftover, f"participant {owners[key]} was erased")
                )
        parsed = layout.parse(key)
        if parsed is not None and parsed.kind == "trial":
            session, index = document.get("sessionId"), document.get("trialIndex")
            # type() and not ==: JSON true or 3.0 must not pass for the index 1 or 3.
            if session != parsed.session_id or type(index) is not int or index != parsed.trial_index:
                report.defects.append(
                    Defect(WRONG_TRIAL, key, f"sessionId is {session!r}, trialIndex is {index!r}")
                )
    try:
        for info in store.temporaries():
            report.defects.append(Defect(LEFTOVER_TEMPORARY, info.key, f"{info.size} bytes"))
    except OSError as exc:
        raise VerifyFailed(f"cannot look for temporary files: {exc}") from exc
    report.defects.sort(key=lambda d: (DEFECT_KINDS.index(d.kind), d.key))
    return report
