"""Who pays when a plan admits a new participant or stores without the participant's key.

A plan says *whether* the participant is new (``decide``); this says what that costs, in one
place for every upload type: a token of the per-address new-participant cap (429), then, in a
registered study that is closed or capped, the study's admission (403 ``study-closed`` or
``study-full``, docs/studies.md). A submission or trial stored without the key is charged
against the participant's hourly unverified budget (429).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..studies.routing import StudyRoute
    from ..web.rate_limit import ParticipantLimits


@dataclass(frozen=True)
class Admission:
    """The limits one request's uploads are admitted under (None: none, as for the tools)."""

    limits: ParticipantLimits | None = None
    client: str = "unknown"
    study: StudyRoute | None = None

    async def admit_new(
        self,
        participant_id: str,
        *,
        known: bool | None,
        blocking: Callable[..., Awaitable[Any]] = asyncio.to_thread,
    ) -> Callable[[], None] | None:
        """Count a new participant in, or raise ``RateLimited``, ``StudyClosed`` or ``StudyFull``.

        The cap first, so that an address over its cap never takes a place in a capped study.
        Returns what gives the cap's token back (the status create found the participant after
        all). ``known``: False when the pipeline listed the participant's folder and found it
        empty; None when the study's gate must look itself.
        """
        give_back = self.limits.admit_new_participant(self.client) if self.limits is not None else None
        route = self.study
        study = route.study if route is not None else None
        gated = study is not None and (study.status != "open" or study.max_participants is not None)
        if route is not None and gated:
            # The gate's storage requests are blocking calls (pipeline.calls), under the upload's deadline.
            await blocking(route.admit, participant_id, exists=known)
        return give_back

    def charge_unverified(self, participant_id: str, size: int) -> None:
        """Take ``size`` bytes of the participant's budget for uploads without their key."""
        if self.limits is not None:
            self.limits.charge_unverified(participant_id, size)
