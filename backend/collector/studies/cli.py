"""``collector study ...`` (add, set, list, show) and the tools' ``--study ID`` (docs/studies.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..settings import Settings
from ..storage import ObjectStore, StorageError
from .admission import read_admissions
from .manage import change_study_settings, register_study
from .registry import STUDY_STATUSES, InvalidStudy, Study, make_study, read_registry

F = TypeVar("F", bound=Callable[..., Any])


def study_option(function: F) -> F:
    """``--study ID`` on a research tool: run it on that registered study instead of the default."""
    return click.option(
        "--study",
        "study_id",
        metavar="ID",
        help="A registered study (collector study list); default: the default study (DATA_PREFIX).",
    )(function)


def settings_for_study(settings: Settings, store: ObjectStore, study_id: str | None) -> Settings:
    """The settings a tool runs with on ``study_id``: the same, with the study's prefix.

    Every tool works on one prefix (``settings.data_prefix``), so running it on a study needs
    nothing else; an unknown ID is a usage error, never the default study by accident.
    """
    if study_id is None:
        return settings
    study = _registered(store, settings, study_id)
    return settings.model_copy(update={"data_prefix": study.prefix})


def _registered(store: ObjectStore, settings: Settings, study_id: str) -> Study:
    try:
        study = read_registry(store, settings.data_prefix).get(study_id)
    except (InvalidStudy, StorageError) as exc:
        raise click.ClickException(f"cannot read the study registry: {exc}") from exc
    if study is None:
        raise click.BadParameter(f"no study {study_id!r} is registered (see `collector study list`)")
    return study


def _tools() -> tuple[Callable[..., Settings], Callable[[Settings], ObjectStore], Callable[[], str]]:
    # The command line's own helpers; imported here because that module imports this one.
    from .. import cli

    return cli.load_settings, cli.open_bucket, cli._os_user


@click.group()
def study() -> None:
    """Register and change studies: each keeps its data under its own prefix (docs/studies.md)."""


_status = click.option("--status", type=click.Choice(STUDY_STATUSES), help="open, closed or archived.")
_title = click.option("--title", help="A name the team recognises.")
_origins = click.option(
    "--origin", "origins", multiple=True, help="A page origin that may upload (repeatable)."
)
_cap = click.option(
    "--max-participants", type=click.IntRange(min=1), help="Refuse new participants beyond this many."
)
_milestones = click.option(
    "--milestone",
    "milestones",
    multiple=True,
    help="A status field the dashboard's funnel shows, in order (repeatable).",
)


@study.command("add")
@click.argument("study_id")
@_title
@_origins
@_cap
@_status
@_milestones
def add_command(
    study_id: str,
    title: str | None,
    origins: tuple[str, ...],
    max_participants: int | None,
    status: str | None,
    milestones: tuple[str, ...],
) -> None:
    """Register a new study."""
    load_settings, open_bucket, os_user = _tools()
    settings = load_settings()
    try:
        new = make_study(
            settings.data_prefix,
            study_id,
            title=title or "",
            origins=origins,
            status=status or "open",
            max_participants=max_participants,
            milestones=milestones,
        )
    except InvalidStudy as exc:
        raise click.BadParameter(str(exc)) from exc
    store = open_bucket(settings)
    try:
        added = register_study(store, settings.data_prefix, new, who=os_user())
    except InvalidStudy as exc:
        raise click.ClickException(str(exc)) from exc
    except StorageError as exc:
        raise click.ClickException(f"storage failed; nothing registered: {exc}") from exc
    finally:
        store.close()
    click.echo(f"Registered study {added.id} ({added.status}); its data goes under {added.prefix}/")


@study.command("set")
@click.argument("study_id")
@_title
@_origins
@click.option("--no-origins", is_flag=True, help="Remove every origin.")
@_cap
@click.option("--no-max-participants", is_flag=True, help="Remove the participant cap.")
@_status
@_milestones
@click.option("--no-milestones", is_flag=True, help="Remove every milestone.")
@click.option("--reason", default="", help="Why (kept in the audit record).")
def set_command(
    study_id: str,
    title: str | None,
    origins: tuple[str, ...],
    no_origins: bool,
    max_participants: int | None,
    no_max_participants: bool,
    status: str | None,
    milestones: tuple[str, ...],
    no_milestones: bool,
    reason: str,
) -> None:
    """Change a registered study; what is not given stays as it is (--origin replaces the list)."""
    changes: dict[str, Any] = {}
    if title is not None:
        changes["title"] = title
    if origins or no_origins:
        changes["origins"] = origins
    if max_participants is not None or no_max_participants:
        changes["max_participants"] = max_participants
    if status is not None:
        changes["status"] = status
    if milestones or no_milestones:
        changes["milestones"] = milestones
    if not changes:
        raise click.UsageError("nothing to change: give at least one option")
    load_settings, open_bucket, os_user = _tools()
    settings = load_settings()
    store = open_bucket(settings)
    try:
        changed = change_study_settings(
            store, settings.data_prefix, study_id, changes, who=os_user(), reason=reason
        )
    except InvalidStudy as exc:
        raise click.ClickException(str(exc)) from exc
    except StorageError as exc:
        raise click.ClickException(f"storage failed; nothing changed: {exc}") from exc
    finally:
        store.close()
    click.echo(f"Study {changed.id}: {_summary(changed)}")


def _summary(study: Study) -> str:
    cap = f"max {study.max_participants} participants" if study.max_participants else "no cap"
    origins = ", ".join(study.origins) or "no origins"
    return f"{study.status}, {cap}, {origins}"


@study.command("list")
def list_command() -> None:
    """The registered studies, one a line: ID, status, cap, origins, title."""
    load_settings, open_bucket, _ = _tools()
    settings = load_settings()
    store = open_bucket(settings)
    try:
        registry = read_registry(store, settings.data_prefix)
    except (InvalidStudy, StorageError) as exc:
        raise click.ClickException(f"cannot read the study registry: {exc}") from exc
    finally:
        store.close()
    if not registry.studies:
        click.echo("No studies registered: every upload goes to the default study.")
        return
    for entry in registry.studies.values():
        click.echo(f"{entry.id}\t{_summary(entry)}\t{entry.title}")


@study.command("show")
@click.argument("study_id")
def show_command(study_id: str) -> None:
    """One study's settings as JSON, with its admitted participants when it has a cap."""
    load_settings, open_bucket, _ = _tools()
    settings = load_settings()
    store = open_bucket(settings)
    try:
        shown = _registered(store, settings, study_id)
        document = shown.as_json()
        if shown.max_participants is not None:
            admitted = read_admissions(store, settings.data_prefix, shown)
            document["admittedParticipants"] = len(admitted) if admitted is not None else 0
    except StorageError as exc:
        raise click.ClickException(f"cannot read the bucket: {exc}") from exc
    finally:
        store.close()
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))
