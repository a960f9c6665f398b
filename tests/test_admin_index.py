"""The dashboard's participant index and overview figures, over the in-memory store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from collector.admin.index import ParticipantIndex, ParticipantSummary, Snapshot
from collector.admin.overview import build_overview
from collector.keys import KeyLayout
from collector.storage import MemoryStore
from tests.support.factories import make_status, make_submission, put_status, put_submission

LAYOUT = KeyLayout("volcano-audio-anonymized-data")


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets: list[str] = []

    def get(self, key: str):  # type: ignore[no-untyped-def]
        self.gets.append(key)
        return super().get(key)


def test_index_counts_submissions_from_the_listing_and_rereads_only_changed_statuses() -> None:
    store = CountingStore()
    put_status(store, LAYOUT, make_status("SYNTH1", sessions=2))
    put_submission(store, LAYOUT, make_submission("SYNTH1"))
    put_status(store, LAYOUT, make_status("SYNTH2", tutorial_completed=False))
    put_submission(store, LAYOUT, make_submission("SYNTH3"))  # no status
    index = ParticipantIndex(store, LAYOUT, ttl=3600)

    snapshot = index.get()
    assert [p.participant_id for p in snapshot.participants] == ["SYNTH1", "SYNTH2", "SYNTH3"]
    assert [p.submission_count for p in snapshot.participants] == [1, 0, 1]
    assert sorted(store.gets) == [LAYOUT.status_key("SYNTH1"), LAYOUT.status_key("SYNTH2")]
    assert index.get() is snapshot  # cached within the TTL

    store.gets.clear()
    put_status(store, LAYOUT, make_status("SYNTH2", tutorial_completed=True, sessions=1, note="longer"))
    refreshed = index.refresh(full=False)
    assert store.gets == [LAYOUT.status_key("SYNTH2")]
    assert refreshed.participants[1].flags == (True, True, True, True)

    store.gets.clear()
    index.refresh()  # the Refresh button: everything re-read
    assert len(store.gets) == 2


def test_overview_funnel_and_counts() -> None:
    store = MemoryStore()
    put_status(store, LAYOUT, make_status("SYNTH1", sessions=2))
    put_status(store, LAYOUT, make_status("SYNTH2", tutorial=False, tutorial_completed=False))
    put_status(
        store,
        LAYOUT,
        make_status("SYNTH3", setup=False, welcome=False, tutorial=False, tutorial_completed=False),
    )
    store.put(LAYOUT.status_key("SYNTH4"), b"not json")  # unreadable: not in the funnel's base
    for pid in ("SYNTH1", "SYNTH2"):
        put_submission(store, LAYOUT, make_submission(pid))
    overview = build_overview(ParticipantIndex(store, LAYOUT).get())
    assert (overview.participants, overview.with_status, overview.submissions) == (4, 3, 2)
    assert [step.count for step in overview.funnel] == [2, 2, 1, 1, 1]
    # Per day by the server's receipt time (stored today), not the file names' 2025-11-17.
    today = datetime.now(UTC).date().isoformat()
    assert [(bar.label, bar.value) for bar in overview.uploads_per_day.bars] == [(today, 2)]
    assert overview.last_upload is not None and overview.last_upload.date().isoformat() == today
    # SYNTH1's two sessions (2025-11) are before the first upload ever received: left out, counted.
    assert overview.sessions_per_week.empty and overview.left_out == 2


def summary(pid: str, submitted: tuple[datetime, ...], completed: tuple[datetime, ...]) -> ParticipantSummary:
    return ParticipantSummary(
        participant_id=pid,
        has_status=True,
        status_readable=True,
        flags=(True, True, True, True),
        sessions_started=len(completed),
        sessions_completed=len(completed),
        total_hours=None,
        volcano=None,
        mode=None,
        last_upload=max(submitted),
        submission_count=len(submitted),
        submission_times=submitted,
        completed_session_times=completed,
    )


def test_overview_keeps_dates_between_the_first_receipt_and_tomorrow() -> None:
    now = datetime(2026, 3, 4, 12, tzinfo=UTC)  # a Wednesday
    first = datetime(2026, 2, 2, 9, tzinfo=UTC)
    people = [
        summary("SYNTH1", (first, now), (first + timedelta(hours=1), now, now + timedelta(hours=20))),
        summary(
            "SYNTH2",
            (now - timedelta(days=1),),
            (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC), now + timedelta(days=400)),
        ),
    ]
    overview = build_overview(Snapshot(people), now=now)
    assert overview.left_out == 3  # year 1, year 9999, next year
    assert overview.last_upload == now
    assert (overview.window_start, overview.window_end) == (first.date(), (now + timedelta(days=1)).date())
    weeks = {bar.label: bar.value for bar in overview.sessions_per_week.bars}
    assert weeks["2026-02-02"] == 1 and weeks["2026-03-02"] == 2 and sum(weeks.values()) == 3
    days = [bar.label for bar in overview.uploads_per_day.bars]
    assert days[0] == "2026-02-02" and days[-1] == "2026-03-04"
