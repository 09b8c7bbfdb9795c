"""Ingesting a PACS export against the PNG archive of the same films: header scan and prepare.

    python bench/dicom_ingest.py [--images 400] [--side 1024] [--repeats 2]
                                 [--out bench/results/dicom_ingest_cpu2.json]

The synthetic archive is written twice from one seed: in the NIH layout (8-bit PNG) and as
the DICOM demo export (``xray_spark.dev.dicom_archive``: the same pictures, half of them
12-bit, in the demo's mix of transfer syntaxes, mostly JPEG Lossless and JPEG 2000).
Measured on each:

* the per-file work without Spark, one core: the DICOM header scan (``read_header``: the
  ``DICM`` marker, the header up to the pixel data, the pseudonym), and the decode to a
  stored image (``load_training_image`` then the store's PNG encoding), as images/s;
* ``jobs/prepare.py`` end to end as a child process (local[2]), images/s in the job,
  against the two-core decode limit of the same files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import SIZE, log, machine, run_job  # noqa: E402  (bench/pipeline.py, beside this file)

KEY = "bench-pseudonym-key-0123456789abcdef"


def make_archives(cache: Path, n_images: int, side: int) -> tuple[Path, Path]:
    from xray_spark.dev.dicom_archive import write_dicom_archive
    from xray_spark.dev.synthetic import write_archive

    base = cache / f"dicom-vs-png-{n_images}-{side}"
    png, dicom = base / "png", base / "dicom"
    if not (png / "Data_Entry_2017.csv").exists():
        log(f"writing {n_images} synthetic {side} px films as PNG to {png} (once)")
        shutil.rmtree(png, ignore_errors=True)
        write_archive(png, n_images, side, seed=2017)
    if not (dicom / "labels.csv").exists():
        log(f"writing the same films as a DICOM export to {dicom} (once)")
        shutil.rmtree(dicom, ignore_errors=True)
        write_dicom_archive(dicom, n_images, side, seed=2017)
    return png, dicom


def _median_rate(n: int, work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return round(n / statistics.median(times), 1)


def per_file_rates(files: list[Path], repeats: int, *, dicom: bool) -> dict:
    """Header scan (DICOM only) and decode to a stored image, images per second on one core."""
    from xray_spark.imaging import decode as img
    from xray_spark.lake.schema import XraySchema
    from xray_spark.prepare.sources.dicom.headers import read_header

    field = XraySchema.image

    def decode() -> None:
        for path in files:
            pixels, _ = img.load_training_image(path.read_bytes(), SIZE)
            field.codec.encode(field, pixels)

    def scan() -> None:
        for path in files:
            read_header(str(path), KEY.encode(), 1 << 30)

    rates = {"files": len(files), "decode_images_per_s_one_core": _median_rate(len(files), decode, repeats)}
    if dicom:
        rates["header_scan_files_per_s_one_core"] = _median_rate(len(files), scan, repeats)
    rates["mib"] = round(sum(p.stat().st_size for p in files) / 2**20, 1)
    return rates


def prepare_runs(archive: Path, work: Path, repeats: int, *, dicom: bool) -> list[dict]:
    runs = []
    for i in range(repeats):
        lake = work / f"lake-{'dicom' if dicom else 'png'}-{i}"
        shutil.rmtree(lake, ignore_errors=True)
        args = ["--conf", str(ROOT / "conf" / "local.yaml"), "--lake", str(lake), "--set", f"image.size={SIZE}"]
        if dicom:
            args += ["--source", "dicom", "--images", str(archive / "export"), "--set", "dataset=hospital"]
        else:
            args += ["--metadata", str(archive / "Data_Entry_2017.csv"), "--images", str(archive / "images")]
        run = run_job("prepare", args, work / "prepare.json")
        written = run["summary"]["images"]["written"]
        runs.append(
            {
                "images": written,
                "job_s": run["job_s"],
                "wall_s": run["wall_s"],
                "images_per_s_job": round(written / run["job_s"], 1),
                "peak_rss_mib": run["peak_rss_mib"],
            }
        )
        log(f"  prepare {'DICOM' if dicom else 'PNG'} #{i + 1}: {written} images in {run['job_s']} s")
    return runs


def main() -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "dicom_ingest_cpu2.json"))
    args = parser.parse_args()
    os.environ["XRAY_SPARK_PSEUDONYM_KEY"] = KEY
    cache = ROOT / "bench" / ".cache"
    work = cache / "dicom-ingest-work"
    work.mkdir(parents=True, exist_ok=True)
    png, dicom = make_archives(cache, args.images, args.side)
    dicom_files = sorted(p for p in (dicom / "export").glob("PT*/ST*/SE*/IM*"))
    png_files = sorted((png / "images").iterdir())
    results: dict = {"png": per_file_rates(png_files, args.repeats, dicom=False)}
    results["dicom"] = per_file_rates(dicom_files, args.repeats, dicom=True)
    log(f"per file, one core: {json.dumps(results)}")
    for name, archive, is_dicom in (("png", png, False), ("dicom", dicom, True)):
        runs = prepare_runs(archive, work, args.repeats, dicom=is_dicom)
        limit = 2 * results[name]["decode_images_per_s_one_core"]
        best = max(r["images_per_s_job"] for r in runs)
        results[name] |= {"prepare": runs, "prepare_images_per_s": best}
        results[name]["vs_two_core_decode_limit"] = round(best / limit, 2)
    results["dicom_vs_png"] = {
        "decode_cost": round(
            results["png"]["decode_images_per_s_one_core"] / results["dicom"]["decode_images_per_s_one_core"], 2
        ),
        "prepare_cost": round(results["png"]["prepare_images_per_s"] / results["dicom"]["prepare_images_per_s"], 2),
    }
    result = {
        "benchmark": f"{args.images} films of {args.side} px: a DICOM export vs the PNG archive of the same films",
        "command": f"python bench/dicom_ingest.py --images {args.images} --side {args.side} --repeats {args.repeats}",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "stored_image_px": SIZE,
        "results": results,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
