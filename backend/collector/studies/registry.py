"""The study registry: one JSON object in the bucket that every worker and instance reads.

A registered study keeps its data under its own prefix, ``{DATA_PREFIX}-studies/{id}``, with the
layout of the default study inside it (docs/studies.md). The registry itself is
``{DATA_PREFIX}-studies/registry.json``; a study ID has no ``.``, so no study folder can meet it.
Nothing of either lies under ``{DATA_PREFIX}/``: the tools and the dashboard on the default study
never see them.

Writes are compare-and-swap on the object's ETag (create-if-absent for the first study), so two
people changing studies at once never lose each other's change; each change is also recorded
under the study's own ``audit/studies/`` (``collector.audit``). Readers on the upload path go
through ``RegistryCache``, which re-reads the object at most every few seconds.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from ..audit import write_record
from ..errors import InvalidStudy, StudyExists, StudyNotRegistered
from ..keys import KeyLayout, format_timestamp, is_valid_participant_id
from ..settings import normalised_origin
from ..storage import ObjectStore, PreconditionFailed

StudyStatus = Literal["open", "closed", "archived"]
STUDY_STATUSES: tuple[str, ...] = get_args(StudyStatus)
AUDIT_KIND = "studies"
MAX_TITLE_CHARS = 200
MAX_ORIGINS = 50
MAX_MILESTONES = 20
MAX_WRITE_ATTEMPTS = 20
# A milestone names a status field the browser module sends (e.g. ``tutorialCompleted``).
_MILESTONE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")


def studies_root(data_prefix: str) -> str:
    return KeyLayout(data_prefix).studies_root


def registry_key(data_prefix: str) -> str:
    return KeyLayout(data_prefix).study_registry_key


def study_prefix(data_prefix: str, study_id: str) -> str:
    if not is_valid_participant_id(study_id):
        raise InvalidStudy(f"a study ID is 1 to 64 letters, digits, '_' or '-' (got {study_id!r})")
    return KeyLayout(data_prefix).study_prefix(study_id)


def normalize_origin(value: str) -> str:
    """The origin as a browser sends it (``collector.settings.normalised_origin``), or ``InvalidStudy``."""
    if not isinstance(value, str) or value.strip() == "*":
        raise InvalidStudy(f"an origin is http(s)://host[:port] (got {value!r})")
    try:
        return normalised_origin(value)
    except ValueError as exc:
        raise InvalidStudy(str(exc)) from None


@dataclass(frozen=True)
class Study:
    """One registered study (docs/studies.md)."""

    id: str
    prefix: str
    title: str = ""
    origins: tuple[str, ...] = ()
    status: StudyStatus = "open"
    max_participants: int | None = None
    milestones: tuple[str, ...] = ()
    created_at: str = ""
    updated_at: str = ""

    @property
    def layout(self) -> KeyLayout:
        return KeyLayout(self.prefix)

    def allows_origin(self, origin: str) -> bool:
        return origin in self.origins

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "prefix": self.prefix,
            "origins": list(self.origins),
            "status": self.status,
            "maxParticipants": self.max_participants,
            "milestones": list(self.milestones),
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
        }


def make_study(
    data_prefix: str,
    study_id: str,
    *,
    title: str = "",
    origins: tuple[str, ...] | list[str] = (),
    status: str = "open",
    max_participants: int | None = None,
    milestones: tuple[str, ...] | list[str] = (),
    created_at: str = "",
    updated_at: str = "",
) -> Study:
    """A checked study; ``InvalidStudy`` saying what to fix."""
    prefix = study_prefix(data_prefix, study_id)
    if not isinstance(title, str) or len(title) > MAX_TITLE_CHARS or any(ord(c) < 32 for c in title):
        raise InvalidStudy(f"a title is at most {MAX_TITLE_CHARS} printable characters")
    if status not in STUDY_STATUSES:
        raise InvalidStudy(f"a study's status is one of {', '.join(STUDY_STATUSES)} (got {status!r})")
    if max_participants is not None and (
        isinstance(max_participants, bool) or not isinstance(max_participants, int) or max_participants < 1
    ):
        raise InvalidStudy(f"max participants is a whole number from 1 (got {max_participants!r})")
    cleaned_origins = tuple(dict.fromkeys(normalize_origin(o) for o in origins))
    if len(cleaned_origins) > MAX_ORIGINS:
        raise InvalidStudy(f"a study has at most {MAX_ORIGINS} origins")
    for name in milestones:
        if not isinstance(name, str) or not _MILESTONE.fullmatch(name):
            raise InvalidStudy(f"a milestone is a status field name like tutorialCompleted (got {name!r})")
    cleaned_milestones = tuple(dict.fromkeys(milestones))
    if len(cleaned_milestones) > MAX_MILESTONES:
        raise InvalidStudy(f"a study has at most {MAX_MILESTONES} milestones")
    return Study(
        id=study_id,
        prefix=prefix,
        title=title.strip(),
        origins=cleaned_origins,
        status=status,  # type: ignore[arg-type]
        max_participants=max_participants,
        milestones=cleaned_milestones,
        created_at=created_at,
        updated_at=updated_at,
    )


def _study_from_json(data_prefix: str, value: Any) -> Study:
    if not isinstance(value, dict):
        raise InvalidStudy("a registry entry is not a JSON object")
    study = make_study(
        data_prefix,
        value.get("id"),  # type: ignore[arg-type]
        title=value.get("title") or "",
        origins=value.get("origins") or [],
        status=value.get("status", "open"),
        max_participants=value.get("maxParticipants"),
        milestones=value.get("milestones") or [],
        created_at=str(value.get("createdAt") or ""),
        updated_at=str(value.get("updatedAt") or ""),
    )
    # A hand-edited prefix could point a study at another study's data, or the default study's.
    if value.get("prefix") not in (None, study.prefix):
        raise InvalidStudy(f"study {study.id}: prefix {value.get('prefix')!r} is not {study.prefix!r}")
    return study


@dataclass(frozen=True)
class Registry:
    """The registered studies, by ID, as read (``etag`` None: no registry object yet)."""

    studies: dict[str, Study] = field(default_factory=dict)
    etag: str | None = None

    def get(self, study_id: str) -> Study | None:
        return self.studies.get(study_id)

    def origins(self) -> frozenset[str]:
        """The union of the studies' origins, archived ones included: their pages must be able to
        read the 410 that tells the browser module to drop what it holds."""
        return frozenset(o for s in self.studies.values() for o in s.origins)


def read_registry(store: ObjectStore, data_prefix: str) -> Registry:
    """The registry in the bucket; ``InvalidStudy`` if the object is not one the collector wrote."""
    stored = store.get_or_none(registry_key(data_prefix))
    if stored is None:
        return Registry()
    try:
        document = json.loads(stored.body)
    except ValueError as exc:
        raise InvalidStudy(f"{registry_key(data_prefix)} is not JSON: {exc}") from exc
    entries = document.get("studies") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise InvalidStudy(f"{registry_key(data_prefix)} has no list of studies")
    studies = [_study_from_json(data_prefix, entry) for entry in entries]
    return Registry({s.id: s for s in sorted(studies, key=lambda s: s.id)}, stored.etag)


def _encode(registry: dict[str, Study]) -> bytes:
    document = {"version": 1, "studies": [s.as_json() for s in sorted(registry.values(), key=lambda s: s.id)]}
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def change_study(
    store: ObjectStore,
    data_prefix: str,
    study_id: str,
    change: Callable[[Study | None, str], Study],
    *,
    who: str,
    action: str,
    reason: str = "",
) -> Study:
    """Apply ``change(current or None, now)`` to one study by compare-and-swap; then audit it.

    ``change`` raises ``InvalidStudy`` to refuse (e.g. adding a study that exists). A lost swap
    re-reads the registry and applies the change again to what is there now.
    """
    for _ in range(MAX_WRITE_ATTEMPTS):
        registry = read_registry(store, data_prefix)
        now = format_timestamp(datetime.now(UTC))
        before = registry.get(study_id)
        after = change(before, now)
        studies = {**registry.studies, study_id: after}
        try:
            if registry.etag is None:
                store.put(registry_key(data_prefix), _encode(studies), if_absent=True)
            else:
                store.put(registry_key(data_prefix), _encode(studies), if_match=registry.etag)
        except PreconditionFailed:
            continue
        _audit(store, after, action=action, who=who, reason=reason, before=before, moment=now)
        return after
    raise InvalidStudy("the registry kept changing under this write; try again")


def add_study(store: ObjectStore, data_prefix: str, study: Study, *, who: str) -> Study:
    def create(current: Study | None, now: str) -> Study:
        if current is not None:
            raise StudyExists(f"study {study.id} is already registered (change it with `study set`)")
        return replace(study, created_at=now, updated_at=now)

    return change_study(store, data_prefix, study.id, create, who=who, action="add")


def update_study(
    store: ObjectStore,
    data_prefix: str,
    study_id: str,
    changes: dict[str, Any],
    *,
    who: str,
    reason: str = "",
) -> Study:
    """Change some of a study's settings (keys: title, origins, status, max_participants, milestones)."""

    def update(current: Study | None, now: str) -> Study:
        if current is None:
            raise StudyNotRegistered(f"no study {study_id} is registered")
        merged = {
            "title": current.title,
            "origins": current.origins,
            "status": current.status,
            "max_participants": current.max_participants,
            "milestones": current.milestones,
            **changes,
        }
        return make_study(data_prefix, study_id, created_at=current.created_at, updated_at=now, **merged)

    return change_study(store, data_prefix, study_id, update, who=who, action="set", reason=reason)


