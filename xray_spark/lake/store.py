"""The training store's manifest: what a Petastorm store holds beyond its Unischema.

``lake/petastorm/<dataset>/_xray_store.json`` records the label set (in vector order), the
image side, the split settings and the runs that wrote the store. Readers (training,
scoring) take the label order from here; an incremental run refuses to mix a different
label set or image size into an existing store.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from xray_spark.errors import UsageError
from xray_spark.lake import Lake

MANIFEST_NAME = "_xray_store.json"
#: 2: labels stored as a "0"/"1" string (``schema.encode_labels``); 1: Petastorm's NdarrayCodec (np.load).
FORMAT_VERSION = 2


@dataclasses.dataclass(frozen=True)
class StoreManifest:
    dataset: str
    labels: list[str]
    image_size: int
    split: dict[str, Any]
    runs: list[dict[str, Any]]
    format_version: int = FORMAT_VERSION
    #: A DICOM store's pseudonym key, as :func:`xray_spark.privacy.key_fingerprint` gives it (never the key).
    key_fingerprint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def manifest_path(lake: Lake, dataset: str) -> str:
    return lake.path("petastorm", dataset, MANIFEST_NAME)


def read_manifest(lake: Lake, dataset: str) -> StoreManifest | None:
    path = manifest_path(lake, dataset)
    if not lake.exists(path):
        return None
    raw = lake.read_json(path)
    try:
        return StoreManifest(**raw)
    except TypeError as exc:
        raise UsageError(f"store manifest {path} is not one this version of xray-spark can read: {exc}") from None


def require_manifest(lake: Lake, dataset: str) -> StoreManifest:
    manifest = read_manifest(lake, dataset)
    if manifest is None:
        raise UsageError(
            f"no training store for dataset {dataset!r} under {lake.path('petastorm')}: "
            "run jobs/prepare.py first (or pass the right --lake / --dataset)"
        )
    return manifest


def write_manifest(lake: Lake, manifest: StoreManifest) -> None:
    lake.write_json(manifest_path(lake, manifest.dataset), manifest.to_dict())


def check_compatible(manifest: StoreManifest, labels: list[str], image_size: int, split: dict[str, Any]) -> None:
    """An incremental run must add rows of the same shape, encoding and split rule as the store already holds."""
    if manifest.format_version != FORMAT_VERSION:
        raise UsageError(
            f"store {manifest.dataset!r} is in format {manifest.format_version} (labels decoded with np.load, which "
            f"crashes in reader threads on Python 3.11) and this version writes format {FORMAT_VERSION}: rebuild it "
            "with a full prepare --replace"
        )
    if manifest.image_size != image_size:
        raise UsageError(
            f"store {manifest.dataset!r} holds images of {manifest.image_size} px and this run asks for "
            f"image.size={image_size}: keep the size, or write a new store with --set dataset=NEW_NAME"
        )
    if manifest.labels != labels:
        raise UsageError(
            f"store {manifest.dataset!r} was built with labels {manifest.labels} and this run would use {labels}: "
            "keep labels.findings and labels.min_cases, or write a new store with --set dataset=NEW_NAME"
        )
    kept = {key: manifest.split.get(key) for key in split}
    if kept != split:  # a returning patient's new films would land in another split than the old ones
        raise UsageError(
            f"store {manifest.dataset!r} was split with {kept} and this run asks for {split}: a patient's new films "
            "would land in another split than their earlier ones; keep the split.* settings, or write a new store "
            "with --set dataset=NEW_NAME"
        )


def row_group_count(store_url: str) -> int:
    """Row groups in the store's Parquet files: the units Petastorm deals out to shards."""
    import pyarrow.dataset as pads
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(store_url)
    dataset = pads.dataset(path, filesystem=fs, format="parquet")
    return sum(fragment.metadata.num_row_groups for fragment in dataset.get_fragments())


def check_shardable(store_url: str, num_workers: int) -> None:
    """Each of ``num_workers`` training workers needs at least one row group of its own."""
    groups = row_group_count(store_url)
    if groups < num_workers:
        raise UsageError(
            f"the store {store_url} has {groups} row group(s), fewer than train.num_workers={num_workers}: "
            f"train with --set train.num_workers={max(1, groups)}, or rewrite the store with a smaller "
            "prepare.images_per_file (a full prepare, not --incremental)"
        )


def quiet_petastorm_warnings() -> None:
    """petastorm 0.12 uses pyarrow APIs that pyarrow 14 flags as deprecated, on every row group it reads."""
    for category in (FutureWarning, DeprecationWarning, UnicodeWarning):
        warnings.filterwarnings("ignore", category=category, module=r"petastorm(\..*)?$")
    # Two notices about what the training reader does on purpose: it reads the PNG bytes
    # undecoded with make_batch_reader, and names its fields exactly.
    for notice in (r"Please use make_reader", r"schema_fields behavior has changed"):
        warnings.filterwarnings("ignore", message=notice, category=UserWarning, module=r"petastorm(\..*)?$")
