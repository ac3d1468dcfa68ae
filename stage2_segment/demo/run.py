"""`llmseg demo run`: the whole pipeline offline on the demo world, names-only vs LLM subclasses.

Steps: write the benchmark (idempotent) -> load the shipped demo CLIP (or train and cache it) ->
stage one through the scripted OpenAI-compatible server (answers = the curated fine-grained
names) -> stage two with `dense` and `llm-supervision`, class names only and with subclasses,
with and without CRF -> a table (last number of a row = mIoU %) and overlays under `out`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from llmseg.datasets import DatasetSpec
from llmseg.errors import MissingFileError
from llmseg.io import atomic_write_json, atomic_write_text
from llmseg.labelset import save_label_set
from llmseg.stage1.generate import generate_label_set
from llmseg.stage1.testing.server import ScriptedLLMServer
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.data.readers import list_samples, load_image, load_label
from llmseg.stage2.engine.results import prediction_path
from llmseg.stage2.engine.runner import RunConfig, evaluate
from llmseg.stage2.methods import build_method, load_backbone
from llmseg.stage2.pictures.palettes import palette_for
from llmseg.stage2.pictures.visualize import overlay, save_image, titled_panels

from .benchmark import BENCHMARK_SEED, CURATED_LABEL_SET, demo_spec, write_benchmark
from .train import (
    DENSE_MODE,
    LOGIT_SCALE,
    MODEL_NAME,
    TEMPLATES,
    WEIGHTS_PATH,
    TrainConfig,
    materialize,
    model_input_size,
    register_model_config,
    save_compact,
    train,
)

DEFAULT_OUT = Path("results/demo")
DEFAULT_IMAGES = 200
QUICK_IMAGES = 8


@dataclass(frozen=True)
class RunSpec:
    """One row of the demo table."""

    method: str  # "dense" | "llm-supervision"
    labels: str  # "names" | "subclasses"
    crf: bool

    @property
    def name(self) -> str:
        return f"{self.method}-{self.labels}" + ("-crf" if self.crf else "")


@dataclass
class DemoResult:
    out: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    table: str = ""
    pictures: list[Path] = field(default_factory=list)

    def miou(self, method: str, labels: str, crf: bool = False) -> float:
        for row in self.rows:
            if (row["method"], row["labels"], row["crf"]) == (method, labels, crf):
                return float(row["mIoU"])
        raise KeyError(f"no demo run {method}/{labels}/crf={crf}")


def all_runs(crf: bool = True) -> list[RunSpec]:
    return [
        RunSpec(method, labels, with_crf)
        for method in ("dense", "llm-supervision")
        for with_crf in ((False, True) if crf else (False,))
        for labels in ("names", "subclasses")
    ]


def ensure_weights(
    out: Path,
    weights: str | Path | None = None,
    steps: int | None = None,
    echo: Callable[[str], None] = print,
    *,
    shipped: Path = WEIGHTS_PATH,
    train_config: TrainConfig | None = None,
) -> Path:
    """The compact weights: given, else shipped, else cached under `out/model/`, else trained now and cached."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise MissingFileError(f"demo weights not found: {path}")
        return path
    if shipped.is_file():
        return shipped
    cached = out / "model" / shipped.name
    if cached.is_file():
        return cached
    cfg = train_config or TrainConfig()
    if steps is not None:
        cfg.steps = steps
    echo(f"no shipped demo weights ({shipped}): training them now ({cfg.steps} steps; cached at {cached})")
    result = train(cfg)
    return save_compact(result, cached, cfg)


