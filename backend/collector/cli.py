"""The ``collector`` command line: ``serve``, the research tools ``export``, ``verify``, ``erase``,
``reconcile``, ``report`` and ``release-key`` (each with ``--study ID``), and ``study``
(collector.studies.cli)."""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import uvicorn
from pydantic import ValidationError

from .admin.password import StoredPassword, generated_password
from .completeness import report_lines, study_completeness
from .erasure import ErasureRefused, erase_participant, preview_erasure
from .errors import NotFound
from .export import ExportDependencyMissing, ExportFailed
from .export.formats import DIRECTORY_FORMATS, export_directory
from .keys import KeyLayout, is_valid_participant_id, parse_timestamp
from .metrics import Metrics
from .participant_keys import release_key
from .progress import ObjectProgress
from .reconcile import (
    NotAnExport,
    read_prolific,
    read_qualtrics,
    recover,
    scan_backup,
    summary_lines,
    write_rows,
)
from .reconcile import reconcile as match_backup
from .settings import Settings, is_placeholder_password
from .storage import (
    ConditionalWritesIgnored,
    ObjectStore,
    RetryingStore,
    StorageError,
    open_store,
    prove_conditional_writes,
)
from .studies.cli import settings_for_study, study_option
from .studies.cli import study as study_commands
from .studies.export_all import ALL_STUDIES_FORMATS, export_all_studies
from .studies.registry import InvalidStudy, read_registry
from .verify import VerifyFailed, verify_bucket
from .web.header_timeout import header_timeout_protocol

logger = logging.getLogger("collector")


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with command-line overrides; a clean error if invalid."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid configuration: {configuration_problems(exc)}") from None
    given = {k: v for k, v in overrides.items() if v is not None}
    return settings.model_copy(update=given) if given else settings


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def configuration_problems(exc: ValidationError) -> str:
    """What is wrong, naming each variable; never the values (they may be secrets)."""
    problems = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        names = [str(part).upper() for part in error["loc"]]
        problems.append(f"{names[0]}: {message}" if names else message)
    return "; ".join(problems)


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
    settings = load_settings(host=host, port=port, workers=workers)
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
    if not settings.cors_origins:
        logger.warning(
            "ALLOWED_ORIGINS is unset: browsers on other origins cannot upload. "
            "Set it to the study's origin, e.g. ALLOWED_ORIGINS=https://study.example.org"
        )
    reachable = refuse_a_bucket_without_conditional_writes(settings)
    if not settings.admin_password and reachable:
        print_generated_admin_password(settings)
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
        # httptools' parser (uvicorn's own protocol, one timer more: uvicorn has no timeout for a
        # connection that sends no complete request headers), on the event loop EVENT_LOOP names.
        http=header_timeout_protocol(settings.header_timeout_seconds),
        loop=settings.event_loop,
    )


def refuse_a_bucket_without_conditional_writes(settings: Settings) -> bool:
    """Stop here, with a plain message, when the bucket ignores conditional writes; False when
    the bucket cannot be reached (the server starts anyway and answers 503 until it can).

    Each server process proves it again at start (``create_app``), which also keeps answering 503
    while the bucket cannot be reached; this check only gives the refusal a clean message.
    """
    if settings.storage_kind != "s3":
        return True
    store = RetryingStore(open_store(settings), Metrics(), deadline_seconds=settings.storage_deadline_seconds)
    try:
        prove_conditional_writes(store, KeyLayout(settings.data_prefix).conditional_probe_key)
    except ConditionalWritesIgnored as exc:
        raise click.ClickException(f"refusing to start: {exc}") from None
    except StorageError as exc:
        logger.warning(
            "⚠️ Bucket not reachable yet (%s); starting anyway, uploads wait for it. The dashboard "
            "password, if none is stored yet, is generated and logged at the first login attempt",
            exc,
        )
        return False
    finally:
        store.close()
    return True


