"""The training store's reader: labels decoded without np.load, the same rows from many threads."""

from __future__ import annotations

import threading

import numpy as np
from petastorm import make_reader

from xray_spark.lake.schema import XraySchema, decode_labels


def test_labels_decode_without_np_load_or_ast(prepared, monkeypatch):
    """Fails on Petastorm's NdarrayCodec, which calls np.load (and its ast-based header parser)."""
    import ast

    def forbidden(*_args, **_kwargs):
        raise AssertionError("np.load / ast.literal_eval on the reader's path")

    monkeypatch.setattr(np, "load", forbidden)
    monkeypatch.setattr(ast, "literal_eval", forbidden)
    settings, lake, _ = prepared
    with make_reader(
        lake.store_url(settings.dataset),
        schema_fields=[XraySchema.image_id, XraySchema.labels],
        reader_pool_type="thread",
    ) as reader:
        rows = list(reader)
    assert len(rows) == 160 and all(decode_labels(r.labels).shape == (14,) for r in rows)


def test_the_store_reads_right_with_many_threads_many_times(prepared):
    settings, lake, _ = prepared
    url = lake.store_url(settings.dataset)
    expected = {}
    with make_reader(url, schema_fields=[XraySchema.image_id, XraySchema.labels], reader_pool_type="dummy") as reader:
        for row in reader:
            expected[row.image_id] = decode_labels(row.labels)
    errors: list[BaseException] = []

    def read(_: int) -> None:
        try:
            with make_reader(
                url,
                schema_fields=[XraySchema.image_id, XraySchema.labels, XraySchema.image],
                num_epochs=5,
                reader_pool_type="thread",
                workers_count=8,
            ) as reader:
                for row in reader:
                    np.testing.assert_array_equal(decode_labels(row.labels), expected[row.image_id])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
