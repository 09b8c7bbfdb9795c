"""The lake's tables, each declared once: name, what one row is, columns with types and comments, partitions, writer.

Every table of the ``xray`` database is a :class:`Table` in :data:`TABLES`. Writers take
their Spark schema from it (:meth:`Table.schema`), the catalog registers each with its
columns' comments (``DESCRIBE xray.<table>`` in the SQL server shows them,
:meth:`Table.ddl`), and ``docs/tables.md``'s table of tables is its
:func:`markdown` (a test keeps the two equal). Code that names a column names it by a
constant of this module where more than one module reads it (:data:`IMAGE_ID`, ...).

A table whose columns depend on a model's labels (``xray.predictions``: one ``p_`` and one
``raw_`` column per finding) declares its fixed columns and the rule for the others; its
registration reads the schema from its files.

``python -m xray_spark.lake.catalog`` prints the tables as markdown.
"""

from __future__ import annotations

import sys

from pyspark.sql import types as T

from xray_spark.lake.declare import Table, col, required

#: Columns many modules name.
IMAGE_ID = "image_id"
DATASET = "dataset"
MODEL_VERSION = "model_version"
RUN_ID = "run_id"
FINDING = "finding"
SCORED_AT = "scored_at"
SCORE_DATE = "score_date"
PATIENT_ID = "patient_id"
#: The findings a model called (at or above their thresholds), in every table and view that lists them.
CALLED = "called"
#: A DICOM patient's keyed pseudonym (HMAC-SHA256 of the Patient ID).
PATIENT_PSEUDONYM = "patient_pseudonym"
_PSEUDONYM_WORDS = "the patient's keyed pseudonym (HMAC-SHA256 of the Patient ID); never the ID itself"

_PATIENT_WORDS = "the patient's number within the dataset: NIH's, or the one given to a DICOM pseudonym"
_DATASET = required(DATASET, "string", "the dataset (store) the film belongs to")
_IMAGE = required(IMAGE_ID, "string", "the film: the NIH file name, or a DICOM film's SOP Instance UID")
_VERSION = required(MODEL_VERSION, "string", "the model version (xray.models)")
_RUN = required(RUN_ID, "string", "the run that wrote the row")

_STUDY_COLUMNS = (
    _IMAGE,
    required(PATIENT_ID, "int", _PATIENT_WORDS),
    required("follow_up", "int", "the patient's film number, in order"),
    col("age", "int", "years; null where the source's age is implausible (over 120)"),
    required("sex", "string", "M, F or O"),
    required("view", "string", "PA or AP"),
    col("original_width", "int", "the source image's width, pixels"),
    col("original_height", "int", "the source image's height, pixels"),
    col("pixel_spacing_x", "float", "mm per pixel, where the source says"),
    col("pixel_spacing_y", "float", "mm per pixel, where the source says"),
    required("split", "string", "train, val, test or unlabeled"),
    required("finding_labels", "string", "the findings as the source spells them, '|'-separated"),
    required("sample_weight", "float", "the film's weight in training"),
    required("ingest_date", "string", "the day prepare stored it"),
    required("source_path", "string", "the source file's reference (an opaque digest for DICOM exports)"),
    col("findings", "array<string>", "the findings, one per element"),
    col("store_path", "string", "the store the film is in"),
    col("source", "string", "the image source: nih or dicom"),
    col("study_datetime", "timestamp", "the DICOM study's date and time (null for NIH films)"),
    col("study_uid", "string", "the DICOM Study Instance UID (null for NIH films)"),
    col("series_uid", "string", "the DICOM Series Instance UID (null for NIH films)"),
    col("accession_number", "string", "the DICOM accession number (null for NIH films)"),
    _DATASET,
)

_SCORE_COLUMNS = (
    _IMAGE,
    required("finding", "string", "the finding explained"),
    required("probability", "float", "its calibrated probability"),
    required("heatmap_png", "binary", "where the model looked: a 64 px 8-bit PNG over the stored square"),
    required("peak_x", "float", "the heatmap's peak, original-image pixels"),
    required("peak_y", "float", "the heatmap's peak, original-image pixels"),
    required("box_x", "float", "the box around the hot region, original-image pixels"),
    required("box_y", "float", "the box around the hot region, original-image pixels"),
    required("box_w", "float", "the box around the hot region, original-image pixels"),
    required("box_h", "float", "the box around the hot region, original-image pixels"),
)

