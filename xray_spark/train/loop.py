"""The training loop one worker runs: in the driver, or in one task of a Spark barrier stage.

With one worker, :func:`train_worker` uses ``MirroredStrategy`` over the visible GPUs (the
default strategy on CPU); with several, ``MultiWorkerMirroredStrategy`` with the
``TF_CONFIG`` that :mod:`~xray_spark.train.barrier` builds. The workers exchange only small
JSON messages through Spark (``allGather``): label counts, step counts, validation scores.

Every epoch opens a fresh Petastorm reader per worker on a disjoint shard of the train
split; shards with fewer batches are padded with zero-weight batches so all workers take
the same number of steps. After each epoch the model is scored on the whole validation
split (each worker its shard, gathered), per-finding AUROC decides the best epoch, and a
checkpoint is written that ``--resume`` continues from.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from xray_spark.config import TrainSettings
from xray_spark.labels import column_name
from xray_spark.metrics import mean_auroc, per_label_auroc
from xray_spark.stderr_route import terminal
from xray_spark.train import checkpoints as ckpt
from xray_spark.train import data as ds
from xray_spark.train.export import finish_model
from xray_spark.train.losses import class_weights, make_loss, numpy_loss
from xray_spark.train.plan import Cluster, TrainPlan

log = logging.getLogger("xray_spark.train")


@dataclasses.dataclass(frozen=True)
class WorkerData:
    """What a worker reads once: its shards, the label counts of all workers, the evaluation arrays."""

    train_spec: ds.ShardSpec
    train_ids: list[str]
    total_rows: int
    positives: np.ndarray
    steps: int
    pos_weight: np.ndarray
    neg_weight: np.ndarray
    val: dict[str, np.ndarray]
    train_eval: dict[str, np.ndarray]


def train_worker(plan: TrainPlan, cluster: Cluster) -> dict[str, Any]:
    """Train on this worker's shards; the chief writes checkpoints and the model. Returns a report."""
    strategy, on_gpu = configure_tf(plan.train, cluster)
    data = read_worker_data(plan, cluster)
    model = compile_model(plan, strategy, data)
    state, best_weights = restore(plan, model)
    # Saving and loading weights are collective under MultiWorkerMirroredStrategy: every
    # worker does them, in the same order; only the chief's files are kept.
    own_dir = plan.checkpoint_dir if cluster.is_chief else tempfile.mkdtemp(prefix=f"xray-spark-worker{cluster.rank}-")
    # Keras' progress bar on a terminal; in logs, a line every 30 s within an epoch and one per epoch.
    progress = None
    if cluster.is_chief:
        progress = _progress_bar(plan.train.epochs) if terminal(1) else _step_log(plan, data.steps)
    started = time.monotonic()
    epochs_seen: list[int] = []
    while state["epoch"] < plan.train.epochs and not state["stopped_early"]:
        epoch = state["epoch"]
        t0 = time.monotonic()
        train_loss = fit_epoch(plan, cluster, strategy, model, data, epoch, progress)
        epochs_seen.append(epoch)
        row, val_predictions = evaluate_epoch(plan, cluster, model, data, train_loss, state)
        row["seconds"] = round(time.monotonic() - t0, 1)
        state["history"].append(row)
        if cluster.is_chief:
            log.info(
                "epoch %d: loss %.4f val_loss %.4f val mean AUROC %.4f (%.0f s)",
                epoch + 1,
                train_loss,
                row["val_loss"],
                row["val_auroc_mean"],
                row["seconds"],
            )
        improved = update_schedule(plan.train, state, row, model)
        state["epoch"] = epoch + 1
        if improved:
            best_weights = model.get_weights()
        ckpt.save_epoch(plan, model, state, own_dir, improved=improved, is_chief=cluster.is_chief, val=val_predictions)
    final_weights = best_weights if best_weights is not None else model.get_weights()
    if not cluster.is_chief:
        shutil.rmtree(own_dir, ignore_errors=True)
    report: dict[str, Any] = {
        "rank": cluster.rank,
        "train_ids": sorted(data.train_ids),
        "epochs_run": epochs_seen,
        "steps_per_epoch": data.steps,
        "final_weights_digest": ckpt.weights_digest(final_weights),
        "seconds": round(time.monotonic() - started, 1),
        "on_gpu": on_gpu,
    }
    if cluster.is_chief:
        report["result"] = finish_model(
            plan, final_weights, state, data.pos_weight, data.neg_weight, data.total_rows, data.positives
        )
    return report


