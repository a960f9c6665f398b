"""Who may join a registered study: its status (closed: nobody new) and its participant cap.

Only a *new* participant is ever refused, so that nobody already in a study loses data when it
closes or fills: a participant is new when their folder in the study holds nothing (no
``status.json``, no submission, no trial).

The cap counts admitted participants in ``{DATA_PREFIX}-studies/{id}.admissions.json`` (a sorted
list of IDs, outside the study's prefix so that the study's own tools never meet it), written by
compare-and-swap: two participants joining at once are counted one after the other, never both
into the last place, and the same participant twice is counted once. It is kept only for studies
with a cap, and seeded from a listing of the study when the cap is set (``seed_admissions``), so
participants who joined before the cap count too. An open study without a cap costs no request.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

from ..errors import StudyClosed, StudyFull
from ..keys import KeyLayout
from ..pipeline.state import has_objects
from ..storage import ObjectStore, PreconditionFailed, StorageError
from .registry import Study

MAX_ADMISSION_ATTEMPTS = 50
# Participants this process already knows to be in a study (so a closed study's trials do not
# each cost a listing); forgotten wholesale beyond this many, which only costs a listing again.
KNOWN_PARTICIPANTS_LIMIT = 20_000


def admissions_key(data_prefix: str, study_id: str) -> str:
    return KeyLayout(data_prefix).study_admissions_key(study_id)


def participant_exists(store: ObjectStore, study: Study, participant_id: str) -> bool:
    """Whether anything is stored for the participant in the study (one listing request)."""
    return has_objects(store, study.layout, participant_id)


def listed_participants(store: ObjectStore, study: Study) -> set[str]:
    """Every participant with an object in the study (a full listing: for seeding only)."""
    participants: set[str] = set()
    for info in store.list(study.layout.participants_root):
        parsed = info.key[len(study.layout.participants_root) :].split("/", 1)[0]
        participants.add(parsed)
    return participants


def _encode(participants: set[str]) -> bytes:
    return (json.dumps({"participants": sorted(participants)}, separators=(",", ":")) + "\n").encode()


def _decode(body: bytes) -> set[str]:
    try:
        value = json.loads(body)
        return {p for p in value["participants"] if isinstance(p, str)}
    except (ValueError, KeyError, TypeError) as exc:
        raise StorageError(f"the admissions record is damaged: {exc}") from exc


def seed_admissions(store: ObjectStore, data_prefix: str, study: Study) -> int:
    """Write the admissions record from a listing of the study; how many participants it holds."""
    participants = listed_participants(store, study)
    store.put(admissions_key(data_prefix, study.id), _encode(participants))
    return len(participants)


def read_admissions(store: ObjectStore, data_prefix: str, study: Study) -> set[str] | None:
    stored = store.get_or_none(admissions_key(data_prefix, study.id))
    return _decode(stored.body) if stored is not None else None


def admit_to_capped_study(
    store: ObjectStore, data_prefix: str, study: Study, participant_id: str, *, exists: bool | None = None
) -> None:
    """Count the participant in, or raise ``StudyFull`` when the cap is reached without them.

    A participant with data in the study is never refused, counted or not (``exists``: already
    known; None: looked up only when the cap is reached).
    """
    assert study.max_participants is not None
    key = admissions_key(data_prefix, study.id)
    for _ in range(MAX_ADMISSION_ATTEMPTS):
        stored = store.get_or_none(key)
        admitted = _decode(stored.body) if stored is not None else listed_participants(store, study)
        if participant_id in admitted:
            if stored is None:  # the record went missing: write the listing back
                _put(store, key, admitted, None)
            return
        if len(admitted) >= study.max_participants:
            if exists is None:
                exists = participant_exists(store, study, participant_id)
            if exists:
                return
            raise StudyFull(f"study {study.id} has reached its {study.max_participants} participants")
        admitted.add(participant_id)
        try:
            _put(store, key, admitted, stored.etag if stored is not None else None)
        except PreconditionFailed:
            continue
        return
    raise StorageError(f"the admissions record of study {study.id} is too contended")


def _put(store: ObjectStore, key: str, admitted: set[str], etag: str | None) -> None:
    if etag is None:
        store.put(key, _encode(admitted), if_absent=True)
    else:
        store.put(key, _encode(admitted), if_match=etag)


@dataclass
class StudyGate:
    """Admits participants into one registered study; remembers who is known to be in it."""

    store: ObjectStore
    data_prefix: str
    _known: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _remember(self, participant_id: str) -> None:
        with self._lock:
            if len(self._known) >= KNOWN_PARTICIPANTS_LIMIT:
                self._known.clear()
            self._known.add(participant_id)

    def admit(self, study: Study, participant_id: str, *, exists: bool | None = None) -> None:
        """Refuse a new participant of a closed or full study (``StudyClosed``, ``StudyFull``).

        Blocking: storage requests only when the study is closed or capped and this process has
        not seen the participant in it yet. ``exists``: whether the participant has data in the
        study, when the upload pipeline already knows (its "new participant?", asked once); None:
        one listing here, only if it matters.
        """
        if study.status == "open" and study.max_participants is None:
            return
        if participant_id in self._known or exists:
            return
        if study.status == "closed":
            if exists is None:
                exists = participant_exists(self.store, study, participant_id)
            if not exists:
                raise StudyClosed(f"study {study.id} is closed to new participants")
        if study.max_participants is not None:
            admit_to_capped_study(self.store, self.data_prefix, study, participant_id, exists=exists)
        self._remember(participant_id)
