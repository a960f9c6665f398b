"""The dashboard's "Completeness" page, and which export formats the dashboard offers.

The page lists participants who started but did not finish, and trial sessions that are partial
or have missing trials, from the same reading as ``collector report`` (``completeness.py``). It
reads the bucket when asked (every submission, and one trial per session), not from the index.
"""

from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from ..completeness import index_ranges, study_completeness
from ..export.formats import available_formats
from .context import SessionDep, off_loop
from .rendering import render_html

router = APIRouter(prefix="/admin", include_in_schema=False)

# What the dashboard's export zip can be, in menu order, with its label.
ZIP_FORMATS = {"csv": "CSV", "jsonl": "JSON Lines", "parquet": "Parquet"}


def offered_export_formats() -> list[tuple[str, str]]:
    """(format, label) for each zip format this server can produce: a missing library hides it."""
    return [(fmt, ZIP_FORMATS[fmt]) for fmt in available_formats(tuple(ZIP_FORMATS))]


@router.get("/completeness")
async def completeness_page(request: Request, admin: SessionDep) -> HTMLResponse:
    services = admin.services
    name = admin.study.id if admin.study is not None else "default"  # ?study=ID: that study's
    study = await off_loop(admin, partial(study_completeness, services.store, services.layout, study=name))
    return await render_html(
        request,
        admin,
        "completeness.html",
        {
            "study": study,
            "counts": study.counts(),
            "not_finished": [p for p in study.participants if not p.finished],
            "sessions": study.incomplete_sessions(),
            "ranges": index_ranges,
        },
    )
