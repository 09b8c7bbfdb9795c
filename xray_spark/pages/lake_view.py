"""What the web app shows, read from the lake's Parquet tables with pyarrow: no Spark, no JVM.

The newest prediction per film follows the rule of the ``xray.latest_predictions`` view (the
champion's row where it scored the film, else the newest model's; of that version the newest
scoring; only films still in ``xray.studies``), and the worklist order is :data:`risk.ORDER`.
Each table is read again only when its files change (their names, sizes and times are the
key), so a page costs a lookup, not a scan; pictures come from the store one row group at a time.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from xray_spark import risk
from xray_spark.labels import FINDINGS, probability_column
from xray_spark.lake import catalog, tables

PROBABILITIES = {probability_column(f): f for f in FINDINGS}


def _signature(path: str) -> tuple:
    """The table's data files with their sizes and times: it changed when this did."""
    found = []
    for folder, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        for name in files:
            if name.endswith(".parquet") and not name.startswith((".", "_")):
                st = os.stat(os.path.join(folder, name))
                found.append((folder, name, st.st_size, st.st_mtime_ns))
    return tuple(sorted(found))


class LakeView:
    """One lake's tables for the pages; safe to share between the server's threads."""

    def __init__(self, root: str, *, pictures_cached: int = 4000) -> None:
        self.root = os.path.abspath(root)
        self._lock = threading.Lock()
        self._tables: dict[str, tuple[tuple, pd.DataFrame | None]] = {}
        self._latest: dict[str, tuple[tuple, pd.DataFrame]] = {}
        self._pictures: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._pictures_cached = pictures_cached
        self._index: dict[str, tuple[tuple, dict[str, tuple[str, int, int]]]] = {}

    def table(self, name: str) -> pd.DataFrame | None:
        """The whole table (its small columns; heatmap pictures are read per film), or None when absent."""
        partitioning = catalog.arrow_partitioning(name)  # a name the catalog does not declare fails here
        path = os.path.join(self.root, "tables", name)
        key = _signature(path) if os.path.isdir(path) else ()
        with self._lock:
            cached = self._tables.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        frame = None
        if key:
            data = pads.dataset(path, format="parquet", partitioning=partitioning)
            columns = [c for c in data.schema.names if c != "heatmap_png"]
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

    def datasets(self) -> list[str]:
        predictions = self.table("predictions")
        return [] if predictions is None else sorted(predictions["dataset"].astype(str).unique())

    def dates(self, dataset: str) -> list[tuple[str, int]]:
        latest = self.latest(dataset)
        if latest.empty:
            return []
        counts = latest.groupby("score_date").size()
        return sorted(((str(d), int(n)) for d, n in counts.items()), reverse=True)

    def worklist(self, dataset: str, date: str, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` riskiest films scored on ``date``, in :data:`risk.ORDER`."""
        day = self.latest(dataset)
        if day.empty:
            return []
        day = day[day["score_date"] == date]
        by = [name for name, _ in risk.ORDER]
        ascending = [direction == "ASC" for _, direction in risk.ORDER]
        day = day.sort_values(by, ascending=ascending, na_position="last").head(limit)
        return [_film(r) for r in day.to_dict("records")]

    def patient(self, dataset: str, patient_id: int) -> list[dict[str, Any]]:
        """A patient's films in study order (study time where known, then follow-up)."""
        latest = self.latest(dataset)
        if latest.empty:
            return []
        mine = latest[latest["patient_id"] == patient_id]
        films = [_film(r) for r in mine.to_dict("records")]
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
        path = os.path.join(self.root, "tables", "heatmaps")
        if self.known(dataset) is None or not os.path.isdir(path) or not wanted:
            return {}
        data = pads.dataset(path, format="parquet", partitioning=catalog.arrow_partitioning("heatmaps"))
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
        png = pq.ParquetFile(file).read_row_group(group, columns=["image"]).column("image")[row].as_py()
        with self._lock:
            self._pictures[(dataset, image_id)] = png
            while len(self._pictures) > self._pictures_cached:
                self._pictures.popitem(last=False)
        return png

    def _store_index(self, dataset: str) -> dict[str, tuple[str, int, int]]:
        """image_id -> (file, row group, row) of the store, read from its id column alone (none for a name
        that is not one of the lake's datasets)."""
        name = self.known(dataset)
        if name is None:
            return {}
        path = os.path.join(self.root, "petastorm", name)
        key = _signature(path) if os.path.isdir(path) else ()
        with self._lock:
            cached = self._index.get(dataset)
        if cached is not None and cached[0] == key:
            return cached[1]
        index: dict[str, tuple[str, int, int]] = {}
        for folder, name, _, _ in key:
            file = os.path.join(folder, name)
            parquet = pq.ParquetFile(file)
            for group in range(parquet.num_row_groups):
                ids = parquet.read_row_group(group, columns=["image_id"]).column("image_id").to_pylist()
                index.update((image_id, (file, group, row)) for row, image_id in enumerate(ids))
        with self._lock:
            self._index[dataset] = (key, index)
        return index


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
        "called": [str(f) for f in row.get("positive_findings", [])],
        "probs": probs,
        "accession_number": row.get("accession_number") if pd.notna(row.get("accession_number")) else None,
        "study_datetime": None if when is None or pd.isna(when) else str(when),
    }
