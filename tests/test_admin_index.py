"""The dashboard's participant index and overview figures, over the in-memory store."""

from __future__ import annotations

from collector.admin.index import ParticipantIndex
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
    assert [(bar.label, bar.value) for bar in overview.uploads_per_day.bars] == [("2025-11-17", 2)]
    # SYNTH1's two sessions fall in the week starting Monday 2025-11-17.
    assert [(bar.label, bar.value) for bar in overview.sessions_per_week.bars] == [("2025-11-17", 2)]
