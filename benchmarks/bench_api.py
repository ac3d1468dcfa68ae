"""The Python API and the pictures: what the first call costs, what later calls cost, and drawing.

Rows:
- Segmenter, first call with a new class list (method build + text embedding of every name) and
  the following calls with the same classes (embeddings reused), for the class names alone and
  for a label set; open_clip ViT-S-16 with random weights (no weights can be downloaded here),
  the SCLIP protocol (short side 336, 224/112 sliding window, 80 templates).
- Pictures: `overlay` (blend + boundaries + legend), the palette PNG and `SegmentationOutput.save`
  (all four files; 10 classes, 50 subclasses) at a given size.

    python benchmarks/bench_api.py                 # quick default (~1-2 min on 2 cores)
    python benchmarks/bench_api.py --images 5 --size 768
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _results import append_results, cpu_name  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llmseg.stage2.api import SegmentationOutput, Segmenter  # noqa: E402
from llmseg.stage2.pictures.palettes import palette_for  # noqa: E402
from llmseg.stage2.pictures.visualize import label_png, overlay  # noqa: E402

CLASSES = ["background", "cat", "dog", "sofa", "person", "table", "plant", "window", "floor", "wall"]


def _label_set(per_class: int) -> dict[str, list[str]]:
    return {name: [f"{name} kind {i}" for i in range(per_class)] for name in CLASSES}


def _photos(n: int, size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = [(size, int(size * 4 / 3)), (int(size * 4 / 3), size), (size, size)]
    return [rng.integers(0, 256, size=(*shapes[i % 3], 3), dtype=np.uint8) for i in range(n)]


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_segmenter(images: list[np.ndarray], per_class: int) -> list[tuple[str, str, str]]:
    load = time.perf_counter()
    seg = Segmenter.create("openclip:ViT-S-16", random_weights=True, preset="sclip")
    load = time.perf_counter() - load
    rows = [("load backbone (ViT-S-16, random weights)", f"{load:.2f}", "once per Segmenter")]
    cases = (("10 class names", None, 10), (f"10 classes x {per_class} subclasses", _label_set(per_class), 10 * per_class))
    for label, label_set, names in cases:
        first = _time(lambda ls=label_set: seg(images[0], classes=CLASSES, label_set=ls))
        later = [_time(lambda im=im, ls=label_set: seg(im, classes=CLASSES, label_set=ls)) for im in images[1:]]
        rows.append((f"first call, {label}", f"{first:.2f}", f"builds the method, embeds {names} names x 80 templates"))
        if later:
            rows.append((f"later calls, {label}", f"{np.mean(later):.2f}", f"mean of {len(later)}; text embeddings reused"))
    return rows


def bench_pictures(size: int, repeats: int) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(1)
    h, w = size, int(size * 4 / 3)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    blocks = rng.integers(0, len(CLASSES), size=(h // 32 + 1, w // 32 + 1))
    labels = np.kron(blocks, np.ones((32, 32), np.int64))[:h, :w]
    colors = palette_for(CLASSES)
    sub = (labels * 5 + (np.arange(w)[None, :] // 64) % 5).astype(np.int32)
    flat = [s for subs in _label_set(5).values() for s in subs]
    out = SegmentationOutput(
        image=image, labels=labels, scores=rng.random((len(CLASSES), h, w), dtype=np.float32), subclass=sub,
        classes=CLASSES, subclass_names=flat, subclass_owners=[i // 5 for i in range(len(flat))], palette=colors,
    )
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            ("overlay (blend, boundaries, legend)", lambda: overlay(image, labels, CLASSES, colors)),
            ("palette PNG (encode)", lambda: label_png(labels, colors).save(Path(tmp) / "x.png")),
            ("save(): 4 files incl. summary", lambda: out.save(tmp, "y")),
        ]
        rows = []
        for name, fn in cases:
            times = [_time(fn) for _ in range(repeats)]
            rows.append((f"{name}, {w}x{h}", f"{np.median(times):.3f}", f"median of {repeats}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3, help="images per Segmenter row (first + later calls)")
    parser.add_argument("--subclasses", type=int, default=2, help="subclasses per class in the label-set rows")
    parser.add_argument("--photo-size", type=int, default=384, help="short side of the photos given to the Segmenter")
    parser.add_argument("--size", type=int, default=512, help="short side of the picture-drawing rows")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()

    import torch

    torch.manual_seed(0)
    rows = bench_segmenter(_photos(args.images, args.photo_size), args.subclasses) + bench_pictures(args.size, args.repeats)
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'what'.ljust(width)} | seconds | note |", f"|{'-' * (width + 2)}|---------|------|"]
    lines += [f"| {name.ljust(width)} | {secs} | {note} |" for name, secs, note in rows]
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    section = (
        f"\n## Python API and pictures (bench_api.py)\n\n"
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
        f"- device: {cpu_name()}, {os.cpu_count()} cores, float32 on the CPU; 1-min load average {os.getloadavg()[0]:.1f} at the end\n"
        f"- command: `python benchmarks/{Path(__file__).name} {' '.join(sys.argv[1:])}`".rstrip() + "\n"
        f"- what: `Segmenter` calls on random {args.photo_size}-short-side photos (ViT-S-16, random weights, SCLIP "
        "protocol); drawing on a random photo with 32x32 label blocks.\n\n"
        f"{table}\n"
    )
    append_results(section)


if __name__ == "__main__":
    main()
