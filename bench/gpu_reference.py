"""A reference point for GPU sizing: DenseNet-121 (14 outputs, 224 px, 1 -> 3 channels) on one GPU.

This is NOT xray-spark's TensorFlow code path: it is the same architecture and input size
in PyTorch (torchvision), for machines where TensorFlow is not installed. It measures what
the card does with mixed-precision training steps and with inference, so a team can size
GPU executors; compare xray-spark's own numbers with it where both can run.

    python bench/gpu_reference.py --out bench/results/gpu_reference_<card>.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torchvision


def _timed(step, n_warmup: int, n_steps: int) -> float:
    for _ in range(n_warmup):
        step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n_steps):
        step()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--score-batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    model = torchvision.models.densenet121(weights=None, num_classes=14)
    model = model.to(device).to(memory_format=torch.channels_last)
    result: dict = {
        "what": "reference: torchvision DenseNet-121, 14 sigmoid outputs, not xray-spark's TensorFlow path",
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "image_size": args.size,
    }
    gray = torch.randint(0, 256, (args.train_batch, 1, args.size, args.size), device=device, dtype=torch.uint8)
    labels = (torch.rand(args.train_batch, 14, device=device) < 0.1).float()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    for precision, dtype in (("float32", None), ("mixed_float16", torch.float16), ("mixed_bfloat16", torch.bfloat16)):
        scaler = torch.amp.GradScaler(enabled=dtype is torch.float16)

        def train_step(dtype=dtype, scaler=scaler):
            x = (gray.float() / 255.0).expand(-1, 3, -1, -1).contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = loss_fn(model(x).float(), labels)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        model.train()
        torch.cuda.reset_peak_memory_stats()
        seconds = _timed(train_step, 5, args.steps)
        result[f"train_{precision}"] = {
            "batch": args.train_batch,
            "images_per_s": round(args.train_batch * args.steps / seconds, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        }

    model.eval()
    score_gray = torch.randint(0, 256, (args.score_batch, 1, args.size, args.size), dtype=torch.uint8).pin_memory()
    for precision, dtype in (("float32", None), ("float16", torch.float16)):

        @torch.no_grad()
        def score_step(dtype=dtype):
            x = score_gray.to(device, non_blocking=True).float().div_(255.0).expand(-1, 3, -1, -1)
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                torch.sigmoid(model(x.contiguous(memory_format=torch.channels_last)).float()).cpu()

        seconds = _timed(score_step, 3, max(10, args.steps // 2))
        result[f"score_{precision}"] = {
            "batch": args.score_batch,
            "images_per_s": round(args.score_batch * max(10, args.steps // 2) / seconds, 1),
            "includes": "host-to-device copy of uint8 images and probabilities back to the host",
        }
    print(json.dumps(result, indent=2))
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")


if __name__ == "__main__":
    main()
