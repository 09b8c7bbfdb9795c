"""Training: losses, the epoch loop, checkpoints, and distribution without Horovod.

One loop, :func:`train_worker`, runs either in the driver (``num_workers=1``, with
``MirroredStrategy`` over the visible GPUs or the default strategy on CPU) or in each
task of a Spark barrier stage (``num_workers>1``, ``MultiWorkerMirroredStrategy`` with a
``TF_CONFIG`` built from the barrier task infos). The workers exchange only small JSON
messages through Spark (``allGather``): label counts, step counts, validation scores.

Every epoch opens a fresh Petastorm reader per worker on a disjoint shard of the train
split; shards with fewer batches are padded with zero-weight batches so all workers take
the same number of steps. After each epoch the model is scored on the whole validation
split (each worker its shard, gathered), per-finding AUROC decides the best epoch, and
a checkpoint is written that ``--resume`` continues from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from xray_spark import dataset as ds_mod
from xray_spark.evaluation import mean_auroc, per_label_auroc, youden_threshold
from xray_spark.labels import column_name
from xray_spark.models import build_model, preprocessing_spec, use_tf_keras

log = logging.getLogger("xray_spark.training")

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.json"
MODEL_FILE = "model.keras"


# =========================================================================================
# workers
# =========================================================================================
class Cluster:
    """This process's place among the training workers, and how to talk to the others."""

    def __init__(self, rank: int = 0, size: int = 1, gather: Callable[[str], list[str]] | None = None) -> None:
        self.rank = rank
        self.size = size
        self._gather = gather

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def all_gather(self, value: Any) -> list[Any]:
        """Every worker's ``value`` (JSON-able), in rank order."""
        if self.size == 1 or self._gather is None:
            return [value]
        return [json.loads(v) for v in self._gather(json.dumps(value))]


