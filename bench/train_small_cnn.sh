#!/usr/bin/env bash
# Benchmark: small_cnn on the demo-sized synthetic archive (1,500 images, stored at 128 px),
# trained on this machine's CPU. Writes bench/results/train_small_cnn_<host>.json with the
# machine, the command and the numbers (seconds, validation AUROC per finding).
#   usage: bash bench/train_small_cnn.sh   (after make setup)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export PYSPARK_PYTHON=$PWD/$PY
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
$PY -m xray_spark.dev.synthetic --output "$work/archive" --images 1500 --size 256 --seed 7
$PY jobs/prepare.py --config conf/local.yaml --lake "$work/lake" --metadata "$work/archive/Data_Entry_2017.csv" \
  --images "$work/archive/images" --summary-json "$work/prepare.json" >/dev/null 2>&1
start=$(date +%s)
$PY jobs/train.py --config conf/local.yaml --lake "$work/lake" --model small_cnn --summary-json "$work/train.json" \
  >/dev/null 2>"$work/train.log" || { tail -20 "$work/train.log"; exit 1; }
end=$(date +%s)
out=bench/results/train_small_cnn_cpu$(nproc).json
$PY - "$work/train.json" "$out" "$((end - start))" <<'PY'
import json, os, platform, sys
summary = json.load(open(sys.argv[1]))
result = {
    "benchmark": "small_cnn on 1,500 synthetic images stored at 128 px (train 70% / val 10% by patient)",
    "command": "bash bench/train_small_cnn.sh",
    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                "gpu": "none"},
    "job_wall_seconds": int(sys.argv[3]),
    "training_seconds": summary["seconds"],
    "epochs_run": summary["epochs_run"],
    "best_epoch": summary["best_epoch"],
    "val_auroc_mean": summary["val_auroc_mean"],
    "val_auroc": summary["val_auroc"],
}
json.dump(result, open(sys.argv[2], "w"), indent=2)
print(json.dumps(result, indent=2))
PY
