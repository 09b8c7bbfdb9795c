"""A reader at the web app's keyboard, and what display pictures cost prepare.

    python bench/web_reader.py [--films 50] [--out bench/results/web_reader_cpu2.json]

1. **Display pictures**: the NIH sample's real films (1024 px PNGs) prepared twice by the job, with display
   pictures (``web.display_max_side=1024``) and without (``0``): the prepare's wall time each way, and the
   pictures' mean size, with its size per 100,000 films.
2. **Seconds per verdict**: a lake the jobs make (a synthetic archive of 300 films at 1024 px, prepare, eight
   epochs of train at 128 px, promote, score with heatmaps), the app started as operators start it, and a
   headless Chromium signed in that acts as a reader using only the keyboard: for each of ``--films`` films
   it presses ``o`` (the film opens large and its display picture is drawn), then ``a``, ``x`` or ``n`` (agree
   with all calls, reject them, no finding), which saves the verdict and moves to the next film. The figure is
   the page's own timing (``window.xrayTimings``: from a film made current to its verdict saved), so it is the
   app's side of a verdict, without a reader's thinking time; also the time to draw each film large.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import log, machine, run_job  # noqa: E402  (beside this file)
from web import _web, jobs_lake  # noqa: E402

PASSWORD = "a bench password"
NIH_SAMPLE = Path(os.environ.get("XRAY_SPARK_NIH_SAMPLE", ROOT.parent / "shared" / "data" / "nih-sample"))


def display_cost(work: Path) -> dict:
    """The NIH sample prepared with and without display pictures."""
    images = NIH_SAMPLE / "images"
    names = {p.name for p in images.glob("*.png")}
    metadata = work / "sample.csv"
    with gzip.open(NIH_SAMPLE / "Data_Entry_2017_v2020.csv.gz", "rt", newline="") as fh, open(metadata, "w") as out:
        rows = csv.reader(fh)
        writer = csv.writer(out)
        writer.writerow(next(rows))
        writer.writerows(r for r in rows if r[0] in names)
    result = {"films": len(names)}
    for label, side in (("without", 0), ("with", 1024)):
        lake = work / f"display-lake-{side}"
        shutil.rmtree(lake, ignore_errors=True)
        conf = ["--conf", str(ROOT / "conf" / "local.yaml"), "--lake", str(lake)]
        conf += ["--set", f"web.display_max_side={side}", "--set", "split.train=0.6", "--set", "split.val=0.2"]
        done = run_job("prepare", [*conf, "--metadata", str(metadata), "--images", str(images)], work / "p.json")
        result[f"prepare_{label}_display_s"] = round(done["wall_s"], 1)
        result[f"prepare_{label}_display_job_s"] = done["job_s"]
    pictures = list((work / "display-lake-1024" / "tables" / "display_pictures").rglob("*.parquet"))
    import pyarrow.parquet as pq

    sizes = [len(b) for p in pictures for b in pq.read_table(p, columns=["picture"]).column("picture").to_pylist()]
    result |= {
        "display_pictures": len(sizes),
        "mean_kib_per_film": round(statistics.mean(sizes) / 1024, 1),
        "gib_per_100000_films": round(statistics.mean(sizes) * 100_000 / 2**30, 1),
        "table_on_disk_mib": round(sum(p.stat().st_size for p in pictures) / 2**20, 1),
        "prepare_seconds_added_per_film": round(
            (result["prepare_with_display_s"] - result["prepare_without_display_s"]) / len(names), 4
        ),
    }
    return result


def reader_lake(work: Path, films: int) -> Path:
    """A lake the jobs made: at least 300 synthetic films at 1024 px (the display pictures' size), eight epochs
    of train at 128 px (so that the model calls findings), promoted, scored with heatmaps."""
    archive = {"n_images": max(300, films + 10), "size": 1024, "seed": 13}
    split = ("--set", "split.train=0.6", "--set", "split.val=0.2")
    return jobs_lake(work / "reader-lake", work / "reader-archive", work, archive, epochs=8, extra=split)


def screenshots(driver, url: str, folder: Path) -> None:
    """Each page as a reader sees it, for the docs: the worklists, a worklist, a film large, a film's page, a
    patient's page."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    folder.mkdir(parents=True, exist_ok=True)
    driver.get(url)
    driver.save_screenshot(str(folder / "web-worklists.png"))
    driver.find_element(By.CSS_SELECTOR, "ul.days a").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.film-row"))
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(folder / "web-worklist.png"))
    rows = driver.find_elements(By.CSS_SELECTOR, "tr.film-row")
    k = next((i for i, r in enumerate(rows) if r.get_attribute("data-overlay")), 0)  # a film with a heatmap
    ActionChains(driver).send_keys("j" * k + "o").perform()
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "viewer").get_attribute("data-loaded"))
    driver.save_screenshot(str(folder / "web-large-view.png"))
    film = rows[k].find_element(By.CSS_SELECTOR, "a.open").get_attribute("href")
    patient = rows[k].find_element(By.CSS_SELECTOR, "td.who a").get_attribute("href")
    driver.get(film)
    WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "viewer").get_attribute("data-loaded"))
    driver.save_screenshot(str(folder / "web-film.png"))
    driver.get(patient)
    driver.save_screenshot(str(folder / "web-patient.png"))


