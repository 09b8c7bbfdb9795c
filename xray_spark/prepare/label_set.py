"""The store's label set: kept from the manifest when a run appends, else chosen from the findings' counts."""

from __future__ import annotations

import dataclasses

from xray_spark.errors import UsageError
from xray_spark.labels import choose_label_set
from xray_spark.lake import store as store_mod
from xray_spark.prepare.run import PrepareRun


def choose_labels(run: PrepareRun) -> list[str]:
    """From the summary's finding counts (``labels.min_cases``), or the store's own when appending."""
    settings = run.settings
    if run.appends:
        label_set = list(run.manifest.labels)
        store_mod.check_compatible(run.manifest, label_set, settings.image.size, dataclasses.asdict(settings.split))
    else:
        counts = run.summary["metadata"]["finding_counts"]
        label_set = choose_label_set(counts, settings.labels.findings, settings.labels.min_cases)
        if not label_set:
            raise UsageError(
                f"no finding has labels.min_cases={settings.labels.min_cases} images in {run.inputs.metadata}: "
                "lower labels.min_cases"
            )
    run.summary["label_set"] = label_set
    run.summary["label_set_rule"] = {"findings": list(settings.labels.findings), "min_cases": settings.labels.min_cases}
    return label_set


def configured_labels(run: PrepareRun) -> list[str]:
    """The configured findings (``labels.findings``), for a source whose films carry no labels to count."""
    label_set = list(run.settings.labels.findings)
    run.summary["label_set"] = label_set
    run.summary["label_set_rule"] = {"findings": label_set, "min_cases": 0}
    return label_set
