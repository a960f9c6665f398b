"""The early warning on a local folder's free space: under ``FREE_SPACE_WARNING_BYTES``, /healthz
says so while uploads are still stored (the refusals start lower, at ``MIN_FREE_BYTES``)."""

from __future__ import annotations

import os
from pathlib import Path

from ..settings import Settings


def low_on_space(settings: Settings) -> bool:
    """True when a local folder's filesystem has less free space than the warning threshold."""
    if settings.storage_kind != "local" or not settings.free_space_warning_bytes:
        return False
    where = Path(settings.local_storage_dir).resolve()
    while not where.exists() and where.parent != where:
        where = where.parent  # the folder is made at the first write: ask its filesystem
    try:
        stats = os.statvfs(where)
    except OSError:
        return False  # the storage check itself reports an unusable folder
    return stats.f_bavail * stats.f_frsize < settings.free_space_warning_bytes
