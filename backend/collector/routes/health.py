"""Operational routes: health check and Prometheus metrics (docs/api.md §6)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..errors import storage_unavailable
from ..models import ErrorResponse
from ..web.services import ServicesDep

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    summary="Is storage reachable?",
    responses={503: {"model": ErrorResponse, "description": "Storage unreachable; retry after Retry-After."}},
)
async def healthz(services: ServicesDep) -> JSONResponse:
    """200 ``{"status": "ok", "storage": "local"|"s3"}`` when the store answers, else 503."""
    # The storage error names the endpoint and bucket (for R2, the account): the operator's
    # log gets it, not whoever asks this public route.
    with storage_unavailable(
        "storage is not reachable",
        retry_after=services.settings.retry_after_seconds,
        log_context="health check",
    ):
        await run_in_threadpool(services.store.check)
    return JSONResponse({"status": "ok", "storage": services.settings.storage_kind})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
