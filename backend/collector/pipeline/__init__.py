"""The upload pipeline: every upload (status, submission, trial, batch item) decided in one place.

One upload, in five steps, each in one module:

1. **parse** (``collector.models.parse_upload``, ``collector.trials.parse_trial``; the routes);
2. **load the state** (``state``): the participant's ``status.json`` as this process remembers it
   (``collector.status_cache``), or one read of it: tombstone, key hash, moment, ETag;
3. **decide** (``decide``): a pure function of the state and the upload, returning a plan (the
   writes, in order), a refusal, or "read first" when a remembered state cannot confirm the
   decision. The erasure, participant-key, newest-wins and new-participant rules are stated there;
4. **run the plan** (``run``): under one storage deadline, status first (a compare-and-swap or a
   create-if-absent), then the submission or trial (created once), then the erasure fence. A
   refused status write gives the cap's token back, reads, and decides again. A new participant
   is admitted (the per-address cap, a study's closed/full check) by ``admission``;
5. **answer** (``answer``): the 200's body, or the refusal as a value (``collector.errors.Refusal``),
   which ``collector.web.error_handlers`` maps to HTTP, the same body for a batch item.

The steps are coroutines calling the store's ``put_async`` and ``get_async``; ``calls`` says
whether they run on the event loop (a store with native async methods) or all of one upload in
one worker thread (any other store: one thread hop per upload, and a local folder's writes of
one upload share their last sync).

Storage requests: a new or known participant's submission costs 2 (status, submission), a status
upload 1, a trial 1 (plus a read of ``status.json`` when its remembered state is not fresh, and
one listing the first time this process meets a participant with no status). docs/reliability.md
tells why each order and check is there.
"""