def _audit(
    store: ObjectStore,
    study: Study,
    *,
    action: str,
    who: str,
    reason: str,
    before: Study | None,
    moment: str,
) -> None:
    when = datetime.now(UTC)
    key = study.layout.audit_key(AUDIT_KIND, study.id, when, secrets.token_hex(4))
    record = {
        "action": action,
        "studyId": study.id,
        "by": who,
        "at": moment,
        "reason": reason,
        "before": before.as_json() if before is not None else None,
        "after": study.as_json(),
    }
    write_record(store, key, record)


class RegistryCache:
    """This process's view of the registry, re-read at most every ``check_seconds``.

    The same trade as the dashboard's session check: a study closed on one instance is closed on
    every other within a few seconds, for one registry read per process per interval.
    """

    def __init__(
        self,
        store: ObjectStore,
        data_prefix: str,
        *,
        check_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.data_prefix = data_prefix
        self.check_seconds = check_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._registry: Registry | None = None
        self._read_at = float("-inf")

    @property
    def snapshot(self) -> Registry | None:
        """What was read last (None: never read), without touching the bucket."""
        return self._registry

    def is_fresh(self) -> bool:
        return self._registry is not None and self._clock() - self._read_at < self.check_seconds

    def current(self) -> Registry:
        """The registry, read again if the last read is older than ``check_seconds`` (blocking).

        Raises ``StorageError`` when the read fails; ``InvalidStudy`` when the object is damaged
        (the last good copy is kept for neither: refusing is safer than routing by a stale list).
        """
        if self.is_fresh():
            assert self._registry is not None
            return self._registry
        with self._lock:
            if self.is_fresh():
                assert self._registry is not None
                return self._registry
            registry = read_registry(self.store, self.data_prefix)
            self._registry, self._read_at = registry, self._clock()
            return registry

    def forget(self) -> None:
        """Read again on next use (after this process changed the registry)."""
        with self._lock:
            self._read_at = float("-inf")
