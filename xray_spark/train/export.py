"""The end of a run: the best epoch's weights as the model file, its model.json, plots and history."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import numpy as np

from xray_spark import report
from xray_spark.labels import column_name
from xray_spark.model_card import (
    MODEL_FILE,
    check_finite_outputs,
    check_validation_record,
    threshold_rule_text,
    write_card,
)
from xray_spark.models import preprocessing_spec
from xray_spark.operating import operating_points
from xray_spark.train import checkpoints as ckpt
from xray_spark.train.plan import TrainPlan


def finish_model(
    plan: TrainPlan,
    weights: list[np.ndarray],
    state: dict[str, Any],
    pos_w: np.ndarray,
    neg_w: np.ndarray,
    total_rows: int,
    positives: np.ndarray,
) -> dict[str, Any]:
    """Keep the best epoch: its weights, thresholds, plots, model file and model.json."""
    best = np.load(os.path.join(plan.checkpoint_dir, state["best_predictions"]))
    val_p, val_y = best["p"], best["y"]
    best_row = next(r for r in state["history"] if r["epoch"] == state["best_epoch"])
    check_finite_outputs(val_p, f"the trained model {plan.version}", "on the validation films")
    check_validation_record({"version": plan.version, "val_auroc_mean": best_row["val_auroc_mean"]}, plan.model_dir)
    # Saved from an uncompiled twin: the file carries the architecture (preprocessing
    # included) and the weights, not the optimizer or the training loss.
    clean = plan.build()
    clean.set_weights(weights)
    clean.save(os.path.join(plan.model_dir, MODEL_FILE))
    write_reports(plan, state["history"], val_y, val_p)
    t = plan.thresholds
    # The prevalence rule's pi: from the train and validation splits together (see operating.py).
    prevalence = (np.asarray(positives, dtype=np.float64) + val_y.sum(axis=0)) / (total_rows + len(val_y))
    points = operating_points(val_y, val_p, plan.labels, t.rule, t.per_finding, t.min_positives, prevalence)
    meta = {
        "version": plan.version,
        "model": plan.train.model,
        "model_file": MODEL_FILE,
        "labels": plan.labels,
        "input": {"size": plan.image_size, "channels": 1, "dtype": "uint8"},
        "preprocessing": preprocessing_spec(plan.train.model, plan.image_size),
        "dataset": plan.dataset,
        "store": plan.store_url,
        "train_rows": total_rows,
        "train_positives": dict(zip(plan.labels, (int(v) for v in positives), strict=True)),
        "loss_weights": {"positive": pos_w.tolist(), "negative": neg_w.tolist()},
        "training": dataclasses.asdict(plan.train),
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "val_rows": len(val_y),
        "val_auroc": {name: best_row[f"val_auroc_{column_name(name)}"] for name in plan.labels},
        "val_auroc_mean": best_row["val_auroc_mean"],
        "thresholds": {name: point["threshold"] for name, point in points.items()},
        "threshold_rule": threshold_rule_text(t.rule, t.min_positives),
        "calibration": {name: point["calibration"] for name, point in points.items()},
        "operating_points": points,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_card(plan.model_dir, meta)
    state["finished"] = True
    ckpt.write_state(plan, state)
    return meta


def write_reports(plan: TrainPlan, history: list[dict[str, Any]], val_y: np.ndarray, val_p: np.ndarray) -> None:
    """history.csv, the training curves and the validation ROC curves, beside the model."""
    report.write_history_csv(os.path.join(plan.model_dir, "history.csv"), history)
    with open(os.path.join(plan.model_dir, "training_curves.png"), "wb") as fh:
        fh.write(report.training_curves_png(history, plan.labels))
    with open(os.path.join(plan.model_dir, "val_roc.png"), "wb") as fh:
        fh.write(report.roc_curves_png(val_y, val_p, plan.labels, title=f"{plan.version}: validation ROC"))