#: The columns of a heatmap itself (``xray.heatmaps`` adds the run's: dataset, model version, time, partitions).
HEATMAP_FIELDS: tuple[str, ...] = tuple(c.name for c in _SCORE_COLUMNS)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "studies",
            "ingested film",
            "prepare",
            _STUDY_COLUMNS,
            (DATASET,),
            note="the store's columns without the pixels and the label vector",
        ),
        Table(
            "display_pictures",
            "ingested film's display picture",
            "prepare",
            (
                _IMAGE,
                col("picture", "binary", "the film in its VOI window as a JPEG, at most web.display_max_side long"),
                col(
                    "note",
                    "string",
                    "why there is no picture: burned_in_annotation (its header says text is burnt into its pixels)",
                ),
                _RUN,
                _DATASET,
            ),
            (DATASET,),
            note="for the web app's large view; prepare writes it beside the store, replaced and appended with it",
        ),
        Table(
            "dicom_instances",
            "stored DICOM film",
            "prepare",
            (
                col(IMAGE_ID, "string", "the film's SOP Instance UID"),
                col("study_uid", "string", "Study Instance UID"),
                col("series_uid", "string", "Series Instance UID"),
                col("accession_number", "string", "the study's accession number"),
                col(PATIENT_PSEUDONYM, "string", _PSEUDONYM_WORDS, formerly="patient_key"),
                col("study_datetime", "timestamp", "the study's date and time"),
                col("modality", "string", "the modality (CR, DX)"),
                col("body_part", "string", "Body Part Examined"),
                col("photometric", "string", "Photometric Interpretation"),
                col("bits_stored", "int", "Bits Stored"),
                col("transfer_syntax", "string", "the file's transfer syntax UID"),
                col("manufacturer", "string", "the acquisition's vendor (for monitoring)"),
                col("model_name", "string", "the acquisition's model (for monitoring)"),
                _DATASET,
            ),
            (DATASET,),
        ),
        Table(
            "patient_keys",
            "DICOM patient",
            "prepare",
            (
                col(PATIENT_PSEUDONYM, "string", _PSEUDONYM_WORDS, formerly="patient_key"),
                col(PATIENT_ID, "int", "the number the store uses"),
                _DATASET,
            ),
            (DATASET,),
        ),
        Table(
            "priors",
            "earlier film fetched for a new patient",
            "nightly",
            (
                _IMAGE,
                required("fetched_on", "date", "the night it was fetched on, for a patient new to the lake"),
                _RUN,
                _DATASET,
            ),
            (DATASET,),
            note="prepared and scored like any film, shown with the patient's other films; never delivered back "
            "(the PACS has them)",
        ),
        Table(
            "quarantine",
            "input set aside",
            "prepare",
            (
                col(IMAGE_ID, "string", "the film, where known"),
                col("source_path", "string", "the input's reference"),
                required("reason", "string", "why it was set aside (a reason code)"),
                col("detail", "string", "the reason in words"),
                _DATASET,
                _RUN,
                required("run_time", "timestamp", "when the run set it aside"),
            ),
        ),
        Table(
            "boxes",
            "hand-drawn box",
            "prepare",
            (
                _IMAGE,
                required("finding", "string", "the finding boxed, ChestX-ray14 spelling"),
                required("x", "float", "left, source pixels"),
                required("y", "float", "top, source pixels"),
                required("w", "float", "width, source pixels"),
                required("h", "float", "height, source pixels"),
                _DATASET,
            ),
            (DATASET,),
        ),
        Table(
            "models",
            "trained or registered model",
            "train, register_model",
            (
                required("version", "string", "the model version"),
                required("created", "string", "when it was trained (UTC, ISO 8601)"),
                required("path", "string", "its folder"),
                required("model", "string", "the architecture (small_cnn, densenet121, ...) or external"),
                required(DATASET, "string", "the dataset it was trained on"),
                required("labels", "array<string>", "the findings its outputs are, in order"),
                required("image_size", "int", "the side of its input, pixels"),
                col("val_auroc_mean", "double", "mean validation AUROC"),
                required("best_epoch", "int", "the epoch kept"),
                required("num_workers", "int", "training processes"),
                col("model_sha256", "string", "SHA-256 of the model file, checked before every load"),
                col("meta_sha256", "string", "SHA-256 of model.json, checked before every load"),
            ),
        ),
        Table(
            "model_aliases",
            "promotion",
            "promote",
            (
                required("alias", "string", "champion"),
                required("version", "string", "the model version given the alias"),
                required("set_at", "string", "when (UTC, ISO 8601)"),
                required("set_by", "string", "the OS user who promoted it"),
                col("reason", "string", "why, in the promoter's words"),
            ),
            note="the newest row of an alias holds it",
        ),
        Table(
            "predictions",
            "film scored by a model in a run",
            "score",
            (
                _IMAGE,
                required(PATIENT_ID, "int", _PATIENT_WORDS),
                required("follow_up", "int", "the patient's film number"),
                required("view", "string", "PA or AP"),
                _DATASET,
                _VERSION,
                required(SCORED_AT, "timestamp", "when the run scored it"),
                required("top_finding", "string", "the finding of highest probability"),
                required("top_probability", "float", "its probability"),
                required(
                    CALLED,
                    "array<string>",
                    "the findings the model called: at or above their thresholds",
                    formerly="positive_findings",
                ),
                col("risk_score", "float", "the film's place on the worklist, higher first"),
                col("risk_finding", "string", "the finding that ranks it"),
                required(SCORE_DATE, "date", "the run's day"),
                _RUN,
            ),
            (SCORE_DATE, RUN_ID),
            more_columns="one p_<finding> per label of the model (p_atelectasis ... p_pneumothorax: the calibrated "
            "probability) and one raw_<finding> (the model's output before calibration)",
        ),
        Table(
            "not_scored",
            "film a model could not score in a run",
            "score",
            (
                _IMAGE,
                _VERSION,
                required("reason", "string", "its outputs were NaN or infinite: no probability, call or delivery"),
                _RUN,
                required(SCORED_AT, "timestamp", "when the run tried it"),
                _DATASET,
            ),
            note="score --new-only with the same model does not try it again, another model does",
        ),
        Table(
            "heatmaps",
            "finding explained on a film in a run",
            "score",
            (
                *_SCORE_COLUMNS,
                _DATASET,
                _VERSION,
                required(SCORED_AT, "timestamp", "when the run drew it"),
                required(SCORE_DATE, "date", "the run's day"),
                _RUN,
            ),
            (SCORE_DATE, RUN_ID),
        ),
        Table(
            "deliveries",
            "film, destination and attempt of a delivery",
            "deliver",
            (
                _IMAGE,
                _VERSION,
                required("destination", "string", "AE@HOST:PORT or folder:DIR"),
                required(
                    "status",
                    "string",
                    "pending, sent, failed or given_up (its source can no longer be used, recorded once); "
                    "a film's newest row is its state",
                ),
                required("attempt", "int", "the attempt's number"),
                col("sr_uid", "string", "the SR's SOP Instance UID"),
                col("sc_uid", "string", "the Secondary Capture's SOP Instance UID"),
                col("error", "string", "why it failed (no patient data)"),
                required("at", "timestamp", "when"),
                _RUN,
                _DATASET,
            ),
            (DATASET,),
            note="[delivery](deliver.md)",
        ),
        Table(
            "verdicts",
            "reader's saved verdict on a film (one submission)",
            "verdicts",
            (
                col(DATASET, "string", "the film's dataset"),
                col(IMAGE_ID, "string", "the film"),
                col("reader", "string", "the reader's account name"),
                col("submission_id", "long", "the submission"),
                col("submitted_at", "timestamp", "when"),
                col(MODEL_VERSION, "string", "whose calls were shown"),
                col("called", "array<string>", "the findings the model called"),
                col("confirmed", "array<string>", "called findings the reader confirmed"),
                col("rejected", "array<string>", "called findings the reader rejected"),
                col("missed", "array<string>", "findings the reader added"),
                col("no_finding", "boolean", "the reader saw no finding"),
                col("complete", "boolean", "every called finding was judged"),
                col("current", "boolean", "the reader's newest verdict on the film"),
            ),
            note="no notes; [verdicts](web.md#verdicts)",
        ),
        Table(
            "challenges",
            "challenge and finding",
            "challenge",
            (
                col("challenge_id", "string", "the challenge"),
                col("at", "timestamp", "when"),
                col(DATASET, "string", "the dataset judged on"),
                col("split", "string", "the split judged on"),
                col("champion", "string", "the champion's version"),
                col("challenger", "string", "the challenger's version"),
                col("finding", "string", "the finding"),
                col("films", "int", "films judged"),
                col("positives", "int", "positive films"),
                col("auroc_champion", "double", "the champion's AUROC"),
                col("auroc_challenger", "double", "the challenger's AUROC"),
                col("difference", "double", "challenger minus champion"),
                col("delong_low", "double", "DeLong 95% interval of the difference, low"),
                col("delong_high", "double", "DeLong 95% interval of the difference, high"),
                col("p_value", "double", "DeLong's p-value"),
                col("bootstrap_low", "double", "patient bootstrap interval, low"),
                col("bootstrap_high", "double", "patient bootstrap interval, high"),
                col("sensitivity_champion", "double", "at its operating point"),
                col("specificity_champion", "double", "at its operating point"),
                col("sensitivity_challenger", "double", "at its operating point"),
                col("specificity_challenger", "double", "at its operating point"),
                col("judged", "boolean", "the finding had enough positives to judge"),
                col("passed", "boolean", "the challenge's verdict"),
                col("outcome", "string", "PASS, FAIL or INCONCLUSIVE (too few films to decide)"),
                col("rules", "string", "JSON: each rule, its outcome, its numbers"),
            ),
            note="[challenges](evaluate.md#challenging-the-champion)",
        ),
        Table(
            "monitoring",
            "night and measure",
            "monitor",
            (
                required(SCORE_DATE, "string", "the night's scoring day"),
                _VERSION,
                required(
                    "measure",
                    "string",
                    "manufacturer ... image_saturated, probability <finding>, call rate <finding>, "
                    "or (night) for a night too small to test",
                ),
                required("kind", "string", "input, output or night"),
                required("test", "string", "ks, chi-square or fisher, fisher or binomial, none"),
                col("statistic", "double", "the test's statistic"),
                col("p_value", "double", "the test's p-value"),
                required("alert", "boolean", "the measure moved (Holm at monitor.alpha)"),
                required("films", "int", "the night's films"),
                required("reference_films", "int", "the reference's films"),
                required("reference_value", "string", "the reference, summarised"),
                required("night_value", "string", "for people: medians, shares, a rate with its 95% interval"),
                required("reference", "string", "what the night was compared with"),
                required("monitored_at", "string", "when"),
                _DATASET,
                required(RUN_ID, "string", "the night: one scoring run of the champion"),
            ),
            (DATASET, RUN_ID),
            note="a rerun of a night replaces its rows; [monitoring](monitor.md)",
        ),
        Table(
            "evaluations",
            "model, split and finding",
            "evaluate",
            (
                _VERSION,
                required(DATASET, "string", "the dataset evaluated on"),
                required("split", "string", "the split"),
                required("finding", "string", "the finding"),
                required("images", "int", "films"),
                required("positives", "int", "positive films"),
                col("auroc", "double", "AUROC"),
                col("auroc_low", "double", "95% interval, low"),
                col("auroc_high", "double", "95% interval, high"),
                col("threshold", "double", "the operating threshold"),
                col("sensitivity", "double", "at the threshold"),
                col("specificity", "double", "at the threshold"),
                col("true_prevalence", "double", "positives over films"),
                col("predicted_prevalence", "double", "calls over films"),
                required("evaluated_at", "timestamp", "when"),
                col("status", "string", "calibrated or not calibrated"),
                col("brier", "double", "Brier score"),
                col("ece", "double", "expected calibration error"),
            ),
        ),
    )
}

#: The names of :data:`TABLES`, in registration order.
TABLE_NAMES: tuple[str, ...] = tuple(TABLES)


def table(name: str) -> Table:
    """The table ``name``; a clear error for a name the catalog does not declare (a typo is never a new table)."""
    if name not in TABLES:
        raise KeyError(f"xray.{name} is not a table of the lake: the tables are {', '.join(TABLES)}")
    return TABLES[name]


def schema(name: str, *, partitions: bool = True) -> T.StructType:
    """The Spark schema of table ``name`` (:meth:`Table.schema`)."""
    return table(name).schema(partitions=partitions)


def arrow_partitioning(name: str):  # -> pyarrow.dataset.Partitioning | None
    """How a reader without Spark reads table ``name``'s partition folders (:meth:`Table.arrow_partitioning`)."""
    return table(name).arrow_partitioning()


def markdown() -> str:
    """The docs' table of tables: one line per table, every column named with its comment."""
    lines = ["| table | one row per | written by | columns |", "| --- | --- | --- | --- |"]
    return "\n".join([*lines, *(t.markdown_row() for t in TABLES.values())]) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown())
