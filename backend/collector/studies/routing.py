"""Which study an upload belongs to, decided before the upload pipeline runs.

An upload without ``studyId`` goes to the default study (``DATA_PREFIX``) exactly as before
studies existed. One with ``studyId`` goes to that registered study's services: the same
``UploadPipeline`` over the study's own ``KeyLayout``, whose admission of a new participant asks
the study's gate (``collector.pipeline.admission``). The refusals are
errors of ``collector.errors`` with a ``reason`` the browser module acts on (docs/api.md).
``studyId`` itself is the client's field: it is stored as sent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from fastapi.concurrency import run_in_threadpool

from ..errors import (
    InvalidUpload,
    OriginRefused,
    StorageUnavailable,
    StudyArchived,
    UnknownStudy,
    storage_unavailable,
)
from ..keys import is_valid_participant_id
from ..models import preview
from ..settings import Settings
from ..storage import StorageError
from ..web.services import Services, upload_pipeline
from .admission import StudyGate
from .registry import InvalidStudy, Registry, RegistryCache, Study

STUDY_FIELD = "studyId"


@dataclass(frozen=True)
class StudyRoute:
    """Where one upload goes: the services to store it with, and the study (None: default)."""

    services: Services
    study: Study | None = None
    gate: StudyGate | None = None

    def admit(self, participant_id: str, *, exists: bool | None = None) -> None:
        """Refuse a new participant of a closed or full study; nothing for the default study.

        ``exists``: what the upload pipeline knows (None: the gate looks when it needs to).
        """
        if self.study is not None and self.gate is not None:
            self.gate.admit(self.study, participant_id, exists=exists)


class StudyServices:
    """Per-study services over one app's store, built on first use and kept (a few per app)."""

    def __init__(self, registry: RegistryCache) -> None:
        self.registry = registry
        self._by_prefix: dict[str, tuple[Services, StudyGate]] = {}
        self._lock = threading.Lock()

    def services_for(self, base: Services, study: Study) -> tuple[Services, StudyGate]:
        """``base`` (the default study's services) with the study's layout, services and prefix."""
        with self._lock:
            built = self._by_prefix.get(study.prefix)
            if built is None:
                built = self._by_prefix[study.prefix] = self._build(base, study)
            return built

    def _build(self, base: Services, study: Study) -> tuple[Services, StudyGate]:
        settings = base.settings
        layout = study.layout
        services = replace(
            base,
            settings=settings.model_copy(update={"data_prefix": study.prefix}),
            layout=layout,
            uploads=upload_pipeline(base.store, layout, settings),
        )
        return services, StudyGate(base.store, settings.data_prefix)

    async def registry_now(self, settings: Settings) -> Registry:
        """The registry as this process sees it (re-read off the event loop when stale)."""
        if self.registry.is_fresh():
            snapshot = self.registry.snapshot
            assert snapshot is not None
            return snapshot
        with storage_unavailable(
            "cannot read the study registry: storage unavailable; nothing was stored, please retry",
            retry_after=settings.retry_after_seconds,
            log_context="study registry",
        ):
            try:
                return await run_in_threadpool(self.registry.current)
            except InvalidStudy as exc:
                # A damaged registry must not send uploads anywhere: refuse, retryably, and say why.
                raise StorageError(f"the study registry is damaged: {exc}") from exc

    async def route(self, base: Services, value: Any, origin: str | None) -> StudyRoute:
        """The study an upload (or batch item, or restore) names; raises the study refusals.

        ``base``: the default study's services, which an upload without ``studyId`` goes to.
        """
        study_id = value.get(STUDY_FIELD) if isinstance(value, dict) else None
        if study_id is None:
            await self._check_default_origin(base.settings, origin)
            return StudyRoute(base)
        if not is_valid_participant_id(study_id):
            raise InvalidUpload(
                f"studyId must be 1 to 64 letters, digits, '_' or '-' (got {preview(study_id)})"
            )
        study = (await self.registry_now(base.settings)).get(study_id)
        if study is None:
            raise UnknownStudy(f"no study {study_id} is registered on this collector")
        if study.status == "archived":
            raise StudyArchived(f"study {study_id} is archived; nothing more is stored")
        if origin is not None and not study.allows_origin(origin):
            raise OriginRefused(f"study {study_id} does not take uploads from {preview(origin)}")
        services, gate = self.services_for(base, study)
        return StudyRoute(services, study, gate)

    async def _check_default_origin(self, settings: Settings, origin: str | None) -> None:
        """Keep the default study's origins what ``ALLOWED_ORIGINS`` says.

        The CORS preflight now also lets the registered studies' origins through; a page on one
        of them uploading without ``studyId`` (to the default study, which ALLOWED_ORIGINS does
        not open to it) is refused rather than stored in the wrong study. Without registered
        studies this reads nothing and refuses nothing.
        """
        allowed = settings.cors_origins
        if origin is None or "*" in allowed or origin in allowed:
            return
        snapshot = self.registry.snapshot
        if snapshot is None or not self.registry.is_fresh():
            try:
                snapshot = await self.registry_now(settings)
            except StorageUnavailable:  # storage trouble: decide by what was read last, if anything
                snapshot = self.registry.snapshot
        if snapshot is not None and origin in snapshot.origins():
            raise OriginRefused(
                f"{preview(origin)} belongs to a registered study: send its uploads with studyId"
            )