def print_generated_admin_password(settings: Settings) -> None:
    """Without ADMIN_PASSWORD the dashboard password is kept hashed in the bucket; the first start
    generates it and prints it, once: later starts, other workers and instances use the stored one."""
    store = RetryingStore(open_store(settings), Metrics(), deadline_seconds=settings.storage_deadline_seconds)
    try:
        generated = StoredPassword(store, KeyLayout(settings.data_prefix).admin_password_key).ensure()
    except StorageError as exc:
        logger.warning(
            "⚠️ Cannot reach the storage to set up the dashboard password (%s); the first login "
            "attempt will, or run `collector admin-password`",
            exc,
        )
        return
    finally:
        store.close()
    if generated is None:
        logger.info("Dashboard password: the one stored (hashed); `collector admin-password` sets another")
    else:
        click.echo(
            f"Admin dashboard password (generated): {generated}\n"
            "Shown only now: it is kept hashed in the storage. `collector admin-password` sets another.",
            err=True,
        )


def open_bucket(settings: Settings) -> ObjectStore:
    """The configured store, checked, with transient failures retried; a clear error if unusable."""
    store = RetryingStore(open_store(settings), Metrics(), deadline_seconds=30.0)
    try:
        store.check()
    except StorageError as exc:
        store.close()
        raise click.ClickException(_storage_hint(settings, exc)) from exc
    return store


def _storage_hint(settings: Settings, exc: StorageError) -> str:
    text = str(exc)
    if settings.storage_kind == "local":
        return f"cannot use the local folder: {text}"
    if "(HTTP 404)" in text or "NoSuchBucket" in text:
        return f"bucket {settings.r2_bucket_name!r} does not exist at {settings.endpoint_url} ({text})"
    if "(HTTP 403)" in text or "(HTTP 401)" in text or "(HTTP 400)" in text:
        return f"the bucket refused the credentials; check R2_ACCESS_KEY_ID/R2_SECRET_ACCESS_KEY ({text})"
    return f"cannot reach the bucket: {text}"


def _since(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = parse_timestamp(value if "T" in value else f"{value}T00:00:00Z")
    if moment is None:
        raise click.BadParameter("use a date like 2025-11-19 or 2025-11-19T14:30:00Z", param_hint="--since")
    return moment.astimezone(UTC)


@main.command()
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the tables and README into (created if missing).",
)
@click.option("--format", "fmt", type=click.Choice(DIRECTORY_FORMATS), default="csv", show_default=True)
@click.option("--participant", "participants", multiple=True, help="Only this participant (repeatable).")
@click.option("--since", help="Only what was uploaded on or after this date (YYYY-MM-DD, UTC).")
@click.option("--strict", is_flag=True, help="Stop at the first corrupt object instead of skipping it.")
@click.option(
    "--workers", type=click.IntRange(1, 256), default=32, show_default=True, help="Objects read at once."
)
@click.option("--name", default="Participant data", show_default=True, help="Dataset name (psychds).")
@click.option(
    "--description",
    default="Data backed up by the participant-data collector during a browser-based study.",
    help="Dataset description (psychds).",
)
@study_option
@click.option(
    "--all-studies",
    is_flag=True,
    help="Every study in one set of tables with a study_id column (csv, jsonl, parquet).",
)
def export(
    out_dir: Path,
    fmt: str,
    participants: tuple[str, ...],
    since: str | None,
    strict: bool,
    workers: int,
    name: str,
    description: str,
    study_id: str | None,
    all_studies: bool,
) -> None:
    """Export the bucket as tables (participants, submissions, sessions, responses, trials,
    trial_sessions) + data dictionary; or as a Psych-DS dataset, SPSS or Stata files."""
    configure_logging()
    for pid in participants:
        if not is_valid_participant_id(pid):
            raise click.BadParameter(f"not a participant ID: {pid!r}", param_hint="--participant")
    if all_studies and study_id is not None:
        raise click.UsageError("give --study or --all-studies, not both")
    if all_studies and fmt not in ALL_STUDIES_FORMATS:
        raise click.UsageError(
            f"--all-studies writes {', '.join(ALL_STUDIES_FORMATS)}; export other formats per study"
        )
    settings = load_settings()
    store = open_bucket(settings)
    try:
        settings = settings_for_study(settings, store, study_id)
        if all_studies:
            with ObjectProgress("Exporting") as progress:
                everything = export_all_studies(
                    store,
                    settings.data_prefix,
                    out_dir,
                    fmt=fmt,  # type: ignore[arg-type]
                    participant_ids=participants,
                    since=_since(since),
                    strict=strict,
                    workers=workers,
                    progress=progress,
                )
            counts = ", ".join(f"{count} {table}" for table, count in everything.rows.items())
            click.echo(f"Exported {counts} from {len(everything.studies)} studies into {out_dir}", err=True)
            if everything.problems:
                click.echo(f"{len(everything.problems)} corrupt object(s) left out (keys above)", err=True)
            return
        with ObjectProgress("Exporting") as progress:
            result = export_directory(
                store,
                KeyLayout(settings.data_prefix),
                out_dir,
                fmt=fmt,
                name=name,
                description=description,
                participant_ids=participants,
                since=_since(since),
                strict=strict,
                workers=workers,
                progress=progress,
            )
    except (ExportFailed, ExportDependencyMissing, InvalidStudy) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    report = result.report
    counts = ", ".join(f"{count} {name}" for name, count in report.rows.items())
    click.echo(f"Exported {counts} into {out_dir}", err=True)
    for note in result.notes:
        click.echo(note, err=True)
    if report.problems:  # each was logged with its key as it was met
        click.echo(f"{len(report.problems)} corrupt object(s) left out (keys above)", err=True)


