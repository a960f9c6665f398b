"""The overview's figures and charts, computed from an index snapshot (no bucket reads).

Charts are bar geometry for inline SVG rendered by the template: no script, no external library,
and nothing the Content-Security-Policy would have to allow.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta

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
    erased: int = 0  # erased participants, not counted in ``participants``


def build_overview(snapshot: Snapshot) -> Overview:
    erased = sum(1 for p in snapshot.participants if p.erased)
    people = [p for p in snapshot.participants if not p.erased]
    with_status = [p for p in people if p.status_readable]
    reached = [
        *(sum(1 for p in with_status if p.flags[i]) for i in range(4)),
        sum(1 for p in with_status if (p.sessions_completed or 0) >= 1),
    ]
    base = max(len(with_status), 1)
    funnel = [
        FunnelStep(label, count, count / base, 100 * count / base)
        for label, count in zip(FUNNEL_STEPS, reached, strict=True)
    ]
    days = Counter(moment.date() for p in people for moment in p.submission_times)
    weeks = Counter(_monday(moment.date()) for p in people for moment in p.completed_session_times)
    last = [p.last_upload for p in people if p.last_upload]
    return Overview(
        participants=len(people),
        with_status=len(with_status),
        submissions=sum(p.submission_count for p in people),
        last_upload=max(last) if last else None,
        funnel=funnel,
        uploads_per_day=_chart("Submissions per day (UTC)", _series(days, timedelta(days=1), MAX_DAYS)),
        sessions_per_week=_chart(
            "Sessions completed per week (weeks start Monday)",
            _series(weeks, timedelta(weeks=1), MAX_WEEKS),
        ),
        erased=erased,
    )


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _series(counts: Counter[date], step: timedelta, limit: int) -> list[tuple[str, int]]:
    """Every period from the first to the last with data (empty ones included), at most ``limit``."""
    if not counts:
        return []
    last = max(counts)
    first = max(min(counts), last - step * (limit - 1))
    series = []
    current = first
    while current <= last:
        series.append((current.isoformat(), counts.get(current, 0)))
        current += step
    return series


def _chart(title: str, series: list[tuple[str, int]], width: int = 720, height: int = 160) -> Chart:
    peak = max((value for _, value in series), default=0)
    slot = width / max(len(series), 1)
    bars = []
    for i, (label, value) in enumerate(series):
        bar_height = (height - 20) * value / peak if peak else 0
        bars.append(Bar(label, value, i * slot + 1, height - bar_height, max(slot - 2, 1), bar_height))
    return Chart(title, bars, width, height, peak)