def scripted_label_set(out: Path, progress: bool = False) -> Path:
    """Stage one, offline: `generate_label_set` against the scripted server answering the curated names."""
    spec = demo_spec()
    curated = json.loads(CURATED_LABEL_SET.read_text(encoding="utf-8"))
    sizes = {len(v) for v in curated.values()}
    if len(sizes) != 1:  # stage one asks for exactly k subclasses of every class
        raise ValueError(f"{CURATED_LABEL_SET}: every class needs the same number of subclasses, got {sorted(sizes)}")
    k = sizes.pop()

    def answer(class_name: str, wanted: int) -> list[str]:
        if class_name not in curated:
            raise KeyError(f"scripted demo server: no curated answer for class '{class_name}'")
        return list(curated[class_name][:wanted])

    target = out / "label_sets" / f"scripted_top{k}.json"
    with ScriptedLLMServer(default=answer, model="demo-scripted") as server:
        label_set, meta = generate_label_set(
            spec.classes,
            backend="openai",
            model="demo-scripted",
            k=k,
            base_url=server.base_url,
            api_key="scripted-demo-no-key",
            cache_path=None,
            dataset_name=spec.name,
            domain=spec.domain,
            concurrency=1,
            progress=progress,
        )
    meta.notes = (
        "offline demo: answers came from llmseg.stage1.testing.server.ScriptedLLMServer scripted with the "
        f"curated demo label set ({CURATED_LABEL_SET.name}); no real LLM was asked"
    )
    extra = meta.model_extra if meta.model_extra is not None else {}
    extra["source"] = "scripted-server"
    save_label_set(target, label_set, meta)
    return target


def method_config(run: RunSpec, pretrained: Path, label_set: Path | None, device: str = "cpu"):
    common = dict(
        method=run.method,
        backbone=f"openclip:{MODEL_NAME}",
        pretrained=str(pretrained),
        dense_mode=DENSE_MODE,
        label_set=str(label_set) if (label_set is not None and run.labels == "subclasses") else None,
        templates=TEMPLATES,
        crf=run.crf,
        device=device,
    )
    if run.method == "dense":
        size = model_input_size(MODEL_NAME)
        return MethodConfig(**common, short_side=size, crop=0, logit_scale=LOGIT_SCALE, prob_thd=0.0, area_thd=0.0)
    return MethodConfig(**common, top_cls_num=len(demo_spec().classes))


COMPARE_RUNS = ("dense-names-crf", "dense-subclasses-crf")  # the pair the README picture shows


def compare_pictures(
    out: Path, spec, data_root: Path, runs: list[str], n: int, scale: int = 2
) -> list[Path]:
    """Side-by-side panels per image: picture | ground truth | each run's prediction, with titles."""
    colours = palette_for(list(spec.classes), spec)  # the dataset's palette (assets/dataset.json for the demo)
    written = []
    for ref in list_samples(spec, data_root, limit=n):
        image = load_image(ref.image_path)
        big = np.kron(image, np.ones((scale, scale, 1), np.uint8))
        panels = [("picture", Image.fromarray(big))]
        assert ref.label_path is not None  # a benchmark's samples have labels
        truth = load_label(ref.label_path)
        grow = np.ones((scale, scale), np.int64)
        truth = np.kron(np.where(truth == 255, 0, truth), grow)
        panels.append(("ground truth", overlay(big, truth, spec.classes, colours, legend=False)))
        for run in runs:
            pred_file = prediction_path(out / "runs" / run / "pred", ref.stem, spec.layout.seg_map_suffix)
            if not pred_file.is_file():
                continue
            pred = load_label(pred_file)
            panels.append((run, overlay(big, np.kron(pred, grow), spec.classes, colours, legend=False)))
        canvas = titled_panels(panels, spec.classes, colours, range(spec.num_classes), title_h=18, legend_w=170)
        written.append(save_image(out / "overlays" / f"{ref.stem}.png", canvas))
    return written


def _quiet_load(config, load_backbone):
    """Build the backbone without the generic warnings meant for foreign weights.

    The engine warns that local weights may need QuickGELU and that an avg-pooling tower mixes
    dense-mode tokens into its global vector; neither applies to the demo CLIP (GELU, vanilla mode).
    """
    logger = logging.getLogger("llmseg.stage2.backbones.openclip")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return load_backbone(config)
    finally:
        logger.setLevel(level)


def format_table(rows: list[dict[str, Any]]) -> str:
    head = f"{'run':<34} {'method':<16} {'labels':<11} {'crf':<4} {'mIoU':>6}"
    lines = [head, "-" * len(head)]
    for row in rows:
        lines.append(
            f"{row['run']:<34} {row['method']:<16} {row['labels']:<11} {'yes' if row['crf'] else 'no':<4} {row['mIoU']:>6.1f}"
        )
    return "\n".join(lines)


