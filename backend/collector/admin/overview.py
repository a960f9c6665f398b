"""The overview's figures and charts, computed from an index snapshot (no bucket reads).

Charts are bar geometry for inline SVG rendered by the template: no script, no external library,
and nothing the Content-Security-Policy would have to allow.

Every date is robust to what participants send: "Last upload" and submissions per day use the
server's receipt time, and a date outside [the first receipt, now + 1 day] (a browser clock in
2099, a session "ended" in year 1) is left out of the charts and counted on the page.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from .index import Snapshot

MAX_DAYS = 90
MAX_WEEKS = 26
FUNNEL_STEPS = (
    "participant setup seen",
    "welcome seen",
    "tutorial seen",
    "tutorial completed",
    "≥ 1 session completed",
)


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class Chart:
    title: str
    bars: list[Bar]
    width: int
    height: int
    peak: int

    @property
    def empty(self) -> bool:
        return not any(bar.value for bar in self.bars)


@dataclass(frozen=True)
class FunnelStep:
    label: str
    count: int
    share: float  # of all participants with a status
    width: float  # bar width in the SVG's units (0 to 100)


@dataclass(frozen=True)
class Overview:
    participants: int
    with_status: int
    submissions: int
    last_upload: datetime | None
    funnel: list[FunnelStep]
    uploads_per_day: Chart
    sessions_per_week: Chart
    left_out: int = 0  # dates outside [window_start, window_end], not in the charts
    window_start: date | None = None
    window_end: date | None = None
    erased: int = 0  # erased participants, not counted in ``participants``
    unverified_submissions: int = 0  # stored without the participant's key: not in ``submissions``


def build_overview(
    snapshot: Snapshot, now: datetime | None = None, milestones: tuple[str, ...] = ()
) -> Overview:
    """The overview; ``milestones`` (a registered study's) replace the volcano study's funnel."""
    erased = sum(1 for p in snapshot.participants if p.erased)
    people = [p for p in snapshot.participants if not p.erased]
    now = now or datetime.now(UTC)
    receipts = [moment for p in people for moment in (*p.submission_times, p.last_upload) if moment]
    end = now + timedelta(days=1)
    start = min((moment for moment in receipts if moment <= end), default=None)

    def inside(moment: datetime) -> bool:
        return start is not None and start <= moment <= end

    submitted = [moment for p in people for moment in p.submission_times]
    completed = [moment for p in people for moment in p.completed_session_times]
    kept_submitted = [moment for moment in submitted if inside(moment)]
    kept_completed = [moment for moment in completed if inside(moment)]
    left_out = len(submitted) - len(kept_submitted) + len(completed) - len(kept_completed)
    with_status = [p for p in people if p.status_readable]
    if milestones:
        steps: tuple[str, ...] = milestones
        reached = [sum(1 for p in with_status if p.milestones[i]) for i in range(len(milestones))]
    else:
        steps = FUNNEL_STEPS
        reached = [
            *(sum(1 for p in with_status if p.flags[i]) for i in range(4)),
            sum(1 for p in with_status if (p.sessions_completed or 0) >= 1),
        ]
    base = max(len(with_status), 1)
    funnel = [
        FunnelStep(label, count, count / base, 100 * count / base)
        for label, count in zip(steps, reached, strict=True)
    ]
    days = Counter(moment.date() for moment in kept_submitted)
    weeks = Counter(_monday(moment.date()) for moment in kept_completed)
    last = [moment for moment in receipts if inside(moment)]
    return Overview(
        participants=len(people),
        with_status=len(with_status),
        submissions=sum(p.submission_count for p in people),
        last_upload=max(last) if last else None,
        left_out=left_out,
        window_start=start.date() if start else None,
        window_end=end.date(),
        funnel=funnel,
        uploads_per_day=_chart("Submissions per day (UTC)", _series(days, timedelta(days=1), MAX_DAYS)),
        sessions_per_week=_chart(
            "Sessions completed per week (weeks start Monday)",
            _series(weeks, timedelta(weeks=1), MAX_WEEKS),
        ),
        erased=erased,
        unverified_submissions=sum(p.unverified_count for p in people),
    )


def _monday(day: date) -> date:
    # By ordinal: 0001-01-01 is a Monday, so no date arithmetic can leave the calendar.
    return date.fromordinal(day.toordinal() - day.weekday())


def _series(counts: Counter[date], step: timedelta, limit: int) -> list[tuple[str, int]]:
    """Every period from the first to the last with data (empty ones included), at most ``limit``.

    Computed on day ordinals, which never overflow the way ``date + timedelta`` does at 9999-12-31.
    """
    if not counts:
        return []
    days = step.days
    last = max(counts).toordinal()
    first = max(min(counts).toordinal(), last - days * (limit - 1))
    series = []
    for ordinal in range(first, last + 1, days):
        current = date.fromordinal(ordinal)
        series.append((current.isoformat(), counts.get(current, 0)))
    return series


def _chart(title: str, series: list[tuple[str, int]], width: int = 720, height: int = 160) -> Chart:
    peak = max((value for _, value in series), default=0)
    slot = width / max(len(series), 1)
    bars = []
    for i, (label, value) in enumerate(series):
        bar_height = (height - 20) * value / peak if peak else 0
        bars.append(Bar(label, value, i * slot + 1, height - bar_height, max(slot - 2, 1), bar_height))
    return Chart(title, bars, width, height, peak)
