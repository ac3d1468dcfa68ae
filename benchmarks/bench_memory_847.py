"""Stage-two memory at ADE20K-Full scale: 847 classes x 5 subclasses = 4235 text queries.

Three measurements, each in its own process (so one phase's allocations do not hide another's):

- text: the 4235 subclass embeddings of a random-weight open_clip text tower (`text_embeddings`,
  `--templates`, default single); peak RSS increase (sampled /proc/self/status every 2 ms) and the
  tracemalloc peak (Python/numpy allocations only: torch's allocator is not traced);
- text-openai80: the same 4235 names through `embed_prompts` with the 80 OpenAI templates, on a
  stand-in encoder that returns random unit vectors of width 512 (a real tower would take ~20 min
  on 2 cores; the memory that matters is the [names x templates, D] block the encoder returns);
- image: one image through the dense method (SCLIP preset: crop 224, stride 112, slide) with the
  4235 queries and max assembly, forward + finish, at the short sides given, twice: with every query
  in one group (what the method did before it grouped the text side: canvas [Q, h, w] + row-resized
  [Q, h, W] at once) and with its default class groups (dense.GROUP_ELEMENTS); then once, grouped,
  at ADE-847's protocol size: a 512 x 683 original, short side 336 (model input 336 x 448). The one-
  group rows are not run there (about 17 GB by their linear model, more than this machine has free).

    python benchmarks/bench_memory_847.py                         # ~5 min on 2 CPU cores
    python benchmarks/bench_memory_847.py --sides 112 168 --arch ViT-S-16 --ade 512 683
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _results import RESULTS, append_results, cpu_name  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
K = 5
SECTION = "## Stage two memory at 847 classes x 5 subclasses"
ONE_GROUP = 1 << 62  # group_elements that puts every query in one group


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRSS:
    """Samples the resident set every 2 ms while the block runs: peak and increase over the start."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def increase_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def _names() -> tuple[list[str], dict[str, list[str]]]:
    from llmseg.datasets import get_dataset

    classes = list(get_dataset("ade847").classes)
    label_set = {c: [f"{c.split(',')[0]} kind {j + 1}" for j in range(K)] for c in classes}
    return classes, label_set


def worker_text(args: argparse.Namespace) -> dict:
    import torch

    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.methods import load_backbone
    from llmseg.stage2.ops.text import text_embeddings

    torch.manual_seed(0)
    backbone = load_backbone(MethodConfig(backbone=f"openclip:{args.arch}", random_weights=True))
    _, label_set = _names()
    flat = [s for subs in label_set.values() for s in subs]
    tracemalloc.start()
    t0 = time.perf_counter()
    with PeakRSS() as rss:
        emb = text_embeddings(backbone, flat, args.templates)
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    return {"phase": f"text ({args.templates})", "queries": len(flat), "shape": list(emb.shape), "seconds": seconds,
            "rss_increase_mb": rss.increase_mb, "tracemalloc_peak_mb": traced_peak / 2**20,
            "result_mb": emb.numel() * 4 / 2**20}


def worker_text_openai80(args: argparse.Namespace) -> dict:
    import torch

    from llmseg.stage2.backbones.base import Backbone
    from llmseg.stage2.ops.text import embed_prompts
    from llmseg.templates import load_templates

    class StandIn(Backbone):
        name, mean, std, patch_size, native_size, embed_dim = "stand-in", (0.5,) * 3, (0.5,) * 3, 16, 224, 512

        def encode_text(self, texts):
            gen = torch.Generator().manual_seed(len(texts))
            return torch.nn.functional.normalize(torch.randn(len(texts), self.embed_dim, generator=gen), dim=-1)

        def encode_image(self, images):  # pragma: no cover
            raise NotImplementedError

        def text_parameters(self):
            return []

        def describe(self):
            return {}

    _, label_set = _names()
    flat = [s for subs in label_set.values() for s in subs]
    templates = load_templates("openai80")
    tracemalloc.start()
    t0 = time.perf_counter()
    with PeakRSS() as rss:
        emb = embed_prompts(StandIn(), flat, templates)
    _, traced_peak = tracemalloc.get_traced_memory()
    block = len(flat) * len(templates) * 512 * 4 / 2**20
    return {"phase": "text-openai80 (stand-in encoder, D=512)", "queries": len(flat), "prompts": len(flat) * len(templates),
            "seconds": time.perf_counter() - t0, "rss_increase_mb": rss.increase_mb,
            "tracemalloc_peak_mb": traced_peak / 2**20, "prompt_block_mb": block, "result_mb": emb.numel() * 4 / 2**20}


