"""Trial uploads on the participant endpoints: the single and the batch endpoint hand them here.

Kept out of ``uploads.py`` so the trial path reads on its own: parse, (key check), store once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.concurrency import run_in_threadpool

from ..errors import CollectorError
from ..trials import parse_trial
from ..web.services import Services


async def store_trial_upload(services: Services, value: Any) -> dict[str, Any]:
    """Validate and store one trial upload; the answer body of a 200 (raises ``CollectorError``)."""
    received_at = datetime.now(UTC)
    trial = parse_trial(value)
    # One read of status.json: erased (410), and whether the key matches a claimed participant.
    verdict = await run_in_threadpool(
        services.uploads.trial_verdict, trial.participant_id, trial.participant_key
    )
    verified = verdict is not False  # None: no key in play (unclaimed, or PARTICIPANT_KEYS=off)
    try:
        result = await run_in_threadpool(
            services.trials.store_trial, trial, received_at=received_at, verified=verified
        )
    except CollectorError:
        services.metrics.uploads.labels("trial", "storage_error").inc()
        raise
    services.metrics.uploads.labels("trial", "duplicate" if result.duplicate else "stored").inc()
    return result.as_response()