# =========================================================================================
# losses
# =========================================================================================
def class_weights(positives: np.ndarray, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-finding (positive, negative) weights from the train split's label frequencies.

    As in Wang et al. (2017), positives of a rare finding weigh more; here each class of a
    finding carries half the total weight: w_pos = N / (2 P), w_neg = N / (2 (N - P)).
    """
    positives = np.asarray(positives, dtype=np.float64)
    p = np.clip(positives, 1.0, None)
    n = np.clip(total - positives, 1.0, None)
    return (total / (2.0 * p)).astype(np.float32), (total / (2.0 * n)).astype(np.float32)


def make_loss(kind: str, pos_weight: np.ndarray, neg_weight: np.ndarray, gamma: float = 2.0) -> Callable:
    """A loss returning one value per example (so Keras applies sample weights to it)."""
    import tensorflow as tf

    pos = tf.constant(pos_weight, tf.float32)
    neg = tf.constant(neg_weight, tf.float32)
    eps = 1e-7

    def loss(y_true: Any, y_pred: Any) -> Any:
        y_true = tf.cast(y_true, tf.float32)
        p = tf.clip_by_value(tf.cast(y_pred, tf.float32), eps, 1.0 - eps)
        if kind == "bce":
            per = -(y_true * tf.math.log(p) + (1.0 - y_true) * tf.math.log(1.0 - p))
        elif kind == "weighted_bce":
            per = -(pos * y_true * tf.math.log(p) + neg * (1.0 - y_true) * tf.math.log(1.0 - p))
        elif kind == "focal":
            pt = y_true * p + (1.0 - y_true) * (1.0 - p)
            per = -tf.pow(1.0 - pt, gamma) * tf.math.log(pt)
        else:  # pragma: no cover - settings are checked when loaded
            raise ValueError(kind)
        return tf.reduce_mean(per, axis=-1)

    loss.__name__ = f"{kind}_loss"
    return loss


def numpy_loss(kind: str, y: np.ndarray, p: np.ndarray, pos_w: np.ndarray, neg_w: np.ndarray, gamma: float) -> float:
    """The same loss in numpy, for the validation set's predictions."""
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    if kind == "bce":
        per = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    elif kind == "weighted_bce":
        per = -(pos_w * y * np.log(p) + neg_w * (1 - y) * np.log(1 - p))
    else:
        pt = y * p + (1 - y) * (1 - p)
        per = -((1 - pt) ** gamma) * np.log(pt)
    return float(per.mean()) if per.size else float("nan")


# =========================================================================================
# the plan and the loop
# =========================================================================================
@dataclasses.dataclass(frozen=True)
class TrainPlan:
    """Everything a worker needs, picklable and JSON-able (it travels to the barrier tasks)."""

    store_url: str
    dataset: str
    labels: list[str]
    image_size: int
    model_dir: str
    version: str
    train: dict[str, Any]
    resume: bool = False


def _state_path(plan: TrainPlan) -> str:
    return os.path.join(plan.model_dir, CHECKPOINT_DIR, STATE_FILE)


def read_state(model_dir: str) -> dict[str, Any] | None:
    path = os.path.join(model_dir, CHECKPOINT_DIR, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _write_json_atomic(path: str, value: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(value, fh, indent=2, default=float)
    os.replace(tmp, path)


def _predict(model: Any, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Probabilities for a stack of images, a plain forward pass (no collectives)."""
    import tensorflow as tf

    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), np.float32)
    infer = getattr(model, "_xray_infer", None)
    if infer is None:
        infer = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
        model._xray_infer = infer
    out = [infer(tf.constant(images[i : i + batch_size])).numpy() for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32)


def _save_weights_atomic(model: Any, path: str) -> None:
    tmp = path[: -len(".weights.h5")] + ".tmp.weights.h5"
    model.save_weights(tmp)
    os.replace(tmp, path)


def _read_weights_file(plan: TrainPlan, path: str) -> list[np.ndarray]:
    """Weights from an .h5 file as arrays, read through a plain (undistributed) twin model.

    Loading .h5 straight into a model under MultiWorkerMirroredStrategy fails in tf_keras;
    ``set_weights`` with arrays is safe there.
    """
    t = plan.train
    twin = build_model(
        t["model"],
        len(plan.labels),
        plan.image_size,
        augment=t["augment"],
        seed=int(t["seed"]),
        dropout=float(t["dropout"]),
    )
    twin.load_weights(path)
    return twin.get_weights()


def _progress_bar(tf_keras: Any, total_epochs: int) -> Any:
    """Keras' progress bar, numbering epochs out of the whole run (fit is called once per epoch)."""

    class RunProgress(tf_keras.callbacks.ProgbarLogger):
        def set_params(self, params: dict[str, Any]) -> None:
            super().set_params(params)
            self.epochs = total_epochs

    return RunProgress(count_mode="steps")


def weights_digest(weights: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for w in weights:
        h.update(np.ascontiguousarray(w).tobytes())
    return h.hexdigest()


def _configure_tf(train: dict[str, Any], cluster: Cluster) -> tuple[Any, bool]:
    """The distribution strategy (created before any other TensorFlow op) and whether on GPU."""
    use_tf_keras()
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if cluster.size > 1:
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=train["worker_timeout_s"])
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    elif gpus:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    if gpus and train.get("mixed_precision", True):
        import tf_keras

        tf_keras.mixed_precision.set_global_policy("mixed_float16")
    tf.keras.utils.set_random_seed(int(train["seed"]))
    return strategy, bool(gpus)


def train_worker(plan: TrainPlan, cluster: Cluster) -> dict[str, Any]:
    """Train on this worker's shards; the chief writes checkpoints and the model. Returns a report."""
    strategy, on_gpu = _configure_tf(plan.train, cluster)
    import tensorflow as tf

    t = plan.train
    labels = plan.labels
    n_labels = len(labels)
    shard = {"cur_shard": cluster.rank, "shard_count": cluster.size} if cluster.size > 1 else {}
    train_spec = ds_mod.ShardSpec("train", **shard)
    val_spec = ds_mod.ShardSpec("val", **shard)

    # -- one cheap pass: ids and labels of this worker's train shard -------------------------
    train_ids, train_labels = ds_mod.shard_ids_and_labels(plan.store_url, train_spec)
    counts = cluster.all_gather({"rows": len(train_ids), "positives": train_labels.sum(axis=0).tolist()})
    total_rows = sum(c["rows"] for c in counts)
    if total_rows == 0:
        raise RuntimeError(f"the store {plan.store_url} has no rows in its train split")
    positives = np.sum([c["positives"] for c in counts], axis=0)
    batch = int(t["batch_size"])
    steps = max(math.ceil(c["rows"] / batch) for c in counts)
    pos_w, neg_w = class_weights(positives, total_rows)

    val = ds_mod.read_arrays(plan.store_url, val_spec)
    eval_rows = max(0, int(t["eval_max_rows"]) // cluster.size)
    train_eval = ds_mod.read_arrays(plan.store_url, train_spec, max_rows=eval_rows)

    with strategy.scope():
        model = build_model(
            t["model"],
            n_labels,
            plan.image_size,
            init_weights=t["init_weights"],
            augment=t["augment"],
            seed=int(t["seed"]),
            dropout=float(t["dropout"]),
        )
        import tf_keras

        optimizer = tf_keras.optimizers.Adam(learning_rate=float(t["learning_rate"]))
        model.compile(optimizer=optimizer, loss=make_loss(t["loss"], pos_w, neg_w, float(t["focal_gamma"])))

    state = {
        "epoch": 0,
        "history": [],
        "best_epoch": None,
        "best_val_auroc": -1.0,
        "lr": float(t["learning_rate"]),
        "wait_stop": 0,
        "wait_lr": 0,
        "stopped_early": False,
        "finished": False,
    }
    ckpt_dir = os.path.join(plan.model_dir, CHECKPOINT_DIR)
    # Saving and loading weights are collective under MultiWorkerMirroredStrategy: every
    # worker does them, in the same order; only the chief's files are kept.
    own_dir = ckpt_dir if cluster.is_chief else tempfile.mkdtemp(prefix=f"xray-spark-worker{cluster.rank}-")
    if plan.resume:
        saved = read_state(plan.model_dir)
        if saved is not None and saved.get("epoch", 0) > 0:
            state.update(saved)
            model.set_weights(_read_weights_file(plan, os.path.join(ckpt_dir, state["last_weights"])))
            log.info("resumed %s after epoch %d", plan.version, state["epoch"])
    tf_keras.backend.set_value(model.optimizer.learning_rate, state["lr"])

    # Keras' progress bar on a terminal; in logs, the one line per epoch logged below.
    progress = _progress_bar(tf_keras, int(t["epochs"])) if cluster.is_chief and sys.stdout.isatty() else None
    started = time.monotonic()
    epochs_seen: list[int] = []
    best_weights: list[np.ndarray] | None = None
    if plan.resume and state.get("best_weights"):
        best_weights = _read_weights_file(plan, os.path.join(ckpt_dir, state["best_weights"]))
    while state["epoch"] < int(t["epochs"]) and not state["stopped_early"]:
        epoch = state["epoch"]
        t0 = time.monotonic()
        with ds_mod.training_dataset(
            plan.store_url,
            train_spec,
            image_size=plan.image_size,
            n_labels=n_labels,
            batch_size=batch,
            shuffle_buffer=int(t["shuffle_buffer"]),
            seed=int(t["seed"]) + epoch,
            n_batches=steps if cluster.size > 1 else None,
            use_sample_weights=bool(t["use_sample_weights"]),
        ) as data:
            if cluster.size > 1:
                options = tf.data.Options()
                options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
                data = data.with_options(options)
                data = strategy.distribute_datasets_from_function(lambda _ctx, d=data: d)
            fit = model.fit(
                data,
                epochs=epoch + 1,
                initial_epoch=epoch,
                steps_per_epoch=steps,
                verbose=1 if progress else 0,
                callbacks=[progress] if progress else None,
            )
        epochs_seen.append(epoch)
        train_loss = float(fit.history["loss"][-1])

        # -- evaluate on the whole validation split and a train sample ------------------------
        row = {"epoch": epoch + 1, "loss": train_loss, "lr": float(state["lr"])}
        for prefix, arrays in (("", train_eval), ("val_", val)):
            probs = _predict(model, arrays["images"], max(batch, 64))
            gathered = cluster.all_gather({"p": probs.tolist(), "y": arrays["labels"].tolist()})
            p = np.concatenate([np.asarray(g["p"], np.float32).reshape(-1, n_labels) for g in gathered])
            y = np.concatenate([np.asarray(g["y"], np.float32).reshape(-1, n_labels) for g in gathered])
            aucs = per_label_auroc(y, p, labels) if len(y) else dict.fromkeys(labels, float("nan"))
            if prefix == "val_":
                row["val_loss"] = numpy_loss(t["loss"], y, p, pos_w, neg_w, float(t["focal_gamma"]))
                val_probs, val_y = p, y
            row[f"{prefix}binary_accuracy"] = float(((p >= 0.5) == (y >= 0.5)).mean()) if len(y) else float("nan")
            row[f"{prefix}auroc_mean"] = mean_auroc(aucs)
            for name, value in aucs.items():
                row[f"{prefix}auroc_{column_name(name)}"] = value
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

        # -- best epoch, early stopping, learning-rate schedule (same decision on every worker) --
        score = row["val_auroc_mean"] if not math.isnan(row["val_auroc_mean"]) else -row["val_loss"]
        improved = score > state["best_val_auroc"] + 1e-4
        if improved:
            state["best_val_auroc"] = score
            state["best_epoch"] = epoch + 1
            state["wait_stop"] = state["wait_lr"] = 0
        else:
            state["wait_stop"] += 1
            state["wait_lr"] += 1
            if state["wait_lr"] >= int(t["reduce_lr_patience"]):
                state["lr"] = max(float(t["min_learning_rate"]), state["lr"] * float(t["reduce_lr_factor"]))
                tf_keras.backend.set_value(model.optimizer.learning_rate, state["lr"])
                state["wait_lr"] = 0
            if state["wait_stop"] >= int(t["early_stopping_patience"]):
                state["stopped_early"] = True
        # -- checkpoint: new files first, then the state that names them, then old files go,
        # so a run killed at any point resumes from a complete epoch.
        state["epoch"] = epoch + 1
        os.makedirs(own_dir, exist_ok=True)
        stale = [state.get("last_weights")]
        state["last_weights"] = f"epoch-{epoch + 1:03d}.weights.h5"
        _save_weights_atomic(model, os.path.join(own_dir, state["last_weights"]))
        if improved:
            best_weights = model.get_weights()
            stale += [state.get("best_weights"), state.get("best_predictions")]
            state["best_weights"] = f"best-epoch-{epoch + 1:03d}.weights.h5"
            state["best_predictions"] = f"best-epoch-{epoch + 1:03d}.val.npz"
            _save_weights_atomic(model, os.path.join(own_dir, state["best_weights"]))
            if cluster.is_chief:
                tmp = os.path.join(ckpt_dir, "tmp-" + state["best_predictions"])
                np.savez(tmp, p=val_probs, y=val_y)
                os.replace(tmp, os.path.join(ckpt_dir, state["best_predictions"]))
        if cluster.is_chief:
            _write_json_atomic(_state_path(plan), state)
        for name in stale:
            if name and os.path.exists(os.path.join(own_dir, name)):
                os.remove(os.path.join(own_dir, name))

    final_weights = best_weights if best_weights is not None else model.get_weights()
    if not cluster.is_chief:
        shutil.rmtree(own_dir, ignore_errors=True)

    final_digest = weights_digest(final_weights)
    report: dict[str, Any] = {
        "rank": cluster.rank,
        "train_ids": sorted(train_ids),
        "epochs_run": epochs_seen,
        "steps_per_epoch": steps,
        "final_weights_digest": final_digest,
        "seconds": round(time.monotonic() - started, 1),
        "on_gpu": on_gpu,
    }
    if cluster.is_chief:
        report["result"] = _finish_model(plan, final_weights, state, pos_w, neg_w, total_rows, positives)
    return report


def _finish_model(
    plan: TrainPlan,
    weights: list[np.ndarray],
    state: dict[str, Any],
    pos_w: np.ndarray,
    neg_w: np.ndarray,
    total_rows: int,
    positives: np.ndarray,
) -> dict[str, Any]:
    """Keep the best epoch: its weights, thresholds, plots, model file and model.json."""
    from xray_spark import report

    ckpt_dir = os.path.join(plan.model_dir, CHECKPOINT_DIR)
    best = np.load(os.path.join(ckpt_dir, state["best_predictions"]))
    val_p, val_y = best["p"], best["y"]
    best_row = next(r for r in state["history"] if r["epoch"] == state["best_epoch"])
    thresholds = {name: youden_threshold(val_y[:, i], val_p[:, i]) for i, name in enumerate(plan.labels)}
    val_auroc = {name: best_row[f"val_auroc_{column_name(name)}"] for name in plan.labels}
    # Saved from an uncompiled twin: the file carries the architecture (preprocessing
    # included) and the weights, not the optimizer or the training loss.
    clean = build_model(
        plan.train["model"],
        len(plan.labels),
        plan.image_size,
        augment=plan.train["augment"],
        seed=int(plan.train["seed"]),
        dropout=float(plan.train["dropout"]),
    )
    clean.set_weights(weights)
    clean.save(os.path.join(plan.model_dir, MODEL_FILE))
    report.write_history_csv(os.path.join(plan.model_dir, "history.csv"), state["history"])
    with open(os.path.join(plan.model_dir, "training_curves.png"), "wb") as fh:
        fh.write(report.training_curves_png(state["history"], plan.labels))
    with open(os.path.join(plan.model_dir, "val_roc.png"), "wb") as fh:
        fh.write(report.roc_curves_png(val_y, val_p, plan.labels, title=f"{plan.version}: validation ROC"))
    meta = {
        "version": plan.version,
        "model": plan.train["model"],
        "model_file": MODEL_FILE,
        "labels": plan.labels,
        "input": {"size": plan.image_size, "channels": 1, "dtype": "uint8"},
        "preprocessing": preprocessing_spec(plan.train["model"], plan.image_size),
        "dataset": plan.dataset,
        "store": plan.store_url,
        "train_rows": total_rows,
        "train_positives": dict(zip(plan.labels, (int(v) for v in positives), strict=True)),
        "loss_weights": {"positive": pos_w.tolist(), "negative": neg_w.tolist()},
        "training": plan.train,
        "epochs_run": state["epoch"],
        "best_epoch": state["best_epoch"],
        "val_rows": len(val_y),
        "val_auroc": val_auroc,
        "val_auroc_mean": best_row["val_auroc_mean"],
        "thresholds": thresholds,
        "threshold_rule": "Youden's J on the validation split",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_json_atomic(os.path.join(plan.model_dir, "model.json"), meta)
    state["finished"] = True
    _write_json_atomic(_state_path(plan), state)
    return meta


# =========================================================================================
# Spark barrier stage
# =========================================================================================
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def barrier_task(plan_json: str) -> Callable:
    """The function each barrier task runs: TF_CONFIG from the task infos, then the loop.

    TensorFlow runs in a child process of the Spark Python worker, one per task: a
    reused Python worker still holds the previous run's collective server, and a second
    MultiWorkerMirroredStrategy in the same process would wait forever. The child asks
    the task for every ``allGather`` over a socket; it dies with its parent.
    """

    def run(_: Any) -> Any:
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
        rank = ctx.partitionId()
        env = dict(os.environ)
        gpus = ctx.resources().get("gpu")
        if gpus is not None and gpus.addresses:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus.addresses)
        host = ctx.getTaskInfos()[rank].address.split(":")[0]
        addresses = list(ctx.allGather(f"{host}:{_free_port()}"))
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": rank}})
        report, error = _run_child(
            env,
            {"plan": json.loads(plan_json), "rank": rank, "size": len(addresses)},
            gather=lambda v: list(ctx.allGather(v)),
        )
        if error is not None:
            raise RuntimeError(f"training worker {rank} failed: {error}")
        yield json.dumps(report)

    return run


def _run_child(
    env: dict[str, str], start: dict[str, Any], gather: Callable[[str], list[str]]
) -> tuple[dict[str, Any] | None, str | None]:
    """Run :func:`_child_main` in a fresh interpreter; serve its gathers; (report, error)."""
    import subprocess

    parent, child = socket.socketpair()
    with parent:
        proc = subprocess.Popen(
            [sys.executable, "-m", "xray_spark.training", "--worker-fd", str(child.fileno())],
            env=env,
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        child.close()
        reader, writer = parent.makefile("r", encoding="utf-8"), parent.makefile("w", encoding="utf-8")
        writer.write(json.dumps(start) + "\n")
        writer.flush()
        report = error = None
        for line in reader:
            message = json.loads(line)
            if message["type"] == "gather":
                writer.write(json.dumps(gather(message["value"])) + "\n")
                writer.flush()
            elif message["type"] == "report":
                report = message["value"]
            elif message["type"] == "error":
                error = message["value"]
        code = proc.wait()
    if error is None and (code != 0 or report is None):
        error = f"the training process exited with status {code}"
    return report, error


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError):  # not Linux: the child then outlives a killed task
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _child_main(fd: int) -> int:
    """The training process of one barrier task: read the plan, train, report."""
    sock = socket.socket(fileno=fd)
    reader, writer = sock.makefile("r", encoding="utf-8"), sock.makefile("w", encoding="utf-8")
    start = json.loads(reader.readline())

    def gather(value: str) -> list[str]:
        writer.write(json.dumps({"type": "gather", "value": value}) + "\n")
        writer.flush()
        return json.loads(reader.readline())

    try:
        report = train_worker(TrainPlan(**start["plan"]), Cluster(start["rank"], start["size"], gather=gather))
    except Exception as exc:
        writer.write(json.dumps({"type": "error", "value": f"{type(exc).__name__}: {exc}"}) + "\n")
        writer.flush()
        return 1
    writer.write(json.dumps({"type": "report", "value": report}) + "\n")
    writer.flush()
    return 0


def train_on_spark(spark: Any, plan: TrainPlan, num_workers: int) -> list[dict[str, Any]]:
    """Run ``num_workers`` TensorFlow workers as one Spark barrier stage; reports by rank."""
    from xray_spark.errors import XraySparkError

    rdd = spark.sparkContext.parallelize(range(num_workers), num_workers).barrier()
    plan_json = json.dumps(dataclasses.asdict(plan))
    try:
        reports = [json.loads(r) for r in rdd.mapPartitions(barrier_task(plan_json)).collect()]
    except Exception as exc:
        raise XraySparkError(f"a training worker failed: {worker_error(exc)}") from exc
    return sorted(reports, key=lambda r: r["rank"])


def worker_error(exc: BaseException) -> str:
    """The Python error a failed Spark task raised (the traceback's last line), without the Java stack."""
    lines = str(exc).splitlines()
    for i, line in enumerate(lines):
        if "Traceback (most recent call last)" in line:
            block = []
            for rest in lines[i + 1 :]:
                if not rest.strip() or rest.strip().startswith("at "):
                    break
                block.append(rest.strip())
            if block:
                return block[-1]
    return lines[0] if lines else type(exc).__name__


# =========================================================================================
# the driver side: one call for jobs/train.py
# =========================================================================================
def _new_version(model: str) -> str:
    return f"{model}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def _resumable(models_dir: str, model: str, dataset: str) -> str | None:
    """The newest unfinished run of ``model`` on ``dataset``, if any."""
    if not os.path.isdir(models_dir):
        return None
    for version in sorted(os.listdir(models_dir), reverse=True):
        state = read_state(os.path.join(models_dir, version))
        plan_path = os.path.join(models_dir, version, CHECKPOINT_DIR, "plan.json")
        if state is None or state.get("finished") or not os.path.exists(plan_path):
            continue
        with open(plan_path, encoding="utf-8") as fh:
            plan = json.load(fh)
        if plan["train"]["model"] == model and plan["dataset"] == dataset:
            return version
    return None


def run_training(spark: Any, settings: Any, lake: Any, *, resume: bool = False) -> dict[str, Any]:
    """Train a model from ``lake/petastorm/<dataset>``; returns the run's summary.

    ``settings`` is a :class:`~xray_spark.config.Settings`; the model lands in
    ``lake/models/<version>/`` and a row in ``xray.models``.
    """
    from xray_spark import registry, tables
    from xray_spark import store as store_mod
    from xray_spark.errors import UsageError
    from xray_spark.schema import MODELS_SCHEMA

    if not lake.is_local:
        raise UsageError("training writes checkpoints with local file APIs: use a local or mounted --lake for train")
    started = time.monotonic()
    manifest = store_mod.require_manifest(lake, settings.dataset)
    train = dataclasses.asdict(settings.train)
    models_dir = lake.path("models")
    version = _resumable(models_dir, settings.train.model, settings.dataset) if resume else None
    if resume and version is None:
        log.info("nothing to resume for %s on %s: starting a new run", settings.train.model, settings.dataset)
    if version is not None:
        with open(os.path.join(models_dir, version, CHECKPOINT_DIR, "plan.json"), encoding="utf-8") as fh:
            saved = json.load(fh)
        train = saved["train"] | {"epochs": settings.train.epochs}
        log.info("resuming %s", version)
    else:
        version = _new_version(settings.train.model)
    plan = TrainPlan(
        store_url=lake.store_url(settings.dataset),
        dataset=settings.dataset,
        labels=list(manifest.labels),
        image_size=manifest.image_size,
        model_dir=os.path.join(models_dir, version),
        version=version,
        train=train,
        resume=version is not None and resume,
    )
    n = int(train["num_workers"])
    if n > 1:
        store_mod.check_shardable(plan.store_url, n)
    _write_json_atomic(os.path.join(plan.model_dir, CHECKPOINT_DIR, "plan.json"), dataclasses.asdict(plan))
    reports = [train_worker(plan, Cluster())] if n == 1 else train_on_spark(spark, plan, n)
    meta = reports[0]["result"]
    row = {
        "version": version,
        "created": meta["created"],
        "path": plan.model_dir,
        "model": meta["model"],
        "dataset": settings.dataset,
        "labels": meta["labels"],
        "image_size": manifest.image_size,
        "val_auroc_mean": float(meta["val_auroc_mean"]),
        "best_epoch": int(meta["best_epoch"]),
        "num_workers": n,
        **registry.digests(plan.model_dir, os.path.join(plan.model_dir, MODEL_FILE)),
    }
    tables.write_table(spark.createDataFrame([row], MODELS_SCHEMA), lake, "models", mode="append")
    return {
        "version": version,
        "model_dir": plan.model_dir,
        "model_file": os.path.join(plan.model_dir, MODEL_FILE),
        "model": meta["model"],
        "labels": meta["labels"],
        "val_auroc": meta["val_auroc"],
        "val_auroc_mean": meta["val_auroc_mean"],
        "thresholds": meta["thresholds"],
        "best_epoch": meta["best_epoch"],
        "epochs_run": meta["epochs_run"],
        "num_workers": n,
        "workers": [
            {k: r[k] for k in ("rank", "steps_per_epoch", "final_weights_digest", "seconds", "on_gpu")}
            | {"train_rows": len(r["train_ids"])}
            for r in reports
        ],
        "seconds": round(time.monotonic() - started, 1),
    }


if __name__ == "__main__":
    import argparse

    _parser = argparse.ArgumentParser(description="one training worker of a Spark barrier stage (internal)")
    _parser.add_argument("--worker-fd", type=int, required=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    sys.exit(_child_main(_parser.parse_args().worker_fd))
