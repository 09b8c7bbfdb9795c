"""What the worklist shows (the web app and the static pages), read from the lake's Parquet tables with pyarrow,
on the lake's own file system (local, HDFS or S3): no Spark, no JVM. Each table is read the way it is
written, through its catalog entry (:func:`catalog.arrow_partitioning`); no path into a table is built by hand.

The newest prediction per film follows the rule of the ``xray.latest_predictions`` view (the
champion's row where it scored the film, else the newest model's; of that version the newest
scoring; only films still in ``xray.studies``), and the worklist order is :data:`risk.ORDER`.
Each table is read again only when its files change (their names, sizes and times are the
key), so a page costs a lookup, not a scan; pictures come from the store one row group at a time.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import OrderedDict
from collections.abc import Collection
from typing import Any

import pandas as pd
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from xray_spark import risk
from xray_spark.labels import FINDINGS, probability_column
from xray_spark.lake import Lake, catalog, tables
from xray_spark.pictures import hot_box, overlay_png

PROBABILITIES = {probability_column(f): f for f in FINDINGS}
SCORED_AT, RUN_ID = catalog.SCORED_AT, catalog.RUN_ID
#: Columns of pictures: never read with a whole table, only per film.
PICTURE_COLUMNS = ("heatmap_png", "picture")


def _local_day(times: pd.Series, zone: dt.tzinfo) -> pd.Series:
    """Each time (UTC) as its day in ``zone``, ``YYYY-MM-DD``."""
    return pd.to_datetime(times, utc=True).dt.tz_convert(zone).dt.strftime("%Y-%m-%d")


def _signature(fs: pafs.FileSystem, path: str) -> tuple:
    """The table's data files with their sizes and times (none when the folder is absent): it changed when this did.
    Files and folders whose names start with '.' or '_' (Spark's and Petastorm's own) are not data."""
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    found = []
    for info in infos:
        inside = info.path[len(path) :].strip("/").split("/")
        hidden = any(part.startswith((".", "_")) for part in inside)
        if info.type == pafs.FileType.File and info.base_name.endswith(".parquet") and not hidden:
            found.append((info.path, info.size, info.mtime_ns))
    return tuple(sorted(found))


#: The size of the overlays the worklist lays over its thumbnails, and over a film in the large view.
OVERLAY_SIDE, LARGE_OVERLAY = 160, 512


class LakeView:
    """One lake's tables for the pages; safe to share between the server's threads."""

    def __init__(self, lake: Lake, *, pictures_cached: int = 4000, overlays_cached: int = 2000) -> None:
        self.lake = lake
        self.root = lake.root
        self._fs, _ = lake.filesystem(lake.root)
        self._lock = threading.Lock()
        self._overlays: OrderedDict[tuple[str, str, str, str, int], bytes] = OrderedDict()
        self._boxes: dict[tuple[str, str, str, str], tuple[float, float, float, float]] = {}
        self._overlays_cached = overlays_cached
        self._tables: dict[str, tuple[tuple, pd.DataFrame | None]] = {}
        self._latest: dict[str, tuple[tuple, pd.DataFrame]] = {}
        self._local_days: dict[tuple[str, str], tuple[pd.DataFrame, pd.Series]] = {}
        self._pictures: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._pictures_cached = pictures_cached
        self._index: dict[tuple[str, str], tuple[tuple, dict[str, tuple[str, int, int]]]] = {}

    def table(self, name: str) -> pd.DataFrame | None:
        """The whole table (its small columns; pictures are read per film), or None when absent."""
        partitioning = catalog.arrow_partitioning(name)  # a name the catalog does not declare fails here
        path = self._path("tables", name)
        key = _signature(self._fs, path)
        with self._lock:
            cached = self._tables.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        frame = None
        if key:
            data = pads.dataset(path, format="parquet", partitioning=partitioning, filesystem=self._fs)
            columns = [c for c in data.schema.names if c not in PICTURE_COLUMNS]
            frame = data.to_table(columns=columns).to_pandas()
        with self._lock:
            self._tables[name] = (key, frame)
        return frame

    def latest(self, dataset: str) -> pd.DataFrame:
        """Per film of ``dataset`` still in its store, its newest prediction (empty when none)."""
        parts = [self.table(n) for n in ("predictions", "models", "model_aliases", "studies")]
        key = tuple(id(p) for p in parts)
        with self._lock:
            cached = self._latest.get(dataset)
        if cached is not None and cached[0] == key:
            return cached[1]
        predictions, models, _, studies = parts
        if predictions is None or predictions.empty:
            return pd.DataFrame()
        p = predictions[predictions["dataset"].astype(str) == dataset].copy()
        p["_champion"] = p["model_version"] == self.champion()
        created = dict(zip(models["version"], models["created"], strict=True)) if models is not None else {}
        p["_created"] = p["model_version"].map(created)
        p = p.sort_values(["_champion", "_created", "model_version", "scored_at"], ascending=False, na_position="last")
        p = p.drop_duplicates("image_id", keep="first")
        if studies is not None:
            held = studies[studies["dataset"].astype(str) == dataset]
            p = p[p["image_id"].isin(set(held["image_id"]))]
            extra = [c for c in ("accession_number", "study_datetime") if c in held.columns]
            if extra:
                p = p.merge(held[["image_id", *extra]], on="image_id", how="left")
        p["score_date"] = p["score_date"].astype(str)
        p = p.drop(columns=["_champion", "_created"])
        with self._lock:
            self._latest[dataset] = (key, p)
        return p

    def champion(self) -> str | None:
        aliases = self.table("model_aliases")
        if aliases is None:
            return None
        rows = aliases[aliases["alias"] == tables.CHAMPION].sort_values("set_at")
        return None if rows.empty else str(rows["version"].iloc[-1])

    def monitoring(self, dataset: str) -> dict[str, list[dict[str, Any]]]:
        """``xray.monitoring`` of the dataset: measure -> its tested nights in run order (score_date, p_value,
        alert)."""
        table = self.table("monitoring")
        if table is None:
            return {}
        mine = table[(table["dataset"].astype(str) == dataset) & (table["test"] != "none")].sort_values("run_id")
        out: dict[str, list[dict[str, Any]]] = {}
        for r in mine[["measure", "score_date", "run_id", "p_value", "alert"]].to_dict("records"):
            p = r["p_value"]
            night = r | {"score_date": str(r["score_date"]), "p_value": None if pd.isna(p) else float(p)}
            out.setdefault(str(r["measure"]), []).append(night | {"alert": bool(r["alert"])})
        return out

    def datasets(self) -> list[str]:
        predictions = self.table("predictions")
        return [] if predictions is None else sorted(predictions["dataset"].astype(str).unique())

    def dates(self, dataset: str, zone: dt.tzinfo = dt.UTC) -> list[tuple[str, int]]:
        """The days films were scored on in ``zone`` (newest first), with their numbers of films."""
        latest = self.latest(dataset)
        if latest.empty:
            return []
        counts = self._days(dataset, latest, zone).value_counts()
        return sorted(((str(d), int(n)) for d, n in counts.items()), reverse=True)

    def _days(self, dataset: str, latest: pd.DataFrame, zone: dt.tzinfo) -> pd.Series:
        """Each film's day in ``zone`` (of :meth:`latest`'s frame), worked out once per version of the tables."""
        key = (dataset, str(zone))
        with self._lock:
            cached = self._local_days.get(key)
        if cached is not None and cached[0] is latest:
            return cached[1]
        days = _local_day(latest[SCORED_AT], zone)
        with self._lock:
            self._local_days[key] = (latest, days)
        return days

    def nights(self, dataset: str, zone: dt.tzinfo = dt.UTC) -> list[tuple[str, str, int]]:
        """The scoring runs (newest first): their id, when they began in ``zone`` and their number of films (a film
        scored again belongs to its newest run)."""
        latest = self.latest(dataset)
        if latest.empty:
            return []
        runs = latest.groupby(RUN_ID)[SCORED_AT].agg(["min", "size"])
        began = pd.to_datetime(runs["min"], utc=True).dt.tz_convert(zone).dt.strftime("%Y-%m-%d %H:%M")
        return sorted(((str(r), began[r], int(runs["size"][r])) for r in runs.index), reverse=True)

    def worklist(
        self, dataset: str, which: str, limit: int, zone: dt.tzinfo = dt.UTC, *, skip: Collection[str] = ()
    ) -> list[dict[str, Any]]:
        """The ``limit`` riskiest films of a list, in :data:`risk.ORDER`, leaving out ``skip`` (image ids): the films
        scored on the day ``which`` (``YYYY-MM-DD`` in ``zone``) or by the run ``which`` (a run id)."""
        films = self.latest(dataset)
        if films.empty:
            return []
        in_run = films[RUN_ID].astype(str) == which
        films = films[in_run if in_run.any() else self._days(dataset, films, zone) == which]
        films = films[~films["image_id"].isin(set(skip))]
        by = [name for name, _ in risk.ORDER]
        ascending = [direction == "ASC" for _, direction in risk.ORDER]
        films = films.sort_values(by, ascending=ascending, na_position="last").head(limit)
        return [_film(r) for r in films.to_dict("records")]

    def list_size(self, dataset: str, which: str, zone: dt.tzinfo = dt.UTC) -> int | None:
        """How many films a list holds (None: no such list)."""
        found = dict(self.dates(dataset, zone)) | {run: n for run, _, n in self.nights(dataset, zone)}
        return found.get(which)

    def patient(self, dataset: str, patient_id: int) -> list[dict[str, Any]]:
        """A patient's films in study order (study time where known, then follow-up); ``prior``: fetched from the
        archive as an earlier film on the patient's first night (``xray.priors``)."""
        latest = self.latest(dataset)
        if latest.empty:
            return []
        mine = latest[latest["patient_id"] == patient_id]
        priors = self.table("priors")  # films fetched from the archive as the patient's earlier ones
        earlier = set() if priors is None else set(priors.loc[priors["dataset"].astype(str) == dataset, "image_id"])
        films = [{**_film(r), "prior": r["image_id"] in earlier} for r in mine.to_dict("records")]
        return sorted(films, key=lambda f: (f["study_datetime"] is None, f["study_datetime"] or "", f["follow_up"]))

    def film(self, dataset: str, image_id: str) -> dict[str, Any] | None:
        latest = self.latest(dataset)
        if latest.empty:
            return None
        rows = latest[latest["image_id"] == image_id].to_dict("records")
        return _film(rows[0]) if rows else None

    def known(self, dataset: str) -> str | None:
        """The lake's own name of ``dataset`` when its catalog holds one (predictions scored for it), else None.

        Every path the app reads is built from this name, never from a request's text: ``../..`` or
        an absolute path is no dataset of the lake, so it reaches no folder.
        """
        names = self.datasets()
        return next((name for name in names if name == dataset), None)

    def heatmaps(self, dataset: str, wanted: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], bytes]:
        """The newest stored heatmap PNG of each (image_id, finding, model_version) in ``wanted``: one scan."""
        path = self._path("tables", "heatmaps")
        if self.known(dataset) is None or not wanted or not _signature(self._fs, path):
            return {}
        data = pads.dataset(
            path, format="parquet", partitioning=catalog.arrow_partitioning("heatmaps"), filesystem=self._fs
        )
        rows = data.to_table(
            columns=["image_id", "finding", "model_version", "heatmap_png", "scored_at"],
            filter=(pads.field("dataset") == dataset) & pads.field("image_id").isin(sorted({w[0] for w in wanted})),
        ).to_pylist()
        want, out, when = set(wanted), {}, {}
        for r in rows:
            key = (r["image_id"], r["finding"], r["model_version"])
            if key in want and (key not in when or r["scored_at"] > when[key]):
                out[key], when[key] = bytes(r["heatmap_png"]), r["scored_at"]
        return out

    def overlays(
        self, dataset: str, keys: list[tuple[str, str, str]], side: int = OVERLAY_SIDE
    ) -> dict[tuple[str, str, str], bytes]:
        """The see-through overlay (RGBA PNG, ``side`` px) of each (image_id, finding, model_version), drawn once
        and kept: a page's are drawn in one go, its pictures' requests then find them."""
        with self._lock:
            found = {k: self._overlays[(dataset, *k, side)] for k in keys if (dataset, *k, side) in self._overlays}
        missing = [k for k in keys if k not in found]
        for key, png in self.heatmaps(dataset, missing).items():
            found[key] = overlay_png(png, side)
            with self._lock:
                self._overlays[(dataset, *key, side)] = found[key]
                self._boxes[(dataset, *key)] = hot_box(png)
                while len(self._overlays) > self._overlays_cached:
                    self._overlays.popitem(last=False)
        return found

    def hot_boxes(self, dataset: str, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], tuple]:
        """The hot box (x, y, w, h as fractions of the stored square) of each heatmap in ``keys``."""
        with self._lock:
            found = {k: self._boxes[(dataset, *k)] for k in keys if (dataset, *k) in self._boxes}
        missing = [k for k in keys if k not in found]
        for key, png in self.heatmaps(dataset, missing).items():
            found[key] = hot_box(png)
            with self._lock:
                self._boxes[(dataset, *key)] = found[key]
        return found

    def heatmap_findings(self, dataset: str, image_ids: list[str]) -> dict[tuple[str, str], set[str]]:
        """(image_id, model_version) -> the findings with a heatmap."""
        maps = self.table("heatmaps")
        if maps is None or not image_ids:
            return {}
        mine = maps[(maps["dataset"].astype(str) == dataset) & maps["image_id"].isin(image_ids)]
        out: dict[tuple[str, str], set[str]] = {}
        for image_id, version, finding in mine[["image_id", "model_version", "finding"]].itertuples(index=False):
            out.setdefault((image_id, version), set()).add(finding)
        return out

    def study_uids(self, dataset: str, image_ids: list[str]) -> dict[str, str]:
        instances = self.table("dicom_instances")
        if instances is None or "study_uid" not in instances.columns:
            return {}
        mine = instances[(instances["dataset"].astype(str) == dataset) & instances["image_id"].isin(image_ids)]
        return {i: u for i, u in zip(mine["image_id"], mine["study_uid"], strict=True) if u}

    def picture(self, dataset: str, image_id: str) -> bytes | None:
        """The film's stored image (the store's PNG), or None when the store does not hold it."""
        with self._lock:
            if (dataset, image_id) in self._pictures:
                self._pictures.move_to_end((dataset, image_id))
                return self._pictures[(dataset, image_id)]
        where = self._store_index(dataset).get(image_id)
        if where is None:
            return None
        file, group, row = where
        with self._fs.open_input_file(file) as stream:
            png = pq.ParquetFile(stream).read_row_group(group, columns=["image"]).column("image")[row].as_py()
        with self._lock:
            self._pictures[(dataset, image_id)] = png
            while len(self._pictures) > self._pictures_cached:
                self._pictures.popitem(last=False)
        return png

    def display(self, dataset: str, image_id: str) -> tuple[bytes | None, str | None] | None:
        """The film's display picture (JPEG) and, where it has none, why (``xray.display_pictures``); None when the
        table holds no row of the film (a lake prepared before display pictures, or with them off)."""
        where = self._display_index(dataset).get(image_id)
        if where is None:
            return None
        file, group, row = where
        with self._fs.open_input_file(file) as stream:
            found = pq.ParquetFile(stream).read_row_group(group, columns=["picture", "note"])
        return found.column("picture")[row].as_py(), found.column("note")[row].as_py()

    def display_notes(self, dataset: str, image_ids: list[str]) -> dict[str, str]:
        """Per film of ``image_ids`` with a row in ``xray.display_pictures``: ``""`` when it has a display picture,
        else why not (its note)."""
        table = self.table("display_pictures")
        if table is None or not image_ids:
            return {}
        mine = table[(table["dataset"].astype(str) == dataset) & table["image_id"].isin(image_ids)]
        return {
            i: ("" if n is None or pd.isna(n) else str(n)) for i, n in zip(mine["image_id"], mine["note"], strict=True)
        }

    def _store_index(self, dataset: str) -> dict[str, tuple[str, int, int]]:
        """image_id -> (file, row group, row) of the store, read from its id column alone (none for a name
        that is not one of the lake's datasets)."""
        name = self.known(dataset)
        if name is None:
            return {}
        return self._row_index(("store", name), _signature(self._fs, self._path("petastorm", name)))

    def _display_index(self, dataset: str) -> dict[str, tuple[str, int, int]]:
        """image_id -> (file, row group, row) of the dataset's display pictures."""
        name = self.known(dataset)
        path = self._path("tables", "display_pictures")
        key = _signature(self._fs, path) if name is not None else ()
        if not key:
            return {}
        data = pads.dataset(
            path, format="parquet", partitioning=catalog.arrow_partitioning("display_pictures"), filesystem=self._fs
        )
        mine = {fragment.path for fragment in data.get_fragments(filter=pads.field("dataset") == name)}
        return self._row_index(("display_pictures", name), tuple(f for f in key if f[0] in mine))

    def _row_index(self, name: tuple[str, str], files: tuple) -> dict[str, tuple[str, int, int]]:
        """image_id -> (file, row group, row) over ``files`` (a signature: path, size, time), read from their id
        column alone; built again only when the files change."""
        with self._lock:
            cached = self._index.get(name)
        if cached is not None and cached[0] == files:
            return cached[1]
        index: dict[str, tuple[str, int, int]] = {}
        for file, _, _ in files:
            with self._fs.open_input_file(file) as stream:
                parquet = pq.ParquetFile(stream)
                for group in range(parquet.num_row_groups):
                    ids = parquet.read_row_group(group, columns=["image_id"]).column("image_id").to_pylist()
                    index.update((image_id, (file, group, row)) for row, image_id in enumerate(ids))
        with self._lock:
            self._index[name] = (files, index)
        return index

    def _path(self, *parts: str) -> str:
        return self.lake.filesystem(self.lake.path(*parts))[1]


def _film(row: dict[str, Any]) -> dict[str, Any]:
    """A prediction row as the pages use it."""
    probs = {f: float(row[c]) for c, f in PROBABILITIES.items() if c in row and pd.notna(row[c])}
    when = row.get("study_datetime")
    risk_score = row.get("risk_score")
    return {
        "image_id": row["image_id"],
        "patient_id": int(row["patient_id"]),
        "follow_up": int(row["follow_up"]),
        "view": row.get("view"),
        "model_version": row["model_version"],
        "score_date": row["score_date"],
        "risk_score": None if risk_score is None or pd.isna(risk_score) else float(risk_score),
        "risk_finding": row.get("risk_finding"),
        "called": [str(f) for f in row.get("called", row.get("positive_findings", []))],
        "probs": probs,
        "accession_number": row.get("accession_number") if pd.notna(row.get("accession_number")) else None,
        "study_datetime": None if when is None or pd.isna(when) else str(when),
    }