def configure_tf(train: TrainSettings, cluster: Cluster) -> tuple[Any, bool]:
    """The distribution strategy (created before any other TensorFlow op) and whether on GPU."""
    from xray_spark.tf_quiet import import_tensorflow

    tf = import_tensorflow()

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if cluster.size > 1:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=train.worker_timeout_s)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    elif gpus:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    if gpus and train.mixed_precision:
        import tf_keras

        tf_keras.mixed_precision.set_global_policy("mixed_float16")
    tf.keras.utils.set_random_seed(train.seed)
    return strategy, bool(gpus)


def read_worker_data(plan: TrainPlan, cluster: Cluster) -> WorkerData:
    """One cheap pass over this worker's train shard (ids, labels), shared counts, evaluation arrays."""
    shard = {"cur_shard": cluster.rank, "shard_count": cluster.size} if cluster.size > 1 else {}
    train_spec = ds.ShardSpec("train", **shard)
    train_ids, train_labels = ds.shard_ids_and_labels(plan.store_url, train_spec)
    counts = cluster.all_gather({"rows": len(train_ids), "positives": train_labels.sum(axis=0).tolist()})
    total_rows = sum(c["rows"] for c in counts)
    if total_rows == 0:
        raise RuntimeError(f"the store {plan.store_url} has no rows in its train split")
    positives = np.sum([c["positives"] for c in counts], axis=0)
    pos_w, neg_w = class_weights(positives, total_rows)
    eval_rows = max(0, plan.train.eval_max_rows // cluster.size)
    return WorkerData(
        train_spec=train_spec,
        train_ids=train_ids,
        total_rows=total_rows,
        positives=positives,
        steps=max(math.ceil(c["rows"] / plan.train.batch_size) for c in counts),
        pos_weight=pos_w,
        neg_weight=neg_w,
        val=ds.read_arrays(plan.store_url, ds.ShardSpec("val", **shard)),
        train_eval=ds.read_arrays(plan.store_url, train_spec, max_rows=eval_rows),
    )


def compile_model(plan: TrainPlan, strategy: Any, data: WorkerData) -> Any:
    """The model (from ``train.init_weights``) with Adam and the configured loss, under the strategy."""
    import tf_keras

    t = plan.train
    with strategy.scope():
        model = plan.build(init_weights=True)
        optimizer = tf_keras.optimizers.Adam(learning_rate=t.learning_rate)
        model.compile(optimizer=optimizer, loss=make_loss(t.loss, data.pos_weight, data.neg_weight, t.focal_gamma))
    return model


def restore(plan: TrainPlan, model: Any) -> tuple[dict[str, Any], list[np.ndarray] | None]:
    """The run's state (fresh, or the checkpoint's with ``--resume``) and the best weights so far."""
    import tf_keras

    state = ckpt.new_state(plan.train.learning_rate)
    best_weights = None
    if plan.resume:
        saved = ckpt.read_state(plan.model_dir)
        if saved is not None and saved.get("epoch", 0) > 0:
            state.update(saved)
            model.set_weights(ckpt.read_weights_file(plan, os.path.join(plan.checkpoint_dir, state["last_weights"])))
            log.info("resumed %s after epoch %d", plan.version, state["epoch"])
        if state.get("best_weights"):
            best_weights = ckpt.read_weights_file(plan, os.path.join(plan.checkpoint_dir, state["best_weights"]))
    tf_keras.backend.set_value(model.optimizer.learning_rate, state["lr"])
    return state, best_weights


def fit_epoch(
    plan: TrainPlan, cluster: Cluster, strategy: Any, model: Any, data: WorkerData, epoch: int, progress: Any
) -> float:
    """One epoch over a fresh reader of this worker's train shard; returns the running training loss."""
    from xray_spark.tf_quiet import import_tensorflow

    tf = import_tensorflow()

    t = plan.train
    with ds.training_dataset(
        plan.store_url,
        data.train_spec,
        image_size=plan.image_size,
        n_labels=len(plan.labels),
        batch_size=t.batch_size,
        shuffle_buffer=t.shuffle_buffer,
        seed=t.seed + epoch,
        n_batches=data.steps if cluster.size > 1 else None,
        use_sample_weights=t.use_sample_weights,
        expected_rows=len(data.train_ids),
    ) as dataset:
        if cluster.size > 1:
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
            dataset = dataset.with_options(options)
            dataset = strategy.distribute_datasets_from_function(lambda _ctx, d=dataset: d)
        fit = model.fit(
            dataset,
            epochs=epoch + 1,
            initial_epoch=epoch,
            steps_per_epoch=data.steps,
            verbose=1 if getattr(progress, "is_bar", False) else 0,
            callbacks=[progress] if progress else None,
        )
    return float(fit.history["loss"][-1])


def evaluate_epoch(
    plan: TrainPlan, cluster: Cluster, model: Any, data: WorkerData, train_loss: float, state: dict[str, Any]
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """The epoch's history row (loss, accuracy, AUROC per finding on a train sample and all of val)."""
    t = plan.train
    labels, n_labels = plan.labels, len(plan.labels)
    row: dict[str, Any] = {"epoch": state["epoch"] + 1, "loss": train_loss, "lr": float(state["lr"])}
    val_predictions = (np.zeros((0, n_labels)), np.zeros((0, n_labels)))
    for prefix, arrays in (("", data.train_eval), ("val_", data.val)):
        probs = predict(model, arrays["images"], max(t.batch_size, 64))
        gathered = cluster.all_gather({"p": probs.tolist(), "y": arrays["labels"].tolist()})
        p = np.concatenate([np.asarray(g["p"], np.float32).reshape(-1, n_labels) for g in gathered])
        y = np.concatenate([np.asarray(g["y"], np.float32).reshape(-1, n_labels) for g in gathered])
        aucs = per_label_auroc(y, p, labels) if len(y) else dict.fromkeys(labels, float("nan"))
        if prefix == "val_":
            row["val_loss"] = numpy_loss(t.loss, y, p, data.pos_weight, data.neg_weight, t.focal_gamma)
            val_predictions = (p, y)
        row[f"{prefix}binary_accuracy"] = float(((p >= 0.5) == (y >= 0.5)).mean()) if len(y) else float("nan")
        row[f"{prefix}auroc_mean"] = mean_auroc(aucs)
        for name, value in aucs.items():
            row[f"{prefix}auroc_{column_name(name)}"] = value
    return row, val_predictions


def update_schedule(t: TrainSettings, state: dict[str, Any], row: dict[str, Any], model: Any) -> bool:
    """Best epoch, early stopping and the learning-rate schedule (the same decision on every worker).

    Returns whether this epoch is the best so far.
    """
    import tf_keras

    score = row["val_auroc_mean"] if not math.isnan(row["val_auroc_mean"]) else -row["val_loss"]
    improved = score > state["best_val_auroc"] + 1e-4
    if improved:
        state["best_val_auroc"] = score
        state["best_epoch"] = state["epoch"] + 1
        state["wait_stop"] = state["wait_lr"] = 0
        return True
    state["wait_stop"] += 1
    state["wait_lr"] += 1
    if state["wait_lr"] >= t.reduce_lr_patience:
        state["lr"] = max(t.min_learning_rate, state["lr"] * t.reduce_lr_factor)
        tf_keras.backend.set_value(model.optimizer.learning_rate, state["lr"])
        state["wait_lr"] = 0
    if state["wait_stop"] >= t.early_stopping_patience:
        state["stopped_early"] = True
    return False


def predict(model: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Probabilities for a stack of images, a plain forward pass (no collectives)."""
    from xray_spark.tf_quiet import import_tensorflow

    tf = import_tensorflow()

    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    infer = getattr(model, "_xray_infer", None)
    if infer is None:
        infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        model._xray_infer = infer
    out = [infer(tf.constant(images[i : i + batch_size])).numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32)


def _progress_bar(total_epochs: int) -> Any:
    """Keras' progress bar, numbering epochs out of the whole run (fit is called once per epoch)."""
    import tf_keras

    class RunProgress(tf_keras.callbacks.ProgbarLogger):
        is_bar = True

        def set_params(self, params: dict[str, Any]) -> None:
            super().set_params(params)
            self.epochs = total_epochs

    return RunProgress(count_mode="steps")


def _step_log(plan: TrainPlan, steps: int, interval: float = 30.0) -> Any:
    """A callback that logs ``epoch E: step s/S, N images/s, ETA`` at most every ``interval`` s of an epoch."""
    import tf_keras

    batch = plan.train.batch_size

    class StepLog(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.epoch, self.began = epoch, time.monotonic()
            self.last = self.began

        def on_train_batch_end(self, step: int, logs: Any = None) -> None:
            now = time.monotonic()
            if now - self.last < interval:
                return
            self.last = now
            done = step + 1
            rate = done * batch / (now - self.began)
            eta = (steps - done) * (now - self.began) / done
            log.info(
                "epoch %d: step %d/%d, %.0f images/s, ETA %.0f s of this epoch",
                self.epoch + 1,
                done,
                steps,
                rate,
                eta,
            )

    return StepLog()
