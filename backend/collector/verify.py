"""Integrity check: does everything under the prefix fit the layout and the contract?

Reports objects whose key the layout does not make, objects that are not a JSON object,
submission (or status) files whose ``participantId`` is not their folder's, and participants
with submissions but no status.json, and (local folder only) temporary files that interrupted
writes left behind: each holds disk space, and a full disk of them refuses uploads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .keys import KeyLayout
from .reading.scan import DEFAULT_READERS, decode_object, list_bucket, read_many
from .storage import ObjectNotFound, ObjectStore, StorageError

STRAY_KEY = "key does not fit the layout"
NOT_JSON = "not a valid JSON object"
WRONG_PARTICIPANT = "participantId does not match its folder"
NO_STATUS = "submissions but no status.json"
LEFTOVER_TEMPORARY = "temporary file left by an interrupted write"
DEFECT_KINDS = (STRAY_KEY, NOT_JSON, WRONG_PARTICIPANT, NO_STATUS, LEFTOVER_TEMPORARY)


class VerifyFailed(Exception):
    """The bucket could not be walked (storage failed)."""


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
    report.objects = len(listing.stray) + sum(len(e.keys) for e in listing.participants.values())
    for info in listing.stray:
        report.defects.append(Defect(STRAY_KEY, info.key, f"{info.size} bytes"))
    owners: dict[str, str] = {}
    for entry in listing.participants.values():
        if entry.status is None:
            first = entry.submissions[0].key
            report.defects.append(
                Defect(NO_STATUS, first, f"participant {entry.participant_id}: {len(entry.submissions)}")
            )
        else:
            report.statuses += 1
        report.submissions += len(entry.submissions)
        owners.update(dict.fromkeys(entry.keys, entry.participant_id))

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
    try:
        for info in store.temporaries():
            report.defects.append(Defect(LEFTOVER_TEMPORARY, info.key, f"{info.size} bytes"))
    except OSError as exc:
        raise VerifyFailed(f"cannot look for temporary files: {exc}") from exc
    report.defects.sort(key=lambda d: (DEFECT_KINDS.index(d.kind), d.key))
    return report
