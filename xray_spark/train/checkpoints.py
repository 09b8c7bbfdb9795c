"""Checkpoints: the state of a run after each epoch, and the weights files it names.

Every write goes to a temporary name first and is renamed into place; the state is
written after the files it names, and old files go last, so a run killed at any point
resumes from a complete epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from xray_spark.lake import write_json_atomic
from xray_spark.train.plan import CHECKPOINT_DIR, TrainPlan

STATE_FILE = "state.json"
PLAN_FILE = "plan.json"


def new_state(learning_rate: float) -> dict[str, Any]:
    """The state of a run before its first epoch."""
    return {
        "epoch": 0,
        "history": [],
        "best_epoch": None,
        "best_val_auroc": -1.0,
        "lr": float(learning_rate),
        "wait_stop": 0,
        "wait_lr": 0,
        "stopped_early": False,
        "finished": False,
    }


def state_path(model_dir: str) -> str:
    return os.path.join(model_dir, CHECKPOINT_DIR, STATE_FILE)


def read_state(model_dir: str) -> dict[str, Any] | None:
    path = state_path(model_dir)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def write_state(plan: TrainPlan, state: dict[str, Any]) -> None:
    write_json_atomic(state_path(plan.model_dir), state)


def save_weights_atomic(model: Any, path: str) -> None:
    tmp = path[: -len(".weights.h5")] + ".tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)


def read_weights_file(plan: TrainPlan, path: str) -> list[np.ndarray]:
    """Weights from an .h5 file as arrays, read through a plain (undistributed) twin model.

    Loading .h5 straight into a model under MultiWorkerMirroredStrategy fails in tf_keras;
    ``set_weights`` with arrays is safe there.
    """
    twin = plan.build()
    twin.load_weights(path)
    return twin.get_weights()


def weights_digest(weights: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def save_epoch(
    plan: TrainPlan,
    model: Any,
    state: dict[str, Any],
    own_dir: str,
    *,
    improved: bool,
    is_chief: bool,
    val: tuple[np.ndarray, np.ndarray],
) -> None:
    """Checkpoint after an epoch: new files first, then the state that names them, then old files go.

    Saving weights is collective under MultiWorkerMirroredStrategy: every worker does it, in
    the same order, into ``own_dir``; only the chief's files (and its state) are kept.
    """
    epoch = state["epoch"]
    os.makedirs(own_dir, exist_ok=True)
    stale = [state.get("last_weights")]
    state["last_weights"] = f"epoch-{epoch:03d}.weights.h5"
    save_weights_atomic(model, os.path.join(own_dir, state["last_weights"]))
    if improved:
        stale += [state.get("best_weights"), state.get("best_predictions")]
        state["best_weights"] = f"best-epoch-{epoch:03d}.weights.h5"
        state["best_predictions"] = f"best-epoch-{epoch:03d}.val.npz"
        save_weights_atomic(model, os.path.join(own_dir, state["best_weights"]))
        if is_chief:
            tmp = os.path.join(plan.checkpoint_dir, "tmp-" + state["best_predictions"])
            np.savez(tmp, p=val[0], y=val[1])
            os.replace(tmp, os.path.join(plan.checkpoint_dir, state["best_predictions"]))
    if is_chief:
        write_state(plan, state)
    for name in stale:
        if name and os.path.exists(os.path.join(own_dir, name)):
            os.remove(os.path.join(own_dir, name))


def write_plan(plan: TrainPlan) -> None:
    write_json_atomic(os.path.join(plan.checkpoint_dir, PLAN_FILE), plan.to_json())


def read_plan(model_dir: str) -> TrainPlan | None:
    path = os.path.join(model_dir, CHECKPOINT_DIR, PLAN_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return TrainPlan.from_json(json.load(fh))
