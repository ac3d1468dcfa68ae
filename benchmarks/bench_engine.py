"""Engine overhead: images/s of loading + metric (+ multi-label dense CRF) at ~512x512.

A trivial method (low-resolution class logits from the image colours, no network) isolates the
engine: DataLoader decoding, the post-processing pool (nearest x16 upsampling, softmax, 10
mean-field CRF iterations, argmax in `PendingResult.finish`), the confusion-matrix metric and
the result files. Rows: 21 classes (VOC layout) and 171 classes (COCO-Stuff layout), CRF off
(inline) and CRF on with 1 and 2 post-processing processes.

    python benchmarks/bench_engine.py            # quick default (~2-4 min on 2 cores)
    python benchmarks/bench_engine.py --images21 16 --images171 8
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _results import append_results, cpu_name  # noqa: E402

from llmseg.datasets import get_dataset  # noqa: E402
from llmseg.stage2.engine.runner import RunConfig, evaluate  # noqa: E402
from llmseg.stage2.ops.refinement import dense_crf_multilabel  # noqa: E402
from llmseg.stage2.protocols import Done, SegResult  # noqa: E402
from llmseg.stage2.synthetic import write_synthetic_benchmark  # noqa: E402

STRIDE = 16


@dataclass
class CrfPending:
    """Low-res logits + the image; the CPU work happens in finish (in a pool process)."""

    image: np.ndarray
    logits: np.ndarray  # [C, h, w] float32

    def finish(self) -> SegResult:
        h, w = self.image.shape[:2]
        up = self.logits.repeat(STRIDE, axis=1).repeat(STRIDE, axis=2)[:, :h, :w]
        up = np.pad(up, ((0, 0), (0, h - up.shape[1]), (0, w - up.shape[2])), mode="edge")
        e = np.exp(up - up.max(axis=0, keepdims=True))
        probs = e / e.sum(axis=0, keepdims=True)
        q = dense_crf_multilabel(self.image, probs)
        return SegResult(labels=q.argmax(axis=0).astype(np.int64))


class ColourMethod:
    """Class logits = a fixed random projection of the mean colour of each 16x16 cell."""

    def __init__(self, num_classes: int, crf: bool) -> None:
        self.num_classes = num_classes
        self.crf = crf
        self.proj = np.random.default_rng(0).normal(size=(num_classes, 3)).astype(np.float32) / 20

    def _logits(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        gh, gw = -(-h // STRIDE), -(-w // STRIDE)
        padded = np.pad(image.astype(np.float32), ((0, gh * STRIDE - h), (0, gw * STRIDE - w), (0, 0)), mode="edge")
        cells = padded.reshape(gh, STRIDE, gw, STRIDE, 3).mean(axis=(1, 3))  # [gh, gw, 3]
        return np.einsum("ck,hwk->chw", self.proj, cells).astype(np.float32)

    def forward(self, images):
        out: list[CrfPending | Done] = []
        for image in images:
            logits = self._logits(image)
            if self.crf:
                out.append(CrfPending(image, logits))
            else:
                labels = logits.argmax(0).repeat(STRIDE, 0).repeat(STRIDE, 1)[: image.shape[0], : image.shape[1]]
                labels = np.pad(labels, ((0, image.shape[0] - labels.shape[0]), (0, image.shape[1] - labels.shape[1])), mode="edge")
                out.append(Done(SegResult(labels=labels.astype(np.int64))))
        return out

    def describe(self):
        return {"name": "bench-colour", "crf": self.crf}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images21", type=int, default=8, help="images per 21-class row")
    parser.add_argument("--images171", type=int, default=4, help="images per 171-class CRF row")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--no-write", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()

    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        write_synthetic_benchmark("pascal_voc", root, args.images21, (args.size, args.size), seed=0, extra_unlisted=0)
        write_synthetic_benchmark("coco_stuff", root, max(args.images21, args.images171), (args.size, args.size), seed=1)
        plan = [
            ("pascal_voc", 21, False, 0, 0, args.images21),
            ("pascal_voc", 21, False, 0, 2, args.images21),
            ("pascal_voc", 21, True, 1, 1, args.images21),
            ("pascal_voc", 21, True, 2, 1, args.images21),
            ("coco_stuff", 171, False, 0, 2, args.images21),
            ("coco_stuff", 171, True, 1, 1, args.images171),
            ("coco_stuff", 171, True, 2, 1, args.images171),
        ]
        for name, classes, crf, post, loaders, n in plan:
            spec = get_dataset(name)
            assert spec.num_classes == classes
            cfg = RunConfig(out=str(Path(tmp) / f"{name}-{crf}-{post}-{loaders}"), limit=n, num_workers=loaders,
                            post_workers=post, progress=False, resume=False)
            t0 = time.perf_counter()
            report = evaluate(ColourMethod(classes, crf), spec, root, cfg)
            total = time.perf_counter() - t0
            steady = report["images_per_s_steady"]
            rows.append((classes, "on" if crf else "off", post, loaders, n, report["images_per_s"], steady, total))
            print(f"{classes:>4} classes  CRF {'on ' if crf else 'off'}  post {post}  loaders {loaders}  {n} images  "
                  f"{report['images_per_s']:.3f} img/s overall, {_fmt(steady)} steady  ({total:.1f} s)", flush=True)

    lines = [
        "| classes | CRF (10 it.) | post workers | loader workers | images | images/s overall | images/s steady | wall (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for classes, crf_shown, post, loaders, n, ips, steady, total in rows:
        lines.append(f"| {classes} | {crf_shown} | {post} | {loaders} | {n} | {ips:.3f} | {_fmt(steady)} | {total:.1f} |")
    table = "\n".join(lines)
    load_after = os.getloadavg()
    print(table)
    if args.no_write:
        return
    section = (
        f"\n## Engine overhead (bench_engine.py)\n\n"
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
        f"- device: {cpu_name()}, {os.cpu_count()} cores; 1-min load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after (other jobs share the machine: a load above the core count makes the "
        "1- vs 2-worker comparison unreliable)\n"
        f"- command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`".rstrip() + "\n"
        f"- what: synthetic ~{args.size}x{args.size} images, trivial colour method; loading + metric, plus the "
        "multi-label dense CRF in `finish` when on. 'overall' = images / session time (spawn start-up of loader and "
        "pool processes included); 'steady' = (images - 1) / time between the first and last finished image.\n\n"
        f"{table}\n"
    )
    append_results(section)


if __name__ == "__main__":
    main()