def read_by_keyboard(lake: Path, films: int, work: Path, shots: Path | None = None) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    from xray_spark.session import free_port

    state, port = work / "web-state", free_port()
    shutil.rmtree(work / "accounts.sqlite", ignore_errors=True)
    shutil.rmtree(lake / "verdicts", ignore_errors=True)
    _web("add-user", "bench", lake=lake, state=state, port=port, stdin=PASSWORD + "\n")
    url = _web("start", lake=lake, state=state, port=port)
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1200"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url + "signin")
        driver.find_element(By.ID, "name").send_keys("bench")
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.ID, "signin").click()
        WebDriverWait(driver, 30).until(lambda d: "/signin" not in d.current_url)
        day = driver.find_element(By.CSS_SELECTOR, "ul.days a")
        day.click()
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.film-row"))
        opened = []
        for k in range(films):
            image_id = driver.find_elements(By.CSS_SELECTOR, "tr.film-row")[k].get_attribute("data-id")
            started = time.perf_counter()
            ActionChains(driver).send_keys("o").perform()
            WebDriverWait(driver, 30).until(
                lambda d, i=image_id: d.find_element(By.ID, "viewer").get_attribute("data-loaded") == i
            )
            opened.append(time.perf_counter() - started)
            ActionChains(driver).send_keys("axn"[k % 3]).perform()
            WebDriverWait(driver, 30).until(lambda d, k=k: d.execute_script("return window.xrayTimings.length") > k)
        timings = driver.execute_script("return window.xrayTimings")
        if shots is not None:
            screenshots(driver, url, shots)
    finally:
        driver.quit()
        _web("stop", lake=lake, state=state, port=port)
    return {
        "verdicts": len(timings),
        "seconds_per_verdict_mean": round(statistics.mean(timings), 3),
        "seconds_per_verdict_p95": round(sorted(timings)[int(0.95 * (len(timings) - 1))], 3),
        "film_drawn_large_ms_median": round(statistics.median(opened) * 1000, 1),
        "film_drawn_large_ms_p95": round(sorted(opened)[int(0.95 * (len(opened) - 1))] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--films", type=int, default=50)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "web_reader_cpu2.json"))
    parser.add_argument("--screenshots", type=Path, help="also save each page's screenshot in this folder")
    parser.add_argument("--skip-display-cost", action="store_true", help="measure the reader only")
    args = parser.parse_args()
    work = ROOT / "bench" / ".cache" / "web-reader"
    work.mkdir(parents=True, exist_ok=True)
    cost = None
    if not args.skip_display_cost:
        log("preparing the NIH sample with and without display pictures")
        cost = display_cost(work)
        log(json.dumps(cost))
    log(f"a reader answers {args.films} films by keyboard")
    reading = read_by_keyboard(reader_lake(work, args.films), args.films, work, args.screenshots)
    result = {
        "benchmark": "display pictures' cost in prepare, and a keyboard reader's seconds per verdict in Chromium",
        "command": f"python bench/web_reader.py --films {args.films}",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "display_pictures": cost,
        "reader": reading,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
