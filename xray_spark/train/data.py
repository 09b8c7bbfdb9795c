"""Petastorm store -> ``tf.data`` input pipeline.

Each reader reads one split of the store (a predicate on ``split``), one shard of its row
groups (``cur_shard`` / ``shard_count``) and one epoch (``num_epochs=1``): the training
loop opens a fresh reader per epoch, so every training row is read exactly once per
epoch across the workers. Images come out as uint8 ``(size, size, 1)``; the model itself
holds the preprocessing (see ``models.py``), so scoring feeds the same raw pixels.

Training reads whole row groups (``make_batch_reader``) with the PNG bytes undecoded and
decodes them in ``tf.data`` (``decode_png`` in a parallel map, outside the GIL): the
per-row Python of ``make_reader`` was the bottleneck. PNG is lossless, so the pixels are
those ``make_reader``'s codec returns (tested), and each epoch counts the rows it read
against the rows the shard has, so a reader that loses rows fails the run instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from petastorm import make_batch_reader, make_reader
from petastorm.predicates import PredicateBase, in_set

from xray_spark.lake.schema import XraySchema, decode_labels

#: Fields the training pipeline reads (the split too: petastorm's predicate needs it read).
TRAIN_FIELDS = [XraySchema.image, XraySchema.labels, XraySchema.sample_weight, XraySchema.split]


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """Which part of the store a worker reads."""

    split: str
    cur_shard: int | None = None
    shard_count: int | None = None

    def reader_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"predicate": in_set([self.split], XraySchema.split.name)}
        if self.shard_count and self.shard_count > 1:
            kwargs.update(cur_shard=self.cur_shard, shard_count=self.shard_count)
        return kwargs


def shard_ids_and_labels(store_url: str, spec: ShardSpec) -> tuple[list[str], np.ndarray]:
    """The image ids and label vectors one epoch of this shard yields (no pixels are read)."""
    ids: list[str] = []
    labels: list[np.ndarray] = []
    with make_reader(
        store_url,
        schema_fields=[XraySchema.image_id, XraySchema.labels, XraySchema.split],
        num_epochs=1,
        shuffle_row_groups=False,
        reader_pool_type="dummy",
        **spec.reader_kwargs(),
    ) as reader:
        for row in reader:
            ids.append(row.image_id)
            labels.append(decode_labels(row.labels))
    return ids, (np.stack(labels).astype(np.float32) if labels else np.zeros((0, 0), np.float32))


def read_arrays(store_url: str, spec: ShardSpec, *, max_rows: int = 0) -> dict[str, np.ndarray]:
    """A whole shard as numpy arrays (evaluation sets): ids, images (N, S, S, 1), labels (N, L)."""
    ids: list[str] = []
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    with make_reader(
        store_url,
        schema_fields=[XraySchema.image_id, XraySchema.image, XraySchema.labels, XraySchema.split],
        num_epochs=1,
        shuffle_row_groups=False,
        reader_pool_type="thread",
        workers_count=2,
        **spec.reader_kwargs(),
    ) as reader:
        for row in reader:
            ids.append(row.image_id)
            images.append(row.image)
            labels.append(decode_labels(row.labels))
            if max_rows and len(ids) >= max_rows:
                break
    if not ids:
        return {
            "ids": np.array([], dtype=object),
            "images": np.zeros((0, 1, 1, 1), np.uint8),
            "labels": np.zeros((0, 0), np.float32),
        }
    order = np.argsort(ids)  # a fixed order, whatever order the reader threads finished in
    return {
        "ids": np.asarray(ids, dtype=object)[order],
        "images": np.stack(images)[order][..., None],
        "labels": np.stack(labels).astype(np.float32)[order],
    }


class SplitIs(PredicateBase):
    """Rows of one split, for ``make_batch_reader`` (its predicates get a whole row group as a DataFrame)."""

    def __init__(self, split: str) -> None:
        self.split = split

    def get_fields(self) -> set[str]:
        return {XraySchema.split.name}

    def do_include(self, values: Any) -> Any:
        return values[XraySchema.split.name] == self.split


class RowLoss(RuntimeError):
    """The store's reader returned another number of rows than the shard has."""


@contextmanager
def training_dataset(
    store_url: str,
    spec: ShardSpec,
    *,
    image_size: int,
    n_labels: int,
    batch_size: int,
    shuffle_buffer: int,
    seed: int,
    n_batches: int | None = None,
    use_sample_weights: bool = False,
    expected_rows: int | None = None,
) -> Iterator[Any]:
    """One epoch of one shard as a batched ``tf.data.Dataset`` of (image, labels, weight).

    With ``n_batches`` the dataset is padded to exactly that many batches with
    zero-weight batches: multi-worker training needs every worker to take the same
    number of steps, and a zero weight adds nothing to the loss. With ``expected_rows``,
    leaving the block after a whole epoch raises :class:`RowLoss` when the reader returned
    another number of rows.
    """
    from xray_spark.tf_quiet import import_tensorflow

    tf = import_tensorflow()
    kwargs = spec.reader_kwargs() | {"predicate": SplitIs(spec.split)}
    fields = [f.name for f in TRAIN_FIELDS]
    read = {"rows": 0}
    with make_batch_reader(
        store_url,
        schema_fields=fields,
        num_epochs=1,
        shuffle_row_groups=shuffle_buffer > 0,
        seed=seed,
        reader_pool_type="thread",
        workers_count=2,
        **kwargs,
    ) as reader:

        def row_groups() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            for group in reader:
                n = len(group.image)
                read["rows"] += n
                # "0"/"1" characters (schema.encode_labels) -> 0.0/1.0, a row group at a time
                codes = np.frombuffer("".join(group.labels).encode("ascii"), dtype=np.uint8)
                labels = codes.reshape(n, n_labels).astype(np.float32) - 48.0
                weights = np.asarray(group.sample_weight, dtype=np.float32)
                yield np.asarray(group.image, dtype=object), labels, weights

        signature = (
            tf.TensorSpec([None], tf.string),
            tf.TensorSpec([None, n_labels], tf.float32),
            tf.TensorSpec([None], tf.float32),
        )
        ds = tf.data.Dataset.from_generator(row_groups, output_signature=signature).unbatch()

        def to_example(png: Any, labels: Any, weight: Any) -> tuple[Any, Any, Any]:
            image = tf.ensure_shape(tf.io.decode_png(png, channels=1), [image_size, image_size, 1])
            return image, labels, weight if use_sample_weights else tf.constant(1.0)

        ds = ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
        if shuffle_buffer > 0:
            ds = ds.shuffle(shuffle_buffer, seed=seed)
        ds = ds.batch(batch_size)
        if n_batches is not None:
            pad = tf.data.Dataset.from_tensors(
                (
                    tf.zeros([batch_size, image_size, image_size, 1], tf.uint8),
                    tf.zeros([batch_size, n_labels], tf.float32),
                    tf.zeros([batch_size], tf.float32),
                )
            ).repeat()
            ds = ds.concatenate(pad).take(n_batches)
        yield ds.prefetch(tf.data.AUTOTUNE)
    if expected_rows is not None and read["rows"] != expected_rows:
        raise RowLoss(
            f"the store's reader returned {read['rows']:,} of the {expected_rows:,} rows of {spec} in one epoch: "
            "refusing to train on a partial epoch (a petastorm other than the pinned 0.12.1 loses row groups)"
        )
