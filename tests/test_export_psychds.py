"""``collector export --format psychds``: a whole Psych-DS dataset, and the checks that judge it.

The dataset is exported from a synthetic study on both backends and must pass the package's
Psych-DS checks; broken copies of it must not.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from collector import __version__
from collector.cli import main
from collector.erasure import erase_participant
from collector.export.psychds import data_file_name, identifier_from_keyword, keyword_value
from collector.export.psychds_check import check_dataset
from collector.keys import KeyLayout
from collector.settings import Settings
from collector.storage import ObjectStore
from tests.support.analysis_bucket import KEY_HASH, seed_analysis_bucket
from tests.support.collector_process import settings_environment


def export_psychds(settings: Settings, out: Path, *extra: str) -> str:
    result = CliRunner(env=settings_environment(settings)).invoke(
        main, ["export", "--out", str(out), "--format", "psychds", *extra]
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def dataset(store: ObjectStore, layout: KeyLayout, settings: Settings, tmp_path: Path) -> Path:
    seed_analysis_bucket(store, layout)
    out = tmp_path / "dataset"
    output = export_psychds(settings, out, "--name", "Synthetic volcano study", "--description", "Made up.")
    assert "passes the Psych-DS 1.5.1 checks" in output
    return out


def _header(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as source:
        return next(csv.reader(source))


def test_a_real_export_is_a_valid_dataset(dataset: Path, store: ObjectStore, layout: KeyLayout) -> None:
    result = check_dataset(dataset)
    assert result.ok, result.errors
    description = json.loads((dataset / "dataset_description.json").read_text(encoding="utf-8"))
    assert description["@context"] == "https://schema.org/" and description["@type"] == "Dataset"
    assert description["name"] == "Synthetic volcano study" and description["description"] == "Made up."
    assert description["creator"]["softwareVersion"] == __version__

    data_files = sorted(dataset.glob("data/**/*_data.csv"))
    assert sorted(p.relative_to(dataset).as_posix() for p in data_files) == sorted(
        [
            *(f"data/study-default_description-{t}_data.csv" for t in ("participants", "submissions")),
            *(f"data/study-default_description-{t}_data.csv" for t in ("sessions", "responses", "trials")),
            "data/study-default_description-trialx5fsessions_data.csv",
            "data/trials/study-default_subject-SYNTHx2d01x5fx78_session-runx5fA_data.csv",
            "data/trials/study-default_subject-SYNTH02_session-b2_data.csv",
        ]
    )
    # Every column of every data file is described, with the data dictionary's meaning.
    described = {entry["name"]: entry for entry in description["variableMeasured"]}
    for path in data_files:
        for name in _header(path):
            assert name in described, (path.name, name)
            assert described[name]["@type"] == "PropertyValue" and described[name]["description"]
    assert described["trial_count"]["description"] == "Trials stored for the session."
    assert described["'=sum"]["description"] == 'trialData field "=sum".'  # as the CSV header shows it

    # The per-session files: their names decode back to the IDs, which their columns also hold.
    session_file = dataset / "data/trials" / data_file_name("default", subject="SYNTH-01_x", session="run_A")
    with session_file.open(encoding="utf-8", newline="") as source:
        rows = list(csv.DictReader(source))
    assert [row["trial_index"] for row in rows] == ["0", "1", "2", "3"]
    assert {(row["participant_id"], row["session_id"]) for row in rows} == {("SYNTH-01_x", "run_A")}
    keywords = dict(pair.split("-", 1) for pair in session_file.name.removesuffix("_data.csv").split("_"))
    assert identifier_from_keyword(keywords["subject"]) == "SYNTH-01_x"
    assert identifier_from_keyword(keywords["session"]) == "run_A"

    # The stored JSON, as stored; the erased participant nowhere; the key hash never.
    raw = dataset / "data/raw/participants"
    copied = 0
    for info in store.list(layout.participant_dir("SYNTH-01_x")):
        relative = info.key[len(layout.participants_root) :]
        assert (raw / relative).read_bytes() == store.get(info.key).body
        copied += 1
    assert copied == 6  # status, submission, 4 trials
    assert not (raw / "SYNTH04").exists()
    for path in dataset.rglob("*"):
        if path.is_file():
            text = path.read_bytes()
            assert KEY_HASH.encode() not in text and b"participantKeyHash" not in text, path
            assert b"SYNTH04" not in text, path
    status = json.loads((raw / "SYNTH02/user-status/status.json").read_text(encoding="utf-8"))
    assert status["participantId"] == "SYNTH02" and status["tutorialCompleted"] is False


@pytest.mark.parametrize("backend", ["local"])
def test_the_checks_reject_broken_datasets(dataset: Path, tmp_path: Path) -> None:
    def broken(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(dataset, copy)
        return copy

    missing_variable = broken("missing-variable")
    path = missing_variable / "dataset_description.json"
    description = json.loads(path.read_text(encoding="utf-8"))
    description["variableMeasured"] = [v for v in description["variableMeasured"] if v["name"] != "rt"]
    path.write_text(json.dumps(description), encoding="utf-8")
    result = check_dataset(missing_variable)
    assert "CSV_COLUMN_MISSING_FROM_METADATA" in result.codes()
    assert any("rt" in issue.detail for issue in result.errors)

    bad_name = broken("bad-name")
    shutil.copy(bad_name / "data/study-default_description-sessions_data.csv", bad_name / "data/sessions.csv")
    result = check_dataset(bad_name)
    assert result.codes() == {"FILENAME_KEYWORD_FORMATTING_ERROR"}
    assert [issue.path for issue in result.errors] == ["data/sessions.csv"]

    latin = broken("not-utf8")
    latin_file = latin / "data/study-default_description-extra_data.csv"
    latin_file.write_bytes("participant_id\nÅsa\n".encode("latin-1"))
    assert check_dataset(latin).codes() == {"FILE_NOT_READ"}

    extra_variable = broken("extra-variable")
    path = extra_variable / "dataset_description.json"
    description = json.loads(path.read_text(encoding="utf-8"))
    description["variableMeasured"].append({"@type": "PropertyValue", "name": "not_a_column"})
    path.write_text(json.dumps(description), encoding="utf-8")
    assert check_dataset(extra_variable).codes() == {"VARIABLE_MISSING_FROM_CSV_COLUMNS"}

    wrong_type = broken("wrong-type")
    path = wrong_type / "dataset_description.json"
    description = json.loads(path.read_text(encoding="utf-8"))
    description["@type"] = "CreativeWork"
    del description["name"]
    path.write_text(json.dumps(description), encoding="utf-8")
    assert check_dataset(wrong_type).codes() == {"INCORRECT_DATASET_TYPE", "JSON_KEY_REQUIRED"}

    ragged = broken("ragged")
    with (ragged / "data/study-default_description-sessions_data.csv").open("a", encoding="utf-8") as out:
        out.write("only,two\n")
    assert check_dataset(ragged).codes() == {"CSV_HEADER_LENGTH_MISMATCH"}

    repeated = broken("repeated")
    (repeated / "data/study-default_description-extra_data.csv").write_text("rt,rt\n1,2\n", encoding="utf-8")
    assert check_dataset(repeated).codes() == {"CSV_HEADER_REPEATED"}

    no_description = broken("no-description")
    (no_description / "dataset_description.json").unlink()
    assert "MISSING_DATASET_DESCRIPTION" in check_dataset(no_description).codes()

    no_data = broken("no-data")
    shutil.rmtree(no_data / "data")
    assert "MISSING_DATA_DIRECTORY" in check_dataset(no_data).codes()


@pytest.mark.parametrize("backend", ["local"])
def test_metadata_is_inherited_by_sidecars(dataset: Path) -> None:
    """A sidecar replaces variableMeasured for its file only (Psych-DS inheritance: whole keys)."""
    sidecar = dataset / "data/study-default_description-sessions_data.json"
    sidecar.write_text(json.dumps({"variableMeasured": ["participant_id"]}), encoding="utf-8")
    result = check_dataset(dataset)
    assert result.codes() == {"CSV_COLUMN_MISSING_FROM_METADATA"}
    assert [issue.path for issue in result.errors] == ["data/study-default_description-sessions_data.csv"]


def test_keyword_values_are_letters_and_digits_and_reversible() -> None:
    for identifier in ("P001ABC", "SYNTH-01_x", "x", "xx2d", "a_b-c", "Ōk"):
        value = keyword_value(identifier)
        assert value.isascii() and value.isalnum(), value
        assert identifier_from_keyword(value) == identifier
    assert keyword_value("P-01_a") == "Px2d01x5fa"


@pytest.mark.parametrize("backend", ["local"])
def test_an_earlier_dataset_is_replaced_whole_and_other_folders_refused(
    dataset: Path, store: ObjectStore, layout: KeyLayout, settings: Settings, tmp_path: Path
) -> None:
    """After an erasure, exporting again into the same folder must leave nothing of the erased."""
    erase_participant(store, layout, "SYNTH02", who="test", reason="withdrew (synthetic)", settle_seconds=0)
    export_psychds(settings, dataset)
    assert not list(dataset.rglob("*SYNTH02*"))
    assert check_dataset(dataset).ok
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    result = CliRunner(env=settings_environment(settings)).invoke(
        main, ["export", "--out", str(other), "--format", "psychds"]
    )
    assert result.exit_code == 1 and "holds no Psych-DS dataset" in result.output
    assert (other / "notes.txt").read_text(encoding="utf-8") == "mine"


HOSTILE_FIELDS = {"=cmd|' /C calc'!A0": 1, "a,b\nc": 2, '"q"': 3, "": 4, "participant_id": 5, "Ōk 🌋": "x"}


@pytest.mark.parametrize("backend", ["local"])
@pytest.mark.parametrize("fmt", ["psychds", "sav", "dta", "csv"])
def test_hostile_trial_field_names_make_valid_files(
    store: ObjectStore, layout: KeyLayout, settings: Settings, tmp_path: Path, fmt: str
) -> None:
    """Field names are the participant's: formulas, commas, newlines, quotes, emoji, taken names."""
    document = {"participantId": "SYNTH5", "uploadType": "trial", "sessionId": "s", "trialIndex": 0}
    store.put(
        layout.trial_key("SYNTH5", "s", 0), json.dumps({**document, "trialData": HOSTILE_FIELDS}).encode()
    )
    result = CliRunner(env=settings_environment(settings)).invoke(
        main, ["export", "--out", str(tmp_path / "out"), "--format", fmt]
    )
    assert result.exit_code == 0, result.output
    if fmt == "psychds":
        assert check_dataset(tmp_path / "out").ok
        names = {
            v["name"]
            for v in json.loads((tmp_path / "out/dataset_description.json").read_text())["variableMeasured"]
        }
        assert {"'=cmd|' /C calc'!A0", "a,b\nc", '"q"', "data_", "data_participant_id", "Ōk 🌋"} <= names
    elif fmt in ("sav", "dta"):
        import pyreadstat

        read = pyreadstat.read_sav if fmt == "sav" else pyreadstat.read_dta
        frame, meta = read(str(tmp_path / "out" / f"trials.{fmt}"))
        assert len(frame.columns) == len(set(c.lower() for c in frame.columns))
        assert 'trialData field "a,b\\nc".' in meta.column_names_to_labels.values()
    else:
        spec = importlib.util.spec_from_file_location("hostile_loader", tmp_path / "out" / "load.py")
        assert spec is not None and spec.loader is not None
        loader = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(loader)
        trials = loader.load_table("trials")
        assert trials["=cmd|' /C calc'!A0"].iloc[0] == 1 and trials["a,b\nc"].iloc[0] == 2
        assert trials["Ōk 🌋"].iloc[0] == "x"
