"""Operational routes: health check and Prometheus metrics."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..errors import StorageUnavailable
from ..storage import LowOnSpace, StorageError
from .uploads import ServicesDep

logger = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Is storage reachable?")
async def healthz(services: ServicesDep) -> JSONResponse:
    """200 ``{"status": "ok", "storage": "local"|"s3"}`` when the store answers, else 503.

    503 "storage is low on space" when a local folder is under its free-space thresholds.
    """
    try:
        await run_in_threadpool(services.store.check)
    except LowOnSpace as exc:
        # Reachable but refusing uploads until space is freed; the message names no path.
        logger.warning("⚠️ Health check: %s", exc)
        raise StorageUnavailable("storage is low on space") from exc
    except StorageError as exc:
        # The detail names the endpoint and bucket (for R2, the account): the operator's log
        # gets it, not whoever asks this public route.
        logger.warning("⚠️ Health check failed: %s", exc)
        raise StorageUnavailable("storage is not reachable") from exc
    return JSONResponse({"status": "ok", "storage": services.settings.storage_kind})


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
