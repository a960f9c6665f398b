"""Trial uploads on the participant endpoints: the single and the batch endpoint hand them here.

Kept out of ``uploads.py`` so the trial path reads on its own: parse, key check (and the
new-participant cap), store once, confirm no erasure overtook it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.concurrency import run_in_threadpool

from ..errors import CollectorError
from ..trials import parse_trial
from ..web.services import Services


async def store_trial_upload(services: Services, value: Any, client: str) -> dict[str, Any]:
    """Validate and store one trial upload; the answer body of a 200 (raises ``CollectorError``)."""
    received_at = datetime.now(UTC)
    trial = parse_trial(value)
    try:
        # One read of status.json: erased (410), and whether the key matches a claimed participant.
        decided = await run_in_threadpool(
            services.uploads.trial_verdict, trial.participant_id, trial.participant_key
        )
        if decided.erased:  # without the key, an erased participant looks like any claimed one
            services.metrics.uploads.labels("trial", "refused").inc()
            return services.trials.answer_without_storing(trial, received_at=received_at).as_response()
        if not decided.participant_known and services.limits is not None:
            # The same per-address cap as a status or submission of a participant with no folder.
            services.limits.admit_new_participant(client)
        verified = decided.verified is not False
        limits, pid = services.limits, trial.participant_id
        unverified = (lambda size: limits.charge_unverified(pid, size)) if limits and not verified else None
        result = await run_in_threadpool(
            services.trials.store_trial,
            trial,
            received_at=received_at,
            verified=verified,
            before_write=unverified,
        )
        if not result.duplicate:
            await run_in_threadpool(
                services.uploads.confirm_not_erased, trial.participant_id, decided.confirmed_at, [result.key]
            )
    except CollectorError as exc:
        outcome = "storage_error" if exc.status >= 500 else "refused"
        services.metrics.uploads.labels("trial", outcome).inc()
        raise
    services.metrics.uploads.labels("trial", "duplicate" if result.duplicate else "stored").inc()
    return result.as_response()
