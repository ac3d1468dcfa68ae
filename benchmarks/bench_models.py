"""Stage-two model speed: images/s and peak memory of the dense method at the SCLIP preset.

ViT-B/16 with random weights (speed does not depend on the values), VOC-sized synthetic images
(375x500 -> short side 336 -> 336x448 -> 6 crops of 224 with stride 112), crops batched through
the backbone in batches of 1 and 8. Each configuration runs in its own process so that the peak
RSS (getrusage ru_maxrss) belongs to it alone; the table reports the process peak and the peak
increase over the state after the model and text embeddings were ready. With --device cuda the
GPU peak (torch.cuda.max_memory_allocated) is reported too.

    python benchmarks/bench_models.py                 # quick default (~2-4 min on 2 CPU cores)
    python benchmarks/bench_models.py --device cuda --images 32 --batch-sizes 1 8 32
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _results import append_results, cpu_name  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOC = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "table",
    "dog", "horse", "motorbike", "person", "plant", "sheep", "sofa", "train", "monitor",
]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(args: argparse.Namespace) -> dict:
    """One configuration in this process: build, warm up, time `--images` images."""
    import numpy as np
    import torch

    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.methods import build_method
    from llmseg.stage2.methods.dense import DenseMethod

    torch.manual_seed(0)
    config = MethodConfig(random_weights=True, method="dense", backbone=f"openclip:{args.arch}", preset="sclip", templates=args.templates,
                          device=args.device, precision=args.precision)
    t0 = time.perf_counter()
    method = build_method(config, VOC, dataset="pascal_voc")
    assert isinstance(method, DenseMethod)  # the dense method: its crop batch is what this benchmark varies
    build_s = time.perf_counter() - t0
    method.crop_batch_size = args.batch_size
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) for _ in range(args.images)]
    cuda = args.device.startswith("cuda")
    for p in method.forward(images[:1]):  # warm-up (allocator, kernels)
        p.finish()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = _rss_mb()
    t0 = time.perf_counter()
    for start in range(0, len(images), args.images_per_call):
        for p in method.forward(images[start : start + args.images_per_call]):
            p.finish()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    return {
        "batch_size": args.batch_size,
        "images": len(images),
        "seconds": elapsed,
        "images_per_s": len(images) / elapsed,
        "crops_per_image": 6,
        "build_s": build_s,
        "peak_rss_mb": _rss_mb(),
        "peak_rss_increase_mb": _rss_mb() - base_rss,
        "gpu_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--images", type=int, default=3, help="timed images per configuration (after one warm-up)")
    parser.add_argument("--images-per-call", type=int, default=4, help="images per forward() call (crops batch across them)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8], help="crops per backbone call")
    parser.add_argument("--templates", default="single", help="text templates (text is encoded once, not timed)")
    parser.add_argument("--no-write", action="store_true", help="do not append to benchmarks/RESULTS.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    rows = []
    for bs in args.batch_sizes:
        cmd = [sys.executable, __file__, "--worker", "--batch-size", str(bs), "--arch", args.arch, "--device", args.device,
               "--precision", args.precision, "--images", str(args.images), "--images-per-call", str(args.images_per_call),
               "--templates", args.templates]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            sys.exit(f"benchmark worker failed (batch {bs}):\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"batch {bs}: {rows[-1]['images_per_s']:.3f} images/s", flush=True)

    device = cpu_name() + f", {os.cpu_count()} cores" if args.device == "cpu" else args.device
    if args.device.startswith("cuda"):
        import torch

        device = f"{torch.cuda.get_device_name(0)} ({args.device}); host {cpu_name()}"
    header = "| crops per batch | images | seconds | images/s | crops/s | peak RSS (MB) | RSS increase (MB) | GPU peak (MB) |"
    lines = [header, "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        gpu = f"{r['gpu_peak_mb']:.0f}" if r["gpu_peak_mb"] is not None else "-"
        lines.append(
            f"| {r['batch_size']} | {r['images']} | {r['seconds']:.1f} | {r['images_per_s']:.3f} | "
            f"{r['images_per_s'] * r['crops_per_image']:.2f} | {r['peak_rss_mb']:.0f} | {r['peak_rss_increase_mb']:.0f} | {gpu} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    command = "python benchmarks/bench_models.py" + ("" if len(sys.argv) == 1 else " " + " ".join(sys.argv[1:]))
    section = (
        f"\n## Stage two models: dense method, {args.arch} random weights, SCLIP preset ({args.device}, {args.precision})\n\n"
        f"- device: {device}\n"
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; 1-minute load average at the end "
        f"{os.getloadavg()[0]:.1f} (the machine is shared: other jobs slow these numbers down)\n"
        f"- command: `{command}`\n"
        f"- what: `build_method(MethodConfig(random_weights=True, preset='sclip'), VOC classes)`; 375x500 synthetic images -> short side 336 "
        f"(336x448) -> 6 crops 224/112, per-class logits (class names only, 21 names, assembly `none`), bilinear resize, thresholds in finish(); "
        f"{args.images_per_call} images per forward() call, crops batched across them; one warm-up image; torch threads "
        f"{rows[0]['threads']}; peak RSS = the worker process's ru_maxrss, increase = over the state after model + text were ready\n\n"
        f"{table}\n"
    )
    append_results(section)


if __name__ == "__main__":
    main()
