"""Step 4 of the pipeline: run a plan, under one deadline, and decide again when a write is refused.

``UploadPipeline.store`` is the whole of one upload after parsing: load the state (cached or
read), ``decide``, run the plan, answer. Every storage request of the upload (the status read,
the study's admission, the writes, the erasure fence's check) shares one retry deadline
(``storage.retrying.shared_deadline``), and a store failing past it answers 503 with nothing
promised. The writes, in the one order (``pipeline.decide``):

1. ``status.json``: a compare-and-swap on the ETag the state holds, or a create-if-absent when it
   holds none. Refused (someone else wrote, erased, or the participant existed after all): nothing
   is written yet; the cap's token is given back, the upload reads ``status.json`` and decides again.
2. the submission (``submission_names``) or the trial, created once (``storage.create_once``).
3. the erasure fence (``collector.tombstone``): writes that end later than
   ``CONFIRM_WINDOW_SECONDS`` after the state was confirmed (the status write, or the read) read
   ``status.json`` again and are withdrawn if the participant was erased meanwhile.

The store is called through its async methods (``put_async``, ``get_async``): on the event loop
for a store with native ones; for any other, the whole upload runs in one worker thread
(``pipeline.calls``), its writes sharing their last sync on a local folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from ..compact_json import compact_json_bytes
from ..errors import CollectorError, ParticipantErased, RateLimited, Refusal, storage_unavailable
from ..keys import KeyLayout
from ..models import Upload
from ..status_cache import StatusCache
from ..storage import ObjectStore, PreconditionFailed, StorageError
from ..storage.create_once import create_once
from ..storage.retrying import shared_deadline
from ..submission_names import store_submission
from ..tombstone import CONFIRM_WINDOW_SECONDS
from ..trials.model import TrialUpload
from ..trials.service import same_trial
from .admission import Admission
from .answer import Answer
from .calls import StoreCalls
from .decide import READ_FIRST, Plan, Rules, SubmissionWrite, TrialWrite, decide, erased_message
from .restore import read_status
from .state import ParticipantState, StateLoader

logger = logging.getLogger(__name__)

# Decisions tried per upload: each refused status write costs a read and one more.
MAX_STATUS_ATTEMPTS = 200
# An S3 409 (a racing conditional write in flight) leaves a trial's key free if that write fails.
MAX_TRIAL_PUTS = 5
UNAVAILABLE_MESSAGE = "storage is unavailable right now; the upload was not stored, please retry"


class UploadPipeline:
    """Stores the uploads of one study (one key layout) in a store: status, submission, trial."""

    def __init__(
        self,
        store: ObjectStore,
        layout: KeyLayout,
        *,
        retry_after: int,
        deadline_seconds: float | None,
        participant_keys: bool,
        clock_skew: timedelta,
        clock: Callable[[], float] = time.monotonic,
        status_cache: StatusCache | None = None,
    ) -> None:
        self.store = store
        self.layout = layout
        self.retry_after = retry_after
        self.deadline_seconds = deadline_seconds  # one retry deadline for all of an upload's requests
        self.participant_keys = participant_keys
        self.clock_skew = clock_skew
        self._clock = clock
        # None: every upload reads status.json first (tools, and STATUS_CACHE_SIZE=0).
        self.status_cache = status_cache
        # How long a cached status may decide a trial (which no conditional write confirms).
        self.trial_fresh_seconds = CONFIRM_WINDOW_SECONDS
        self.rules = Rules(participant_keys, layout, clock_skew)
        self.calls = StoreCalls(store)
        self.states = StateLoader(
            self.calls.store,
            layout,
            clock_skew=clock_skew,
            clock=clock,
            cache=lambda: self.status_cache,
            blocking=self.calls.blocking,
        )

    async def store_upload(
        self, upload: Upload | TrialUpload, *, received_at: datetime, admission: Admission | None = None
    ) -> Answer | Refusal:
        """Store one parsed upload: its answer, or the refusal (storage trouble past the deadline: 503)."""
        return await self.calls.run(self._guarded(upload, received_at, admission or Admission()))

    async def _guarded(
        self, upload: Upload | TrialUpload, received_at: datetime, admission: Admission
    ) -> Answer | Refusal:
        kind = "trial" if isinstance(upload, TrialUpload) else upload.upload_type
        try:
            with (
                storage_unavailable(
                    UNAVAILABLE_MESSAGE,
                    retry_after=self.retry_after,
                    log_context=f"{upload.participant_id}, {kind} upload",
                ),
                shared_deadline(self.deadline_seconds, self._clock),
            ):
                # Inside the 503 mapping: the block's last sync may fail too.
                async with self.calls.one_upload():
                    return await self._store(upload, received_at, admission)
        except CollectorError as refused:
            return Refusal.of(refused)

    async def _store(
        self, upload: Upload | TrialUpload, received_at: datetime, admission: Admission
    ) -> Answer | Refusal:
        pid = upload.participant_id
        trial = isinstance(upload, TrialUpload)
        states = self.states
        state = states.fresh(pid, self.trial_fresh_seconds) if trial else states.assumed(pid)
        if state is None:
            state = await states.read(pid, look_for_objects=trial)
        for _ in range(MAX_STATUS_ATTEMPTS):
            decision = decide(state, upload, received_at, self.rules)
            if decision is READ_FIRST:
                state = await states.read(pid, look_for_objects=trial)
                continue
            if isinstance(decision, Refusal):
                return decision
            assert isinstance(decision, Plan)
            plan = decision
            if plan.as_claimed is not None:
                logger.info("Upload for erased participant %s without its key: nothing stored", pid)
                return Answer(
                    pid, _timestamp(upload, received_at), [plan.as_claimed], key_verified=False, stored=False
                )
            give_back = None
            if plan.admit_new:
                try:
                    give_back = await admission.admit_new(
                        pid, known=_known(state), blocking=self.calls.blocking
                    )
                except RateLimited:
                    if not state.read:  # a spent cap: the read tells a known participant from a new one
                        state = await states.read(pid, look_for_objects=trial)
                        continue
                    states.forget(pid)  # refused: the next upload asks again, never "seen here"
                    raise
                except CollectorError:
                    states.forget(pid)
                    raise
            answer = await self._run(plan, state, upload, received_at, admission)
            if answer is not None:
                return answer
            if give_back is not None:
                give_back()  # the participant existed after all: the cap counts statuses created
            state = await states.read(pid, look_for_objects=trial)
        raise StorageError(f"status.json for {pid} is too contended")

    async def _run(
        self,
        plan: Plan,
        state: ParticipantState,
        upload: Upload | TrialUpload,
        received_at: datetime,
        admission: Admission,
    ) -> Answer | None:
        """The plan's writes, in order; None when the status write was refused (decide again)."""
        pid = upload.participant_id
        states = self.states
        confirmed_at = state.confirmed_at
        files: list[str] = []
        if plan.status is not None:
            status_key = self.layout.status_key(pid)
            confirmed_at = states.fence_clock()
            try:
                if plan.status.etag is None:
                    etag = await self.calls.store.put_async(status_key, plan.status.body, if_absent=True)
                else:
                    etag = await self.calls.store.put_async(
                        status_key, plan.status.body, if_match=plan.status.etag
                    )
            except PreconditionFailed:  # S3's 409 on a racing create too: the read tells what is there
                states.forget(pid, plan.status.etag)
                return None
            states.remember(pid, etag, plan.status.key_hash, plan.status.moment, confirmed_at)
            files.append(status_key)
        charge = None
        if plan.verified is False:
            charge = lambda size: admission.charge_unverified(pid, size)  # noqa: E731
        duplicate = False
        if isinstance(plan.item, SubmissionWrite):
            assert isinstance(upload, Upload)
            key = await store_submission(self.calls.store, self.layout, upload, plan.item.document, charge)
            files.append(key)
            await self._confirm_not_erased(pid, confirmed_at, [key])
        elif isinstance(plan.item, TrialWrite):
            assert isinstance(upload, TrialUpload)
            key, duplicate = await self._store_trial(upload, plan.item, charge)
            files.append(key)
            if not duplicate:
                await self._confirm_not_erased(pid, confirmed_at, [key])
        if plan.verified is False:
            logger.warning("⚠️ Stored a submission for %s without a valid participant key: %s", pid, files)
        else:
            logger.info("✅ Uploaded user data for %s: %s", pid, files)
        return Answer(
            pid,
            _timestamp(upload, received_at),
            files,
            superseded=plan.superseded,
            key_verified=plan.verified,
            duplicate=duplicate,
        )

    async def _store_trial(
        self, trial: TrialUpload, write: TrialWrite, charge: Callable[[int], None] | None
    ) -> tuple[str, bool]:
        """Create the trial once; (its key, whether a different trial holds that key)."""
        body = compact_json_bytes(write.document)
        if charge is not None:
            charge(len(body))
        existing = await create_once(self.calls.store, write.key, body, attempts=MAX_TRIAL_PUTS)
        duplicate = existing is not None and not same_trial(existing.body, trial)
        if duplicate:
            logger.warning("Trial %s already holds a different trial; the first one is kept", write.key)
        return write.key, duplicate

    async def _confirm_not_erased(self, participant_id: str, confirmed_at: float, written: list[str]) -> None:
        """The upload's side of the erasure fence (``collector.tombstone``).

        Writes that completed within ``CONFIRM_WINDOW_SECONDS`` of ``confirmed_at`` need nothing
        more; later ones read ``status.json`` again, and if it holds a tombstone they are
        removed (the erasure may be done) and the upload answers 410.
        """
        if not written or self.states.fence_clock() - confirmed_at <= CONFIRM_WINDOW_SECONDS:
            return
        if await self.states.is_erased(participant_id):
            for key in written:
                await self.calls.blocking(self.store.delete, key)
            raise ParticipantErased(erased_message(participant_id))

    async def confirm_not_erased(self, participant_id: str, confirmed_at: float, written: list[str]) -> None:
        """``_confirm_not_erased`` on its own (503 when the store fails), for tools and tests."""
        with storage_unavailable(
            retry_after=self.retry_after, log_context=f"{participant_id}, erasure check"
        ):
            await self.calls.run(self._confirm_not_erased(participant_id, confirmed_at, written))

    def forget(self, participant_id: str) -> None:
        """Drop what this process remembers of the participant (after an erasure or key release here)."""
        self.states.forget(participant_id)

    async def read_status(self, participant_id: str, key: str | None) -> dict[str, object]:
        """The participant's stored status without private fields, for restore (``pipeline.restore``)."""
        with storage_unavailable(retry_after=self.retry_after, log_context=f"{participant_id}, status read"):
            return await self.calls.run(
                read_status(self.calls.store, self.layout, self.participant_keys, participant_id, key)
            )


def _known(state: ParticipantState) -> bool | None:
    """New participant, as far as the state can tell: True known, False surely new, None: ask the study."""
    if state.known:
        return True
    return False if state.has_objects is False else None


def _timestamp(upload: Upload | TrialUpload, received_at: datetime) -> str:
    """The timestamp to answer with: the client's own text, else the server time used."""
    if isinstance(upload, TrialUpload):
        return upload.timestamp_text(received_at)
    return upload.timestamp_text
