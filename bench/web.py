"""The worklist web app's page loads with a lake of 1,500 and of 100,000 scored films.

    python bench/web.py [--sizes 1500 100000] [--loads 100] [--out bench/results/web_cpu2.json]

A small lake is made once by the jobs themselves (a synthetic archive of 100 films at 128 px,
prepare, one epoch of train, promote, score with heatmaps), then its tables and store are
repeated with pyarrow to each size: every film a new image id, four films a patient, the
films spread over 15 scoring dates (so today's date holds a 15th of them), a heatmap for each
of today's films. The app is started as operators start it (``python -m xray_spark.web start``),
a reader signs in over HTTP, and each page is loaded ``--loads`` times: today's worklist (100
films; the HTML alone, and the HTML with its thumbnails and overlays fetched six at a time as a
browser does), a patient's page (a random patient each time), and one picture. The first page
after start (the tables read into memory) and each page's first load (its overlays drawn) are
reported on their own; median and 95th percentile over the rest. Also the server's peak resident memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import log, machine, run_job  # noqa: E402  (beside this file)

DATES = 15
PASSWORD = "a bench password"


def base_lake(cache: Path) -> Path:
    """A lake the jobs made: 100 films prepared, a one-epoch model promoted, scored with heatmaps."""
    archive = {"n_images": 100, "size": 128, "seed": 5}
    return jobs_lake(cache / "web-base-lake", cache / "web-archive", cache / "web-base-work", archive, epochs=1)


def jobs_lake(lake: Path, archive: Path, work: Path, films: dict, *, epochs: int, extra: tuple = ()) -> Path:
    """``lake`` made by the jobs, once: a synthetic archive (``films``: write_archive's n_images, size, seed)
    prepared at 128 px, ``epochs`` of train, promoted, scored with heatmaps of the 100 riskiest."""
    from xray_spark.dev.synthetic import write_archive

    if (lake / "reports" / "scored").exists():
        return lake
    shutil.rmtree(lake, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    if not (archive / "Data_Entry_2017.csv").exists():
        write_archive(archive, **films)
    conf = ["--conf", str(ROOT / "conf" / "local.yaml"), "--lake", str(lake), "--set", "image.size=128", *extra]
    meta = ["--metadata", str(archive / "Data_Entry_2017.csv"), "--images", str(archive / "images")]
    run_job("prepare", [*conf, *meta], work / "prepare.json")
    version = run_job("train", [*conf, "--epochs", str(epochs)], work / "train.json")["summary"]["version"]
    run_job("promote", [*conf, "--model-version", version], work / "promote.json")
    run_job("score", [*conf, "--heatmaps", "top:100"], work / "score.json")
    (lake / "reports" / "scored").write_text(version)
    return lake


def _read(base: Path, name: str) -> pa.Table:
    """A table of ``base`` as the app reads it: through its catalog partitioning."""
    from xray_spark.lake import catalog

    path = base / "tables" / name
    return pads.dataset(str(path), format="parquet", partitioning=catalog.arrow_partitioning(name)).to_table()


def _tiled(table: pa.Table, n: int) -> pa.Table:
    return table.take(pa.array(np.arange(n) % table.num_rows))


def _set(table: pa.Table, name: str, values) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, pa.array(values, table.schema.field(name).type))


def scaled_lake(base: Path, n: int, out: Path) -> Path:
    """``base`` repeated to ``n`` films (see the module's docstring); each scoring date a run of its own."""
    if (out / "ready").exists():
        return out
    shutil.rmtree(out, ignore_errors=True)
    ids = [f"{k:08d}_000.png" for k in range(n)]
    patients = (np.arange(n) // 4 + 1).astype(np.int32)
    follow = (np.arange(n) % 4).astype(np.int32)
    predictions = _read(base, "predictions")
    first = predictions.column("score_date")[0].as_py()
    days = [first - dt.timedelta(days=DATES - 1 - (k % DATES)) for k in range(n)]
    runs = [f"{d:%Y%m%d}T020000Z-bench" for d in days]
    p = _tiled(predictions, n)
    for name, values in (("image_id", ids), ("patient_id", patients), ("follow_up", follow)):
        p = _set(p, name, values)
    scored = predictions.column("scored_at")[0].as_py()
    p = _set(_set(p, "score_date", days), "run_id", runs)
    p = _set(p, "scored_at", [scored - (first - d) for d in days])  # the app's days and nights come from this
    _write(p, out, "predictions", rows_per_file=250_000)
    st = _tiled(_read(base, "studies"), n)
    for name, values in (("image_id", ids), ("patient_id", patients), ("follow_up", follow)):
        st = _set(st, name, values)
    _write(st, out, "studies", rows_per_file=250_000)
    today = [k for k in range(n) if k % DATES == DATES - 1]
    maps = _read(base, "heatmaps")
    h = maps.take(pa.array(np.arange(len(today)) % maps.num_rows))
    h = _set(h, "image_id", [ids[k] for k in today])
    h = _set(_set(h, "score_date", [days[k] for k in today]), "run_id", [runs[k] for k in today])
    _write(h, out, "heatmaps", rows_per_file=250_000)
    for name in ("models", "model_aliases"):
        shutil.copytree(base / "tables" / name, out / "tables" / name)
    store = pads.dataset(str(base / "petastorm" / "nih"), format="parquet").to_table()
    store = _set(_set(_tiled(store, n), "image_id", ids), "patient_id", patients)
    folder = out / "petastorm" / "nih"
    folder.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, n, 10_000)):
        pq.write_table(store.slice(start, 10_000), folder / f"part-{i:05d}.parquet", row_group_size=1_000)
    (out / "ready").write_text(str(n))
    return out


def _write(table: pa.Table, out: Path, name: str, *, rows_per_file: int) -> None:
    """A table written the way the jobs write it: its catalog partitions as folders."""
    from xray_spark.lake import catalog

    pads.write_dataset(
        table,
        str(out / "tables" / name),
        format="parquet",
        partitioning=catalog.arrow_partitioning(name),
        max_rows_per_file=rows_per_file,
        max_rows_per_group=min(rows_per_file, 100_000),
        existing_data_behavior="overwrite_or_ignore",
    )


def _web(*args: str, lake: Path, state: Path, port: int, stdin: str = "") -> str:
    command = [sys.executable, "-m", "xray_spark.web", *args, "--lake", str(lake), "--state-dir", str(state)]
    command += ["--set", f"web.accounts={state.parent / 'accounts.sqlite'}", "--set", f"web.port={port}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip()


def _timed(get, url: str) -> float:
    started = time.perf_counter()
    answer = get(url)
    answer.raise_for_status()
    return time.perf_counter() - started


def _stats(seconds: list[float]) -> dict:
    ms = sorted(s * 1000 for s in seconds)
    return {"median_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 1)}


def measure(lake: Path, n: int, loads: int, work: Path) -> dict:
    from xray_spark.session import free_port

    state, port = work / f"web-state-{n}", free_port()
    shutil.rmtree(state.parent / "accounts.sqlite", ignore_errors=True)
    _web("add-user", "bench", lake=lake, state=state, port=port, stdin=PASSWORD + "\n")
    url = _web("start", lake=lake, state=state, port=port)
    try:
        http = requests.Session()
        csrf = re.search(r'name="csrf" value="([^"]+)"', http.get(url + "signin").text).group(1)
        http.post(url + "signin", data={"name": "bench", "password": PASSWORD, "csrf": csrf}).raise_for_status()
        started = time.perf_counter()
        home = http.get(url).text  # the tables read into memory
        cold = time.perf_counter() - started
        date = re.search(r'/worklist/nih/([0-9]{4}-[0-9-]+)"', home).group(1)  # the newest day
        page = f"{url}worklist/nih/{date}"
        first = _timed(http.get, page)
        html = [_timed(http.get, page) for _ in range(loads)]
        pictures = re.findall(r'src="(/(?:picture|overlay)\?[^"]+)"', http.get(page).text)
        pool = ThreadPoolExecutor(6)

        def whole() -> float:
            started = time.perf_counter()
            http.get(page).raise_for_status()
            list(pool.map(lambda p: http.get(url.rstrip("/") + p.replace("&amp;", "&")).raise_for_status(), pictures))
            return time.perf_counter() - started

        full_first = whole()
        full = [whole() for _ in range(loads)]
        rng = np.random.default_rng(0)
        patients = [_timed(http.get, f"{url}patient/nih/{int(rng.integers(1, n // 4))}") for _ in range(loads)]
        picture = url.rstrip("/") + pictures[0].replace("&amp;", "&")
        one = [_timed(http.get, picture) for _ in range(loads)]
        pid = json.loads((state / "server.pid").read_text())["pid"]
        peak = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM"))
    finally:
        _web("stop", lake=lake, state=state, port=port)
    return {
        "scored_films": n,
        "films_on_todays_date": sum(1 for k in range(n) if k % DATES == DATES - 1),
        "pictures_on_the_page": len(pictures),
        "first_page_after_start_ms": round(cold * 1000, 1),
        "worklist_html_first_load_ms": round(first * 1000, 1),
        "worklist_html": _stats(html),
        "worklist_with_pictures_first_load_ms": round(full_first * 1000, 1),
        "worklist_with_pictures": _stats(full),
        "patient_page": _stats(patients),
        "one_picture": _stats(one),
        "server_peak_rss_mib": round(int(peak.split()[1]) / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1500, 100_000])
    parser.add_argument("--loads", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "web_cpu2.json"))
    args = parser.parse_args()
    cache = ROOT / "bench" / ".cache"
    base = base_lake(cache)
    results = []
    for n in args.sizes:
        lake = scaled_lake(base, n, cache / f"web-lake-{n}")
        log(f"measuring the web app on {n:,} scored films")
        results.append(measure(lake, n, args.loads, cache / "web-work"))
        log(json.dumps(results[-1]))
    result = {
        "benchmark": "the worklist web app: page loads (median, 95th percentile) against the lake's size",
        "command": f"python bench/web.py --sizes {' '.join(map(str, args.sizes))} --loads {args.loads}",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