def worker_image(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from llmseg.labelset import LabelSet
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.methods import build_method
    from llmseg.stage2.methods.dense import GROUP_ELEMENTS, DenseMethod, resized_shape

    torch.manual_seed(0)
    classes, label_set = _names()
    side = args.side
    config = MethodConfig(backbone=f"openclip:{args.arch}", random_weights=True, preset="sclip", templates=args.templates,
                          short_side=side, assembly="max")
    method = build_method(config, classes, dataset="ade847", label_set=LabelSet(label_set))
    assert isinstance(method, DenseMethod)  # the dense method: its query groups are what this benchmark measures
    one_group = args.group_elements == "one"
    method.group_elements = ONE_GROUP if one_group else GROUP_ELEMENTS
    # an original of the given size, or a 3:4 image already at the model's short side (h x w = H x W)
    big_h, big_w = args.original or (side, round(side * 4 / 3))
    h, w = resized_shape(big_h, big_w, side)
    image = np.random.default_rng(0).integers(0, 256, (big_h, big_w, 3), dtype=np.uint8)
    enc = method._encode([image])[0]
    groups = len(method.query_groups_for(enc, big_h, big_w))
    del enc
    t0 = time.perf_counter()
    with PeakRSS() as rss:
        result = [p.finish() for p in method.forward([image])][0]
    seconds = time.perf_counter() - t0
    q, c = K * len(classes), len(classes)
    results_mb = c * big_h * big_w * (4 + 2) / 2**20  # scores float32 + winners int16 [C, H, W]
    model_mb = results_mb + (q * h * w * 4 + q * h * big_w * 4) / 2**20 if one_group else results_mb + GROUP_ELEMENTS * 4 / 2**20
    return {"phase": "image", "side": side, "size": f"{big_h}x{big_w}", "input": f"{h}x{w}", "queries": q,
            "groups": groups, "seconds": seconds, "rss_increase_mb": rss.increase_mb, "buffers_model_mb": model_mb,
            "results_mb": results_mb, "labels": list(result.labels.shape)}


def _replace_section(section: str) -> None:
    """Put this benchmark's section where its previous one was (appended when there is none)."""
    from llmseg.io import atomic_write_text

    text = RESULTS.read_text(encoding="utf-8") if RESULTS.is_file() else ""
    start = text.find("\n" + SECTION)
    if start < 0:
        append_results(section)
        return
    end = text.find("\n## ", start + 1)
    atomic_write_text(RESULTS, text[:start] + section.rstrip("\n") + "\n" + (text[end:] if end >= 0 else ""))
    print(f"replaced its section in {RESULTS}")


def _run(args: argparse.Namespace, phase: str, extra: list[str]) -> dict:
    cmd = [sys.executable, __file__, "--worker", phase, "--arch", args.arch, "--templates", args.templates, *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(f"worker {phase} failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print(row, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-S-16")
    parser.add_argument("--templates", default="single")
    parser.add_argument("--sides", type=int, nargs="+", default=[112, 168], help="short sides of the test images")
    parser.add_argument("--ade", type=int, nargs=2, default=[512, 683], metavar=("H", "W"),
                        help="original size of the grouped run at ADE-847's short side 336 (0 0: skip it)")
    parser.add_argument("--no-write", action="store_true", help="do not append to benchmarks/RESULTS.md")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--side", type=int, default=112, help=argparse.SUPPRESS)
    parser.add_argument("--original", type=int, nargs=2, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--group-elements", default="default", choices=["default", "one"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        fn = {"text": worker_text, "text-openai80": worker_text_openai80, "image": worker_image}[args.worker]
        print(json.dumps(fn(args)))
        return
    text = _run(args, "text", [])
    text80 = _run(args, "text-openai80", [])
    images = []
    for side in args.sides:
        for how in ("one", "default"):
            images.append(_run(args, "image", ["--side", str(side), "--group-elements", how]))
    if args.ade[0] > 0:
        images.append(_run(args, "image", ["--side", "336", "--original", *map(str, args.ade), "--group-elements", "default"]))
    # the one-group linear model at ADE-847's protocol size: model input 336x448, scores at the original (<= 512x683)
    q, c = text["queries"], text["queries"] // K
    ade = (q * 336 * 448 * 4 + q * 336 * 683 * 4 + c * 512 * 683 * 8) / 2**30
    one = [r for r in images if r["groups"] == 1]
    ratio = max((r["rss_increase_mb"] / r["buffers_model_mb"] for r in one), default=float("nan"))
    lines = [
        "| phase | size (input) | queries | groups | seconds | peak RSS increase (MB) | tracemalloc peak (MB) | big-buffer model (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        f"| {text['phase']} | [{text['shape'][0]}, {text['shape'][1]}] | {q} | - | {text['seconds']:.1f} | "
        f"{text['rss_increase_mb']:.0f} | {text['tracemalloc_peak_mb']:.1f} | {text['result_mb']:.1f} (result) |",
        f"| {text80['phase']} | {text80['prompts']} prompts | {q} | - | {text80['seconds']:.1f} | {text80['rss_increase_mb']:.0f} | "
        f"{text80['tracemalloc_peak_mb']:.1f} | {text80['prompt_block_mb']:.0f} (prompt block) |",
    ]
    for r in images:
        how = "one group" if r["groups"] == 1 else "class groups"
        lines.append(f"| image, dense sclip, max, {how} | {r['size']} ({r['input']}) | {r['queries']} | {r['groups']} | "
                     f"{r['seconds']:.1f} | {r['rss_increase_mb']:.0f} | - | {r['buffers_model_mb']:.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.no_write:
        return
    grouped = [r for r in images if r["groups"] > 1]
    ade_row = next((r for r in grouped if r["side"] == 336), None)
    ade_line = (
        f"- at ADE-847's protocol size ({ade_row['size']} original, {ade_row['input']} model input), measured: "
        f"{ade_row['rss_increase_mb'] / 1024:.1f} GiB peak RSS increase for forward + finish in {ade_row['groups']} groups, "
        f"{ade_row['seconds']:.0f} s; of that, {ade_row['results_mb'] / 1024:.1f} GiB are the results themselves "
        "(scores float32 + winners int16 [C, H, W]: the method's output, which grows with C, not with the subclasses).\n"
        if ade_row else ""
    )
    command = "python benchmarks/bench_memory_847.py" + ("" if len(sys.argv) == 1 else " " + " ".join(sys.argv[1:]))
    section = (
        f"\n{SECTION} ({args.arch} random weights, CPU)\n\n"
        f"- device: {cpu_name()}, {os.cpu_count()} cores, shared with other jobs\n"
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}\n"
        f"- command: `{command}`\n"
        "- what: ade847's class names, 5 made-up subclasses each (4235 text queries); text embeddings with a random "
        f"{args.arch} text tower ({args.templates} template), the same names with the 80 OpenAI templates through "
        "`embed_prompts` on a stand-in encoder (D=512), and one random image through the dense method (SCLIP preset, "
        "slide 224/112, max assembly; forward + finish). Peak RSS increase sampled every 2 ms in a fresh process per "
        "row; tracemalloc sees Python/numpy allocations only, not torch's.\n"
        "- one group = every query at once, as the method ran before issue 13 (canvas [Q, h, w] + row-resized [Q, h, W]); "
        "class groups = the default: the text side (logits, crop accumulation, resizes, assembly) runs a few whole "
        "classes at a time, at most `dense.GROUP_ELEMENTS` (2^25) per-query elements per group, the image encoder still "
        "once per crop; the softmax over all names is carried across groups as a per-pixel log-sum-exp "
        "(tests/models/test_query_groups.py: same scores to float32 rounding, same labels wherever the top-two gap "
        "exceeds that rounding).\n"
        "- big-buffer model: results scores float32 + winners int16 [C, H, W], plus canvas + row-resized [Q, ...] "
        "(one group) or one group's 128 MB (class groups); Q = 4235, C = 847.\n"
        + ade_line
        + f"- one group at ADE-847's size, by its linear model (canvas + row-resized [Q, ...], scores + int32 winners "
        f"[C, H, W], the layout before issue 13): {ade:.1f} GiB, about {ade * ratio:.0f} GiB with the measured "
        f"factor {ratio:.1f} of this run's one-group rows (not run).\n\n"
        + table + "\n"
    )
    _replace_section(section)

if __name__ == "__main__":
    main()
