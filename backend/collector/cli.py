"""The ``collector`` command line: ``serve`` (and, with the research tools, ``export``/``verify``)."""

from __future__ import annotations

import logging
import os
import sys

import click
import uvicorn
from pydantic import ValidationError

from .settings import Settings

logger = logging.getLogger("collector")


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with command-line overrides; a clean error if invalid."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid configuration: {exc}") from exc
    given = {k: v for k, v in overrides.items() if v is not None}
    return settings.model_copy(update=given) if given else settings


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group()
def main() -> None:
    """Participant-data collector for browser-based research studies."""


@main.command()
@click.option("--host", help="Interface to listen on [env HOST, default 127.0.0.1].")
@click.option("--port", type=int, help="Port [env PORT, default 5005].")
@click.option("--workers", type=int, help="Server processes [env WORKERS, default 1].")
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Run the collector until interrupted."""
    configure_logging()
    settings, generated = load_settings(host=host, port=port, workers=workers).with_generated_admin_password()
    if generated:
        # Like Jupyter's token: printed once, handed to every worker through the environment.
        click.echo(f"Admin dashboard password (generated): {settings.admin_password}", err=True)
    os.environ["ADMIN_PASSWORD"] = settings.admin_password or ""
    where = (
        f"bucket {settings.r2_bucket_name} at {settings.endpoint_url or 'AWS S3'}"
        if settings.storage_kind == "s3"
        else f"local folder {settings.local_storage_dir.absolute()}"
    )
    logger.info(
        "Collector on http://%s:%d storing into %s (%d worker(s))",
        settings.host,
        settings.port,
        where,
        settings.workers,
    )
    # Workers re-read the environment; overrides from the command line travel the same way.
    os.environ.update({"HOST": settings.host, "PORT": str(settings.port), "WORKERS": str(settings.workers)})
    uvicorn.run(
        "collector.app:create_app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level="info",
        access_log=False,
        timeout_keep_alive=5,
    )
