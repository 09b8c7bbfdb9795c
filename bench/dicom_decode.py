"""What each DICOM transfer syntax costs to turn into a stored training image, against PNG.

    python bench/dicom_decode.py [--side 2048] [--repeats 5] [--out bench/results/dicom_decode_cpu2.json]

One synthetic 12-bit chest film (``--side`` px square, the size of a CR/DX plate) is
written as a 16-bit PNG and in every transfer syntax of ``xray_spark.dev.dicom_films``; each file
then goes through the exact per-image work of prepare (``load_training_image`` to a 224 px
image, then the PNG encoding of the store), on one core. Reported per syntax: the file
size, the median seconds per image, images per second, and the cost relative to the PNG.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import machine  # noqa: E402  (bench/pipeline.py, beside this file)

from xray_spark.dev.anatomy import Anatomy, render  # noqa: E402
from xray_spark.dev.dicom_films import SYNTAXES, encode, film  # noqa: E402
from xray_spark.imaging import decode as img  # noqa: E402
from xray_spark.lake.schema import XraySchema  # noqa: E402

SIZE = 224


def twelve_bit_film(side: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    picture, _ = render(("Effusion", "Nodule"), Anatomy.draw(rng), "PA", side, rng)
    noise = rng.integers(0, 16, picture.shape)  # 12 bits of detail, not 8 bits shifted
    return (picture.astype(np.uint16) * 16 + noise).astype(np.uint16)


def per_image_seconds(data: bytes, repeats: int) -> list[float]:
    field = XraySchema.image
    limits = img.ImageLimits()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pixels, _ = img.load_training_image(data, SIZE, limits)
        field.codec.encode(field, pixels)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "dicom_decode_cpu2.json"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    pixels = twelve_bit_film(args.side)
    files = {"png-16bit": cv2.imencode(".png", pixels)[1].tobytes()}
    for name in SYNTAXES:
        picture = (pixels >> 4).astype(np.uint8) if name == "jpeg-baseline" else pixels
        files[name] = encode(film(picture, bits_stored=8 if name == "jpeg-baseline" else 12), name)
    rows = {}
    for name, data in files.items():
        seconds = statistics.median(per_image_seconds(data, args.repeats))
        rows[name] = {
            "lossless": name == "png-16bit" or SYNTAXES[name][1],
            "file_mib": round(len(data) / 2**20, 2),
            "seconds_per_image": round(seconds, 4),
            "images_per_s_one_core": round(1 / seconds, 1),
        }
        print(
            f"{name:14s} {rows[name]['file_mib']:6.2f} MiB  {rows[name]['images_per_s_one_core']:7.1f} images/s",
            file=sys.stderr,
        )
    base = rows["png-16bit"]["seconds_per_image"]
    for row in rows.values():
        row["cost_vs_png"] = round(row["seconds_per_image"] / base, 2)
    result = {
        "benchmark": f"one {args.side} x {args.side} 12-bit film to a {SIZE} px stored image, one core",
        "command": f"python bench/dicom_decode.py --side {args.side} --repeats {args.repeats}",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "syntaxes": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
