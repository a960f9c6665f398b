"""The bucket's key layout (docs/bucket-layout.md): the only place that builds or parses object keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

PARTICIPANT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_PARTICIPANT_ID = re.compile(PARTICIPANT_ID_PATTERN)
_NAME_TIME_FORMAT = "%Y-%m-%d_%H-%M-%S"
_SUFFIX = re.compile(r"[0-9a-f]{8}")

STATUS_FILE = "user-status/status.json"
SUBMISSIONS_DIR = "submissions"
TRIALS_DIR = "trials"
# Trials sent without the key of a claimed participant: kept apart, never at the trial's own key.
UNVERIFIED_TRIALS_DIR = "unverified"
# A trial's index in its session; the key writes it with 6 digits, so key order is index order.
MAX_TRIAL_INDEX = 100_000


def is_valid_participant_id(value: object) -> bool:
    """True for 1 to 64 of ``[A-Za-z0-9_-]``: nothing that could leave the participant's folder."""
    return isinstance(value, str) and _PARTICIPANT_ID.fullmatch(value) is not None


def parse_timestamp(value: object) -> datetime | None:
    """The upload's ISO-8601 ``timestamp`` as an aware UTC datetime, or None if absent/unparseable."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # e.g. year 1 at +01:00 is before the year 1 in UTC
        return None


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 with milliseconds and ``Z``, the way the browser's ``Date.toISOString`` writes it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def name_stamp(moment: datetime) -> str:
    """``YYYY-MM-DD_HH-MM-SS`` in UTC with a 4-digit year always.

    Not ``strftime("%Y")``: glibc writes year 1 as ``1``, a key the layout would not recognise.
    """
    m = moment.astimezone(UTC)
    return f"{m.year:04d}-{m.month:02d}-{m.day:02d}_{m.hour:02d}-{m.minute:02d}-{m.second:02d}"


@dataclass(frozen=True)
class KeyLayout:
    """Builds and recognises keys under one prefix, e.g. ``volcano-audio-anonymized-data``."""

    prefix: str

    @property
    def participants_root(self) -> str:
        return f"{self.prefix}/participants/"

    @property
    def admin_session_key(self) -> str:
        """The dashboard's shared session secret and revocations (outside participants/)."""
        return f"{self.prefix}/admin/session-secret.json"

    @property
    def admin_password_key(self) -> str:
        """The dashboard's generated password, hashed (docs/bucket-layout.md §9)."""
        return f"{self.prefix}/admin/password.json"

    @property
    def conditional_probe_key(self) -> str:
        """The one object the conditional-write proof writes (docs/bucket-layout.md §9)."""
        return f"{self.prefix}/collector/conditional-write-probe.json"

    # Registered studies (docs/studies.md) live beside this prefix, never inside it. A study ID has
    # no ".", so no study's folder can meet the registry or an admissions record.

    @property
    def studies_root(self) -> str:
        """``{DATA_PREFIX}-studies``: a sibling of the default study's prefix."""
        return f"{self.prefix}-studies"

    @property
    def study_registry_key(self) -> str:
        return f"{self.studies_root}/registry.json"

    def study_prefix(self, study_id: str) -> str:
        """A registered study's own prefix; the caller has checked the ID (studies.registry)."""
        return f"{self.studies_root}/{study_id}"

    def study_admissions_key(self, study_id: str) -> str:
        """The participants a capped study has admitted (studies.admission)."""
        return f"{self.studies_root}/{study_id}.admissions.json"

    @property
    def server_keys(self) -> frozenset[str]:
        """The collector's own objects outside participants/: never participant data."""
        return frozenset({self.admin_session_key, self.admin_password_key, self.conditional_probe_key})

    def participant_dir(self, participant_id: str) -> str:
        if not is_valid_participant_id(participant_id):
            raise ValueError(f"not a valid participant id: {participant_id!r}")
        return f"{self.participants_root}{participant_id}/"

    def status_key(self, participant_id: str) -> str:
        return self.participant_dir(participant_id) + STATUS_FILE

    def submissions_dir(self, participant_id: str) -> str:
        return self.participant_dir(participant_id) + SUBMISSIONS_DIR + "/"

    def submission_key(self, participant_id: str, moment: datetime, suffix: str = "") -> str:
        """The submission's key; ``suffix`` (8 lowercase hex) keeps same-second uploads apart."""
        if suffix and not _SUFFIX.fullmatch(suffix):
            raise ValueError(f"not a submission name suffix: {suffix!r}")
        tail = f"_{suffix}" if suffix else ""
        name = f"{participant_id}_Complete_{name_stamp(moment)}{tail}.json"
        return self.submissions_dir(participant_id) + name

    @property
    def audit_root(self) -> str:
        """Research-team records (key releases, erasures): never participant data."""
        return f"{self.prefix}/audit/"

    def audit_dir(self, kind: str) -> str:
        """``{prefix}/audit/{kind}/``: one kind of record (``erasures``, ``key-releases``)."""
        return f"{self.audit_root}{kind}/"

    def audit_key(self, kind: str, participant_id: str, moment: datetime, token: str) -> str:
        """``{prefix}/audit/{kind}/{YYYY-MM-DD_HH-MM-SS}_{participantId}_{8 hex}.json``."""
        if not is_valid_participant_id(participant_id) or not _SUFFIX.fullmatch(token):
            raise ValueError("not a valid audit record name")
        return f"{self.audit_dir(kind)}{name_stamp(moment)}_{participant_id}_{token}.json"

    @property
    def erasure_intents_dir(self) -> str:
        """Erasures started and not finished (``collector.erasure``); empty when all are done."""
        return f"{self.audit_root}erasures-in-progress/"

    def erasure_intent_key(self, participant_id: str) -> str:
        """``{prefix}/audit/erasures-in-progress/{participantId}.json``."""
        if not is_valid_participant_id(participant_id):
            raise ValueError("not a valid participant ID")
        return f"{self.erasure_intents_dir}{participant_id}.json"

    def trials_dir(self, participant_id: str, session_id: str | None = None) -> str:
        """The participant's trials folder, or one session's folder in it."""
        base = self.participant_dir(participant_id) + TRIALS_DIR + "/"
        if session_id is None:
            return base
        if not is_valid_participant_id(session_id):  # same alphabet and length as participant IDs
            raise ValueError(f"not a valid session id: {session_id!r}")
        return f"{base}{session_id}/"

    def trial_key(self, participant_id: str, session_id: str, trial_index: int) -> str:
        """``.../trials/{sessionId}/{trialIndex:06d}.json``: one object per (session, index)."""
        if isinstance(trial_index, bool) or not isinstance(trial_index, int):
            raise ValueError(f"not a valid trial index: {trial_index!r}")
        if not 0 <= trial_index <= MAX_TRIAL_INDEX:
            raise ValueError(f"trial index out of range: {trial_index}")
        return f"{self.trials_dir(participant_id, session_id)}{trial_index:06d}.json"

    def unverified_trial_key(
        self, participant_id: str, session_id: str, trial_index: int, suffix: str
    ) -> str:
        """``.../trials/{sessionId}/unverified/{trialIndex:06d}_{8 hex}.json``: a trial kept apart.

        ``suffix`` comes from the trial's content, so each different unverified trial is kept
        once, and none can take the verified trial's key (docs/bucket-layout.md §4).
        """
        if not _SUFFIX.fullmatch(suffix):
            raise ValueError(f"not an unverified trial suffix: {suffix!r}")
        verified = self.trial_key(participant_id, session_id, trial_index)
        folder, name = verified.rsplit("/", 1)
        return f"{folder}/{UNVERIFIED_TRIALS_DIR}/{name.removesuffix('.json')}_{suffix}.json"

    def parse(self, key: str) -> ParsedKey | None:
        """What a key is (status, submission or trial, whose), or None when it does not fit the layout."""
        if not key.startswith(self.participants_root):
            return None
        parts = key[len(self.participants_root) :].split("/")
        if len(parts) < 2 or not is_valid_participant_id(parts[0]):
            return None
        participant_id, rest = parts[0], "/".join(parts[1:])
        if rest == STATUS_FILE:
            return ParsedKey(participant_id, "status", None)
        match = _SUBMISSION_NAME.fullmatch(rest)
        if match and match["pid"] == participant_id:
            try:
                moment = datetime.strptime(match["stamp"], _NAME_TIME_FORMAT).replace(tzinfo=UTC)
            except ValueError:  # e.g. year 0000 or month 13: not a name the collector makes
                return None
            return ParsedKey(participant_id, "submission", moment)
        trial = _TRIAL_NAME.fullmatch(rest)
        if trial and int(trial["index"]) <= MAX_TRIAL_INDEX:
            apart = trial["apart"] is not None
            return ParsedKey(participant_id, "trial", None, trial["session"], int(trial["index"]), apart)
        return None


_SUBMISSION_NAME = re.compile(
    rf"{SUBMISSIONS_DIR}/(?P<pid>[A-Za-z0-9_-]{{1,64}})_Complete_"
    # Suffixes: the old counters (_2, _3, ...) and the new 8-hex hashes.
    r"(?P<stamp>\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})(?:_(?P<n>[2-9]|[1-9]\d+|[0-9a-f]{8}))?\.json"
)


# Exactly 6 digits: the one spelling trial_key makes, so a key parses only if it would be built.
# Kept apart (unverified): the same with ``unverified/`` before the name and 8 hex after the index.
_TRIAL_NAME = re.compile(
    rf"{TRIALS_DIR}/(?P<session>[A-Za-z0-9_-]{{1,64}})/(?:(?P<apart>{UNVERIFIED_TRIALS_DIR})/)?"
    r"(?P<index>\d{6})(?(apart)_[0-9a-f]{8})\.json"
)


@dataclass(frozen=True)
class ParsedKey:
    participant_id: str
    kind: str  # "status", "submission" or "trial"
    submitted_at: datetime | None
    session_id: str | None = None  # trials only
    trial_index: int | None = None  # trials only
    apart: bool = False  # a trial kept apart: sent without the claimed participant's key