@main.command()
@click.option(
    "--workers", type=click.IntRange(1, 256), default=32, show_default=True, help="Objects read at once."
)
@click.option(
    "--max-listed", type=int, default=50, show_default=True, help="Defects listed per kind (all are counted)."
)
@study_option
def verify(workers: int, max_listed: int, study_id: str | None) -> None:
    """Check the bucket against the layout; exit status 1 when anything is wrong."""
    configure_logging()
    settings = load_settings()
    store = open_bucket(settings)
    try:
        settings = settings_for_study(settings, store, study_id)
        with ObjectProgress("Verifying") as progress:
            report = verify_bucket(
                store, KeyLayout(settings.data_prefix), workers=workers, on_object=progress.advance
            )
    except VerifyFailed as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()
    shown: dict[str, int] = {}
    for defect in report.defects:
        shown[defect.kind] = shown.get(defect.kind, 0) + 1
        if shown[defect.kind] <= max_listed:
            click.echo(f"{defect.kind}: {defect.key} ({defect.detail})")
    click.echo(
        f"{report.objects} objects, {report.participants} participants, {report.statuses} status "
        f"files, {report.submissions} submissions, {report.trials} trials"
        + (f", {report.erased} erased participant(s)" if report.erased else "")
        + (f", {report.audit_records} audit record(s)" if report.audit_records else "")
        + "; "
        + (
            "no problems found"
            if report.ok
            else f"{len(report.defects)} problem(s): "
            + ", ".join(f"{report.count(kind)} {kind}" for kind in shown)
        )
    )
    if not report.ok:
        sys.exit(1)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name for this uid (e.g. in a container)
        return f"uid {os.getuid()}"


