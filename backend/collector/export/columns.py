"""The exported tables and their columns: one declaration drives the writers and the data dictionary."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnType = Literal["string", "int64", "float64", "bool"]


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    description: str
    source: str | None = None  # the status.json field it is read from, if any


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]


TIME_TEXT = "ISO-8601 UTC text"  # in a description, marks a column of times
_TIME = TIME_TEXT

PARTICIPANTS = Table(
    "participants",
    "One row per participant, ordered by participant_id: their latest state from status.json, or "
    "only their counts when they sent trials (or submissions) and no status (status_key empty).",
    (
        Column("participant_id", "string", "Participant ID (the folder name in the bucket)."),
        Column("status_key", "string", "Object key of the status.json."),
        Column("timestamp", "string", f"The upload's own timestamp ({_TIME}), as sent.", "timestamp"),
        Column(
            "server_received_at", "string", f"When the collector stored it ({_TIME}).", "serverReceivedAt"
        ),
        Column(
            "upload_type", "string", "Type of the upload that wrote it: submission or status.", "uploadType"
        ),
        Column("has_seen_participant_setup", "bool", "Saw the participant setup.", "hasSeenParticipantSetup"),
        Column("has_seen_welcome", "bool", "Saw the welcome screen.", "hasSeenWelcome"),
        Column("has_seen_tutorial", "bool", "Saw the tutorial.", "hasSeenTutorial"),
        Column("tutorial_completed", "bool", "Completed the tutorial.", "tutorialCompleted"),
        Column("weekly_session_count", "int64", "Sessions this week.", "weeklySessionCount"),
        Column("week_start_date", "string", "Start of the current study week.", "weekStartDate"),
        Column("last_awesf_date", "string", "Date of the last AWESF questionnaire.", "lastAwesfDate"),
        Column("total_sessions_started", "int64", "Sessions started, all time.", "totalSessionsStarted"),
        Column(
            "total_sessions_completed", "int64", "Sessions completed, all time.", "totalSessionsCompleted"
        ),
        Column("total_session_time_ms", "float64", "Total session time in milliseconds.", "totalSessionTime"),
        Column(
            "total_session_time_hours", "float64", "Total session time in hours.", "totalSessionTimeHours"
        ),
        Column(
            "current_session_start",
            "string",
            "Start of the session in progress, if any.",
            "currentSessionStart",
        ),
        Column("selected_volcano", "string", "Volcano chosen.", "selectedVolcano"),
        Column("selected_mode", "string", "Mode chosen (e.g. study).", "selectedMode"),
        Column("session_count", "int64", "Records in sessionHistory (see the sessions table)."),
        Column("response_count", "int64", "Answers in participantResponses (see the responses table)."),
        Column(
            "submission_count",
            "int64",
            "Submissions that speak for this participant: stored with their key, or while they held "
            "none (every submission not marked keyVerified: false). With --since, of the exported "
            "submissions only.",
        ),
        Column(
            "unverified_submission_count",
            "int64",
            "Submissions stored for this ID without the participant's key (keyVerified: false): "
            "anyone could have sent them, so they are counted here, apart, and never in "
            "submission_count or a trial session's completion. With --since, of the exported only.",
        ),
        Column("stored_trials", "int64", "Trials stored for this participant (see the trials table)."),
        Column("stored_trial_sessions", "int64", "Trial sessions (runs of the experiment) they sent."),
        Column(
            "extra_json",
            "string",
            "Every other status.json field, as a JSON object with sorted keys; also holds a known "
            "field whose value did not have the column's type (that column is then empty).",
        ),
    ),
)

SUBMISSIONS = Table(
    "submissions",
    "One row per submission file, ordered by key (so by participant, then time).",
    (
        Column("participant_id", "string", "Participant ID."),
        Column("key", "string", "Object key of the submission file."),
        Column("submitted_at", "string", f"Time in the file name: the upload's timestamp ({_TIME})."),
        Column("size_bytes", "int64", "Size of the file in bytes."),
        Column("upload_type", "string", "uploadType inside the file (submission)."),
        Column("timestamp", "string", "The upload's own timestamp, as sent."),
        Column("server_received_at", "string", f"When the collector stored it ({_TIME})."),
        Column("upload_id", "string", "Client-generated uploadId, if sent."),
        Column(
            "key_verified",
            "bool",
            "keyVerified inside the file: true when sent with the participant's key, false when the "
            "key was missing or wrong (stored, but not verified: anyone could have sent it), empty "
            "when keys were not in use (keyless participant, or PARTICIPANT_KEYS=off).",
        ),
        Column("submission_json", "string", "The whole file (upload fields and submissionData) as JSON."),
    ),
)

SESSIONS = Table(
    "sessions",
    "One row per record of sessionHistory in status.json, ordered by participant_id, session_index.",
    (
        Column("participant_id", "string", "Participant ID."),
        Column("session_index", "int64", "Position of the record in sessionHistory, from 0."),
        Column("started_at", "string", f"Session start ({_TIME}), from startTime/start/startedAt."),
        Column("ended_at", "string", f"Session end ({_TIME}), from endTime/end/endedAt/completedAt."),
        Column("duration_ms", "float64", "Duration in ms, from duration/durationMs/sessionDuration."),
        Column("completed", "bool", "From completed/isCompleted; else true when the record has an end."),
        Column("record_json", "string", "The whole record as JSON, whatever its fields."),
    ),
)

RESPONSES = Table(
    "responses",
    "Survey answers: one row per participant x question, from participantResponses in status.json "
    "(the study sends its full local state, so the latest status holds every answer given so far). "
    "Ordered by participant_id, then the order of the answers in the document.",
    (
        Column("participant_id", "string", "Participant ID."),
        Column("question", "string", "Question key; nested objects give dotted paths (survey.q1)."),
        Column("value", "string", "The answer: text as is, anything else as JSON (numbers, lists)."),
        Column("value_type", "string", "JSON type of the answer: string, number, boolean, array, null."),
    ),
)

TABLES = (PARTICIPANTS, SUBMISSIONS, SESSIONS, RESPONSES)

# Per-trial tables. ``trials`` has these leading columns, then one column per trialData field
# (their names and types depend on the data: see export/trials.py), then TRIALS_TRAILING.
TRIALS = Table(
    "trials",
    "One row per stored trial (uploadType trial), ordered by participant_id, session_id, trial_index. "
    "After the columns below comes one column per field of trialData, in the order the fields are "
    "first met, typed from their values (listed under 'Trial fields').",
    (
        Column("participant_id", "string", "Participant ID (from the object key)."),
        Column("session_id", "string", "Session ID: one run of the experiment (from the object key)."),
        Column("trial_index", "int64", "The trial's index in its session, from 0 (from the object key)."),
        Column(
            "server_received_at", "string", f"When the collector stored it ({_TIME}).", "serverReceivedAt"
        ),
        Column(
            "key_verified",
            "bool",
            "false when the upload did not carry the participant's key (stored marked keyVerified: "
            "false); true otherwise.",
            "keyVerified",
        ),
        Column(
            "upload_json",
            "string",
            "The upload's other top-level fields (timestamp, uploadId, fields the study adds to "
            "every trial), as a JSON object with sorted keys; empty when there are none.",
        ),
    ),
)
TRIALS_TRAILING = (
    Column(
        "more_trial_fields_json",
        "string",
        "trialData fields past the column limit, as a JSON object with sorted keys; empty when none.",
    ),
)

TRIAL_SESSIONS = Table(
    "trial_sessions",
    "One row per session that has stored trials (participant x sessionId), ordered by "
    "participant_id, session_id. Not the sessions table (which is sessionHistory in status.json). "
    "A session is complete when the participant has a submission naming it (sessionId at the "
    "submission's top level or in its submissionData) that is not marked keyVerified: false, "
    "partial otherwise (trials only: the tab was closed or the final upload never arrived). An "
    "unverified submission never completes a session: it is counted in unverified_submissions. "
    "With --since, only submissions in the export count.",
    (
        Column("participant_id", "string", "Participant ID."),
        Column("session_id", "string", "Session ID."),
        Column("completion", "string", "complete or partial (see above)."),
        Column("trial_count", "int64", "Trials stored for the session."),
        Column("first_trial_index", "int64", "Lowest trial index stored."),
        Column("last_trial_index", "int64", "Highest trial index stored."),
        Column(
            "missing_trials",
            "int64",
            "Indices with no stored trial, from 0 to expected_trials - 1 when the session says how many "
            "it expects, else from 0 to last_trial_index (0 when none is missing).",
        ),
        Column(
            "expected_trials",
            "int64",
            "expectedTrials sent with the session's highest-indexed trial (the timeline's trial count, "
            "when the study knows it); empty when not sent.",
        ),
        Column(
            "missing_indices",
            "string",
            "The missing indices, runs joined with '-' and separated by ',' (e.g. 2,4-6); empty when none.",
        ),
        Column("first_received_at", "string", f"serverReceivedAt of the earliest trial ({_TIME})."),
        Column("last_received_at", "string", f"serverReceivedAt of the latest trial ({_TIME})."),
        Column(
            "submission_key",
            "string",
            "Key of the submission that completes it: of those naming it and not marked "
            "keyVerified: false, one sent with the participant's key before one stored while "
            "nobody held a key, then the first in key order.",
        ),
        Column(
            "unverified_submissions",
            "int64",
            "Submissions naming this session that were stored without the participant's key "
            "(keyVerified: false): kept, shown here, never completing it.",
        ),
    ),
)

TRIAL_TABLES = (TRIALS, TRIAL_SESSIONS)