def run_demo(
    out: str | Path = DEFAULT_OUT,
    n_images: int = DEFAULT_IMAGES,
    *,
    weights: str | Path | None = None,
    steps: int | None = None,
    crf: bool = True,
    save_vis: int = 6,
    device: str = "cpu",
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Everything `make demo` does; returns the rows and writes `out/summary.json` and `out/table.txt`."""
    started = time.perf_counter()
    out = Path(out)
    data_root = out / "data"
    echo(f"[1/4] demo benchmark: {n_images} images (seed {BENCHMARK_SEED}) under {data_root}")
    spec = write_benchmark(data_root, n_images=n_images, progress=progress)
    echo("[2/4] demo CLIP (open_clip custom config '" + MODEL_NAME + "')")
    compact = ensure_weights(out, weights, steps, echo=echo)
    register_model_config()
    pretrained = materialize(compact, out / "model")
    echo("[3/4] stage one: subclasses from the scripted OpenAI-compatible server (offline)")
    label_set = scripted_label_set(out)
    echo(f"      label set: {label_set}")
    echo("[4/4] stage two: " + ", ".join(r.name for r in all_runs(crf)))
    rows = _stage_two(out, spec, data_root, pretrained, label_set, crf=crf, save_vis=save_vis, device=device,
                      progress=progress)
    shown = [r for r in COMPARE_RUNS if crf] or [r.removesuffix("-crf") for r in COMPARE_RUNS]
    pictures = compare_pictures(out, spec, data_root, shown, save_vis)
    seconds = time.perf_counter() - started
    table = format_table(rows)
    atomic_write_text(out / "table.txt", table + "\n")
    atomic_write_json(out / "summary.json", _summary(rows, n_images, seconds, compact, label_set, pictures))
    return DemoResult(out=out, rows=rows, seconds=seconds, table=table, pictures=pictures)


def _stage_two(
    out: Path,
    spec: DatasetSpec,
    data_root: Path,
    pretrained: Path,
    label_set: Path,
    *,
    crf: bool,
    save_vis: int,
    device: str,
    progress: bool,
) -> list[dict[str, Any]]:
    """Every run of the table through the engine (one backbone, built for the first run); a row per run."""
    backbone = None
    rows: list[dict[str, Any]] = []
    for run in all_runs(crf):
        config = method_config(run, pretrained, label_set, device)
        if backbone is None:
            backbone = _quiet_load(config, load_backbone)
        method = build_method(config, spec.classes, dataset=spec.name, backbone=backbone)
        report = evaluate(
            method,
            spec,
            data_root,
            _run_config(run, out, crf=crf, save_vis=save_vis, device=device, progress=progress),
            extra_info={"demo": True, "labels": run.labels, "method_config": config.model_dump(mode="json")},
        )
        rows.append(
            {
                "run": run.name,
                "method": run.method,
                "labels": run.labels,
                "crf": run.crf,
                "mIoU": float(report["mIoU"]),
                "out": str(out / "runs" / run.name),
            }
        )
    return rows


def _run_config(run: RunSpec, out: Path, *, crf: bool, save_vis: int, device: str, progress: bool) -> RunConfig:
    """The engine settings of one run: in-process decoding, a fresh start, predictions kept for the pictures."""
    return RunConfig(
        out=str(out / "runs" / run.name),
        run_name=run.name,
        save_vis=save_vis,
        save_pred=run.name in COMPARE_RUNS or (not crf and run.name + "-crf" in COMPARE_RUNS),
        num_workers=0,
        resume=False,
        device=device,
        progress=progress,
    )


def _summary(
    rows: list[dict[str, Any]], n_images: int, seconds: float, compact: Path, label_set: Path, pictures: list[Path]
) -> dict[str, Any]:
    """summary.json: the rows and what produced them (weights, label set, protocol, pictures)."""
    return {
        "rows": rows,
        "n_images": n_images,
        "seconds": round(seconds, 1),
        "weights": str(compact),
        "label_set": str(label_set),
        "dense_mode": DENSE_MODE,
        "templates": TEMPLATES,
        "pictures": [str(p) for p in pictures],
    }
