"""The verdict: count what the clients were told was stored, count what the store holds, compare.

* every acknowledged submission is in the store exactly once, at the key its 200 named, with
  the content that was sent (a stored object that matches nothing sent counts as ``partial``);
* no submission (acknowledged or not) is stored twice;
* no participant's ``status.json`` is older than the newest upload acknowledged for them, and it
  holds exactly what one upload sent (an acknowledged status upload counts as stored when the
  status.json is at least as new as it);
* every object is a complete JSON document; interrupted local writes left behind as hidden
  temporaries are counted apart, because the store never lists them as objects.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from collector.keys import KeyLayout, parse_timestamp
from collector.storage import ObjectStore
from tests.faults.clients import Upload, digest

_OLDEST = datetime.min.replace(tzinfo=UTC)


@dataclass
class Verdict:
    acknowledged: int = 0
    stored: int = 0
    duplicated: int = 0
    lost: int = 0
    partial: int = 0
    stale_status: int = 0
    wrong_key: int = 0
    stored_unacknowledged: int = 0  # sent, stored, but the client never heard 200: allowed
    objects: int = 0
    temporaries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.duplicated or self.lost or self.partial or self.stale_status or self.wrong_key)

    def note(self, problem: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(problem)


def judge(
    store: ObjectStore, layout: KeyLayout, uploads: list[Upload], *, local_root: Path | None = None
) -> Verdict:
    """Compare the uploads' outcomes with everything under the layout's prefix."""
    verdict = Verdict()
    by_id = {u.upload_id: u for u in uploads}
    keys = [info.key for info in store.list(layout.participants_root)]
    verdict.objects = len(keys)
    with ThreadPoolExecutor(16) as pool:
        bodies = pool.map(lambda key: store.get(key).body, keys)
        found: dict[str, list[str]] = defaultdict(list)
        status_moment: dict[str, datetime] = {}
        for key, body in zip(keys, bodies, strict=True):
            _classify(key, body, layout, by_id, found, status_moment, verdict)

    newest_acked: dict[str, datetime] = {}
    for upload in uploads:
        keys_for = found.get(upload.upload_id, [])
        if len(keys_for) > 1:
            verdict.duplicated += len(keys_for) - 1
            verdict.note(f"{upload.upload_id} stored {len(keys_for)} times: {keys_for}")
        if upload.outcome != "acknowledged":
            verdict.stored_unacknowledged += bool(keys_for)
            continue
        verdict.acknowledged += 1
        moment = parse_timestamp(upload.timestamp) or _OLDEST
        previous = newest_acked.get(upload.participant_id, _OLDEST)
        newest_acked[upload.participant_id] = max(previous, moment)
        if upload.upload_type == "submission":
            if not keys_for:
                verdict.lost += 1
                verdict.note(f"acknowledged submission {upload.upload_id} is not in the store")
                continue
            verdict.stored += 1
            if upload.stored_key not in keys_for:
                verdict.wrong_key += 1
                verdict.note(f"{upload.upload_id} acknowledged as {upload.stored_key}, stored at {keys_for}")
        elif status_moment.get(upload.participant_id, _OLDEST) >= moment:
            verdict.stored += 1
        else:
            verdict.lost += 1
            verdict.note(f"acknowledged status {upload.upload_id} is newer than the stored status.json")
    for participant, moment in newest_acked.items():
        if status_moment.get(participant, _OLDEST) < moment:
            verdict.stale_status += 1
            verdict.note(f"status.json of {participant} is older than its newest acknowledged upload")
    if local_root is not None:
        verdict.temporaries = _temporaries(local_root)
    return verdict


def _classify(
    key: str,
    body: bytes,
    layout: KeyLayout,
    by_id: dict[str, Upload],
    found: dict[str, list[str]],
    status_moment: dict[str, datetime],
    verdict: Verdict,
) -> None:
    parsed = layout.parse(key)
    document = _document(body)
    upload = by_id.get(document.get("uploadId")) if document is not None else None
    if parsed is None or document is None or upload is None or upload.participant_id != parsed.participant_id:
        verdict.partial += 1
        verdict.note(f"{key} is not a complete upload that a client sent")
        return
    if parsed.kind == "submission":
        if digest(document) != upload.digest:
            verdict.partial += 1
            verdict.note(f"{key} differs from what {upload.upload_id} sent")
            return
        found[upload.upload_id].append(key)
    else:
        if digest(document) != upload.status_digest or "serverReceivedAt" not in document:
            verdict.partial += 1
            verdict.note(f"{key} differs from what {upload.upload_id} sent")
            return
        status_moment[parsed.participant_id] = parse_timestamp(upload.timestamp) or _OLDEST


def _document(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _temporaries(root: Path) -> int:
    """Hidden temporaries of interrupted local writes (never listed as objects)."""
    return sum(
        1 for _, _, names in os.walk(root) for name in names if name.startswith(".") and ".tmp-" in name
    )