@main.command()
@click.argument("participant_id")
@click.option(
    "--reason", required=True, help="Why (e.g. 'withdrew 2025-11-20, ticket 42'); kept in the audit record."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@study_option
def erase(participant_id: str, reason: str, yes: bool, study_id: str | None) -> None:
    """Delete every object of one participant, leave a tombstone, write an audit record.

    Later uploads for that ID are refused. Run it again to finish an interrupted erasure.
    """
    configure_logging()
    settings = load_settings()
    store = open_bucket(settings)
    try:
        settings = settings_for_study(settings, store, study_id)
        layout = KeyLayout(settings.data_prefix)
        try:
            preview = preview_erasure(store, layout, participant_id)
        except ErasureRefused as exc:
            raise click.BadParameter(str(exc), param_hint="PARTICIPANT_ID") from exc
        if preview.erased_at is not None and not preview.objects and not preview.unfinished:
            click.echo(
                f"Participant {participant_id} was already erased at {preview.erased_at}; nothing to do."
            )
            return
        if not yes:
            what = (
                f"{len(preview.objects)} object(s) of participant {participant_id}"
                if preview.objects
                else f"participant {participant_id} (nothing stored; later uploads will be refused)"
            )
            if preview.unfinished:
                what += " (finishing an interrupted erasure)"
            click.confirm(f"Erase {what}? This cannot be undone", abort=True, err=True)
        try:
            result = erase_participant(
                store,
                layout,
                participant_id,
                who=_os_user(),
                reason=reason,
                settle_seconds=settings.erasure_settle_seconds,
            )
        except ErasureRefused as exc:
            raise click.UsageError(str(exc)) from exc
        except StorageError as exc:
            raise click.ClickException(f"erasure not finished ({exc}); run the same command again") from exc
    finally:
        store.close()
    unhashed = sum(1 for o in result.objects if o.sha256 is None)
    click.echo(
        f"Erased participant {participant_id}: {len({o.key for o in result.objects})} object(s) deleted"
        + (f" ({unhashed} gone before they could be hashed)" if unhashed else "")
        + (", finishing an interrupted erasure" if result.resumed else "")
        + f"; audit record {', '.join(result.audit_keys)}"
    )


@main.command()
@click.option(
    "--qualtrics",
    "qualtrics_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The Qualtrics responses export (CSV).",
)
@click.option("--id-column", help="The Qualtrics export's column holding the participant ID.")
@click.option(
    "--prolific",
    "prolific_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The Prolific submissions export (CSV, 'Download summary').",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the table here (CSV) instead of standard output.",
)
@click.option(
    "--recover",
    "recover_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write the latest verified submission (JSON) and status fields (CSV) of every participant "
    "in the bucket with no real Qualtrics response here.",
)
@study_option
def reconcile(
    qualtrics_path: Path | None,
    id_column: str | None,
    prolific_path: Path | None,
    out_path: Path | None,
    recover_dir: Path | None,
    study_id: str | None,
) -> None:
    """Compare the bucket with a Qualtrics export, a Prolific export, or both: one row per
    participant ID with its category."""
    configure_logging()
    if qualtrics_path is None and prolific_path is None:
        raise click.UsageError("give --qualtrics FILE --id-column COLUMN, --prolific FILE, or both")
    if qualtrics_path is not None and not id_column:
        raise click.UsageError("--qualtrics needs --id-column (the column holding the participant ID)")
    if recover_dir is not None and qualtrics_path is None:
        raise click.UsageError("--recover needs --qualtrics: it recovers what Qualtrics lost")
    try:
        qualtrics = read_qualtrics(qualtrics_path, id_column or "") if qualtrics_path else None
        prolific = read_prolific(prolific_path) if prolific_path else None
    except NotAnExport as exc:
        raise click.ClickException(str(exc)) from exc
    for ledger in (qualtrics, prolific):
        for warning in ledger.warnings if ledger else ():
            click.echo(f"Warning: {warning}", err=True)
    settings = load_settings()
    store = open_bucket(settings)
    try:
        settings = settings_for_study(settings, store, study_id)
        backup = scan_backup(store, KeyLayout(settings.data_prefix))
        result = match_backup(backup, qualtrics=qualtrics, prolific=prolific)
        if out_path is None:
            write_rows(result, sys.stdout)
        else:
            with out_path.open("w", encoding="utf-8", newline="") as out:
                write_rows(result, out)
        recovered = recover(store, backup, result, recover_dir) if recover_dir is not None else None
    except StorageError as exc:
        raise click.ClickException(f"cannot read the bucket: {exc}") from exc
    finally:
        store.close()
    for line in summary_lines(result):
        click.echo(line, err=True)
    if out_path is not None:
        click.echo(f"Table written to {out_path}", err=True)
    if recovered is not None:
        click.echo(
            f"Recovered {len(recovered.participants)} participant(s) into {recover_dir}"
            + (
                f"; {len(recovered.unverified_only)} had only unverified submissions, not recovered: "
                + ", ".join(recovered.unverified_only)
                if recovered.unverified_only
                else ""
            ),
            err=True,
        )


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON, for scripts.")
@click.option(
    "--workers", type=click.IntRange(1, 256), default=32, show_default=True, help="Objects read at once."
)
@study_option
@click.option("--all-studies", is_flag=True, help="Every study: the default one, then each registered one.")
def report(as_json: bool, workers: int, study_id: str | None, all_studies: bool) -> None:
    """Completeness per study: participants started, finished, with missing trials, withdrawn."""
    configure_logging()
    if all_studies and study_id is not None:
        raise click.UsageError("give --study or --all-studies, not both")
    settings = load_settings()
    store = open_bucket(settings)
    try:
        targets = [(study_id or "default", settings_for_study(settings, store, study_id).data_prefix)]
        if all_studies:
            registered = read_registry(store, settings.data_prefix).studies.values()
            targets += [(entry.id, entry.prefix) for entry in registered]
        studies = [
            study_completeness(store, KeyLayout(prefix), study=name, workers=workers)
            for name, prefix in targets
        ]
    except (StorageError, InvalidStudy) as exc:
        raise click.ClickException(f"cannot read the bucket: {exc}") from exc
    finally:
        store.close()
    if as_json:
        click.echo(
            json.dumps({"studies": [study.as_json() for study in studies]}, ensure_ascii=False, indent=2)
        )
    else:
        click.echo("\n\n".join("\n".join(report_lines(study)) for study in studies))


@main.command("release-key")
@click.argument("participant_id")
@click.option("--reason", required=True, help="Why (kept in the audit record), e.g. 'new laptop'.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@study_option
def release_key_command(participant_id: str, reason: str, yes: bool, study_id: str | None) -> None:
    """Release a participant's key (they changed device): their next keyed upload claims them again.

    Recorded under {prefix}/audit/key-releases/ (who, when, why; never the key or its hash).
    """
    configure_logging()
    if not is_valid_participant_id(participant_id):
        raise click.BadParameter(f"not a participant ID: {participant_id!r}", param_hint="PARTICIPANT_ID")
    if not reason.strip():
        raise click.BadParameter("give a reason", param_hint="--reason")
    if not yes:
        click.confirm(
            f"Release the participant key of {participant_id}? Until their browser uploads again, "
            "anyone who knows the ID can claim them.",
            abort=True,
        )
    settings = load_settings()
    store = open_bucket(settings)
    try:
        settings = settings_for_study(settings, store, study_id)
        result = release_key(
            store, KeyLayout(settings.data_prefix), participant_id, reason=reason, by=_os_user()
        )
    except NotFound as exc:
        raise click.ClickException(exc.message) from exc
    except StorageError as exc:
        raise click.ClickException(f"storage failed; nothing released: {exc}") from exc
    finally:
        store.close()
    if result.released:
        click.echo(f"Released the key of {participant_id}; recorded at {result.audit_key}")
    else:
        click.echo(f"{participant_id} held no key; the request was recorded at {result.audit_key}")


@main.command("admin-password")
@click.option("--generate", is_flag=True, help="Generate a password and print it, instead of asking for one.")
def admin_password(generate: bool) -> None:
    """Set the dashboard password (kept hashed in the storage; ADMIN_PASSWORD, when set, still wins).

    Every running worker and instance uses it within seconds; open dashboard sessions end.
    """
    configure_logging()
    settings = load_settings()
    if generate:
        password = generated_password()
    else:
        password = click.prompt("New dashboard password", hide_input=True, confirmation_prompt=True, err=True)
        if len(password) < 10 or is_placeholder_password(password):
            raise click.BadParameter(
                "use at least 10 characters, and not a placeholder", param_hint="password"
            )
    store = open_bucket(settings)
    try:
        StoredPassword(store, KeyLayout(settings.data_prefix).admin_password_key).replace(password)
    except StorageError as exc:
        raise click.ClickException(f"storage failed; the password is unchanged: {exc}") from exc
    finally:
        store.close()
    if generate:
        click.echo(f"Admin dashboard password: {password}")
    click.echo("Dashboard password set; it applies within seconds and ends open sessions.", err=True)
    if settings.admin_password:
        click.echo(
            "Note: ADMIN_PASSWORD is set here and wins over the stored password where it is set.", err=True
        )


main.add_command(study_commands)
