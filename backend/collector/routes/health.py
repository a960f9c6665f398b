"""Operational routes: health check and Prometheus metrics (docs/api.md §6)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..errors import StorageUnavailable, storage_unavailable
from ..models import ErrorResponse
from ..storage import ConditionalWritesIgnored, LowOnSpace
from ..web.free_space import low_on_space
from ..web.services import ServicesDep

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz",
    summary="Is storage reachable?",
    responses={503: {"model": ErrorResponse, "description": "Storage unreachable; retry after Retry-After."}},
)
async def healthz(services: ServicesDep) -> JSONResponse:
    """200 ``{"status": "ok", "storage": "local"|"s3"}`` when the store answers, else 503.

    503 "storage is low on space" when a local folder is under its free-space thresholds;
    ``"lowOnSpace": true`` (still 200) under the higher warning threshold, before refusals start.
    On a bucket, 503 until it has proven its conditional writes (``storage.conditional_probe``).
    """
    retry_after = services.settings.retry_after_seconds
    try:
        # The storage error names the endpoint and bucket (for R2, the account): the operator's
        # log gets it, not whoever asks this public route.
        with storage_unavailable("storage is not reachable", retry_after=retry_after, log_context="health"):
            await run_in_threadpool(services.store.check)
    except StorageUnavailable as exc:
        if isinstance(exc.__cause__, LowOnSpace):
            # Reachable, but refusing uploads until space is freed; the message names no path.
            raise StorageUnavailable("storage is low on space", retry_after=retry_after) from exc.__cause__
        if isinstance(exc.__cause__, ConditionalWritesIgnored):
            # Reachable, but it would let uploads overwrite each other: refused until replaced.
            raise StorageUnavailable(
                "storage ignores conditional writes; uploads are refused (see the collector's log)",
                retry_after=retry_after,
            ) from exc.__cause__
        raise
    body: dict[str, object] = {"status": "ok", "storage": services.settings.storage_kind}
    if await run_in_threadpool(low_on_space, services.settings):
        body["lowOnSpace"] = True
    return JSONResponse(body)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
