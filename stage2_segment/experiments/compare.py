"""`llmseg compare`: a grid of label sets x method variants x datasets, each cell one `evaluate` run.

    for each dataset, variant (a MethodConfig, e.g. one per preset), label set ("names" or a file):
        cells/<dataset>/<variant>/<label set>/   an ordinary `evaluate` result folder (resumable)
    compare.json / compare.md                     mIoU per cell, each label set's delta over class
                                                  names, the classes that gained and lost most
    compare_miou.png, compare_delta_*.png         bar charts (matplotlib, the `plots` extra)
    overlays/<dataset>/<variant>/<stem>.png       the same images under each label set

A label set that differs per dataset is one path with a `{dataset}` placeholder
(`label_sets/{dataset}/top5.json`); a path without it is used for every dataset (its keys must be
that dataset's classes). `NAME=PATH` names a column; otherwise the file's stem does.

A finished cell (its metrics.json, a complete checkpoint and the same cell key in cell.json) is
reused without building anything; an interrupted one continues from its checkpoint (evaluate's
own resumption); text embeddings are cached in `<out>/text_cache` unless a cache folder is given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmseg.datasets import get_dataset
from llmseg.errors import ConfigError, LlmsegError
from llmseg.io import atomic_write_json, atomic_write_text, ensure_folder, sha256_file, stable_hash
from llmseg.labelset import read_label_set_json
from llmseg.locks import hold_folder
from llmseg.resources import resolve_label_set_path
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.engine import runner
from llmseg.stage2.engine.run_folder import clear_results, finished_metrics, marker_key, write_marker
from llmseg.stage2.methods import build_method, load_backbone
from llmseg.stage2.pictures.compare_pictures import draw_all

NAMES = "names"
PLACEHOLDER = "{dataset}"
CELL_FILE = "cell.json"
TOP_CLASSES = 5  # classes listed as gaining / losing most per label set
BACKBONE_FIELDS = ("backbone", "pretrained", "random_weights", "checkpoint", "text_tokenizer", "device", "precision")


class CompareError(LlmsegError, RuntimeError):
    """A grid cannot run: a cell folder written with other settings, a label set that fits no dataset."""


@dataclass(frozen=True)
class LabelSetChoice:
    """One label-set column: class names only (template None) or a file, maybe with `{dataset}`."""

    name: str
    template: str | None

    @classmethod
    def parse(cls, text: str) -> LabelSetChoice:
        """`names`, `PATH`, or `NAME=PATH`."""
        text = str(text).strip()
        if text == NAMES:
            return cls(NAMES, None)
        name, sep, path = text.partition("=")
        if sep and name and "/" not in name and path:
            return cls(name, path)
        stem = Path(text.replace(PLACEHOLDER, "")).stem or Path(text).parent.name
        return cls(stem, text)

    def path_for(self, dataset: str) -> Path | None:
        """The label-set file for one dataset (None = class names)."""
        if self.template is None:
            return None
        return resolve_label_set_path(self.template.replace(PLACEHOLDER, dataset))


@dataclass(frozen=True, eq=False)
class Cell:
    dataset: str
    variant: str
    label_set: str
    label_set_path: Path | None
    config: MethodConfig
    out: Path

    @property
    def title(self) -> str:
        return f"{self.dataset} / {self.variant} / {self.label_set}"


def variants_from_presets(base: MethodConfig, presets: Sequence[str]) -> dict[str, MethodConfig]:
    """One variant per preset (its name: the preset's name or file stem); none given: the base config."""
    if not presets:
        return {base.preset and Path(base.preset).stem or base.method: base}
    out: dict[str, MethodConfig] = {}
    for preset in presets:
        name = Path(preset).stem if preset.endswith(".json") else preset
        if name in out:
            raise ConfigError(f"--preset {preset}: a second variant named '{name}'")
        out[name] = base.model_copy(update={"preset": preset})
    return out


def _unique_names(choices: list[LabelSetChoice]) -> None:
    """Each column needs its own cell folder: names are compared as folder names (`my set` = `my_set`)."""
    seen: dict[str, str] = {}
    for choice in choices:
        folder = _safe(choice.name)
        if folder.casefold() in seen:  # casefold: one folder on a case-insensitive disk
            first = seen[folder.casefold()]
            same = "both named" if first == choice.name else f"named '{first}' and"
            raise ConfigError(
                f"two label sets are {same} '{choice.name}', which share the cell folder '{folder}': name them apart, "
                f"e.g. --label-set {folder}2={choice.template}"
            )
        seen[folder.casefold()] = choice.name


def _unique_variants(variants: Mapping[str, MethodConfig]) -> None:
    """Variants, like label sets, must not share a cell folder."""
    seen: dict[str, str] = {}
    for name in variants:
        folder = _safe(name).casefold()
        if folder in seen:
            raise ConfigError(f"two variants, '{seen[folder]}' and '{name}', share the cell folder '{_safe(name)}': rename one")
        seen[folder] = name


def _safe(name: str) -> str:
    """The folder name of a grid name: characters other than letters, digits, '-', '_', '.' become '_'."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return "_" if safe in ("", ".", "..") else safe


def plan_cells(datasets: Sequence[str], label_sets: Sequence[str | LabelSetChoice], variants: Mapping[str, MethodConfig],
               out: Path, text_cache_dir: str | None) -> list[Cell]:
    """Every cell of the grid, its label-set file resolved (a missing file: MissingFileError, before any run)."""
    choices = [c if isinstance(c, LabelSetChoice) else LabelSetChoice.parse(c) for c in label_sets]
    if not choices:
        choices = [LabelSetChoice(NAMES, None)]
    _unique_names(choices)
    _unique_variants(variants)
    if not datasets:
        raise ConfigError("give at least one --dataset")
    cells = []
    for dataset in datasets:
        spec = get_dataset(dataset)
        for variant, config in variants.items():
            for choice in choices:
                path = choice.path_for(spec.name if PLACEHOLDER in (choice.template or "") else dataset)
                update: dict[str, Any] = {"label_set": str(path) if path else None}
                if config.text_cache_dir is None:
                    update["text_cache_dir"] = text_cache_dir
                cell_config = config.model_copy(update=update)
                folder = out / "cells" / _safe(spec.name) / _safe(variant) / _safe(choice.name)
                cells.append(Cell(spec.name, variant, choice.name, path, cell_config, folder))
    return cells


def cell_key(cell: Cell, data_root: str | os.PathLike, limit: int | None) -> str:
    """What a reusable finished cell must share with the cell asked for now."""
    return stable_hash({
        "dataset": cell.dataset,
        "data_root": str(Path(data_root).resolve()),
        "limit": limit,
        "config": cell.config.model_dump(mode="json", exclude={"text_cache_dir", "device"}),
        "label_set_sha256": sha256_file(cell.label_set_path) if cell.label_set_path else None,
    })


def cell_is_finished(cell: Cell, key: str) -> bool:
    """metrics.json written, the checkpoint complete, and the cell key unchanged."""
    return finished_metrics(cell.out, CELL_FILE, key) is not None


def _claim(cell: Cell, key: str, resume: bool) -> None:
    """Write cell.json; a folder holding another grid's cell is refused (unless starting over)."""
    if (cell.out / CELL_FILE).is_file() and resume and marker_key(cell.out, CELL_FILE) != key:
        raise CompareError(
            f"{cell.out} holds a cell run with other settings (dataset, data root, limit, method settings or "
            "label-set contents); pass --no-resume to recompute it or choose another --out"
        )
    if not resume:
        clear_results(cell.out)
    write_marker(cell.out, CELL_FILE, key, {
        "dataset": cell.dataset, "variant": cell.variant, "label_set": cell.label_set,
        "label_set_path": str(cell.label_set_path) if cell.label_set_path else None,
        "method_config": cell.config.model_dump(mode="json")})


def _backbone_key(config: MethodConfig) -> str:
    return stable_hash({k: getattr(config, k, None) for k in BACKBONE_FIELDS})


def run_cells(cells: Sequence[Cell], data_root: str | os.PathLike, run: runner.RunConfig, *, resume: bool = True,
              echo: Callable[[str], None] | None = None) -> dict[str, int]:
    """Evaluate every unfinished cell (one backbone per distinct backbone setting); returns counts."""
    backbones: dict[str, Any] = {}
    counts = {"reused": 0, "evaluated": 0}
    for number, cell in enumerate(cells, start=1):
        key = cell_key(cell, data_root, run.limit)
        if resume and cell_is_finished(cell, key):
            counts["reused"] += 1
            if echo:
                echo(f"[{number}/{len(cells)}] {cell.title}: finished earlier, reused")
            continue
        if echo:
            echo(f"[{number}/{len(cells)}] {cell.title}")
        ensure_folder(cell.out)
        _claim(cell, key, resume)
        spec = get_dataset(cell.dataset)
        bkey = _backbone_key(cell.config)
        if bkey not in backbones:
            backbones[bkey] = load_backbone(cell.config)
        method = build_method(cell.config, spec.classes, dataset=spec.name, backbone=backbones[bkey])
        cfg = run.model_copy(update={"out": str(cell.out), "run_name": f"{cell.variant}-{cell.label_set}", "resume": resume})
        runner.evaluate(method, spec, data_root, cfg, extra_info={
            "compare": {"variant": cell.variant, "label_set": cell.label_set},
            "method_config": cell.config.model_dump(mode="json"),
        })
        counts["evaluated"] += 1
    return counts


# --- the summary ----------------------------------------------------------------------------------


def _subclasses(path: Path | None) -> dict[str, list[str]]:
    if path is None:
        return {}
    raw = read_label_set_json(path)
    return {str(k): [str(s) for s in v] for k, v in raw.items()} if isinstance(raw, dict) else {}


def class_deltas(report: dict[str, Any], names_report: dict[str, Any], subclasses: Mapping[str, list[str]]) -> list[dict]:
    """Per class: IoU with the label set, with class names, the difference (classes with both IoUs)."""
    rows = []
    for mine, base in zip(report["per_class"], names_report["per_class"], strict=True):
        if mine["IoU"] is None or base["IoU"] is None:
            continue
        rows.append({"class": mine["class"], "IoU": mine["IoU"], "names_IoU": base["IoU"],
                     "delta": round(mine["IoU"] - base["IoU"], 4), "subclasses": list(subclasses.get(mine["class"], []))})
    return sorted(rows, key=lambda r: (-r["delta"], r["class"]))


def summarize(cells: Sequence[Cell], top: int = TOP_CLASSES) -> dict[str, Any]:
    """compare.json's content from the cells' metrics.json files."""
    reports = [(c, json.loads((c.out / "metrics.json").read_text(encoding="utf-8"))) for c in cells]
    rows = []
    for cell, report in reports:
        rows.append({"dataset": cell.dataset, "variant": cell.variant, "label_set": cell.label_set,
                     "label_set_path": str(cell.label_set_path) if cell.label_set_path else None,
                     "mIoU": report["mIoU"], "mAcc": report["mAcc"], "aAcc": report["aAcc"],
                     "num_images": report["num_images"], "metrics": str(cell.out / "metrics.json")})
    names = {(c.dataset, c.variant): r for c, r in reports if c.label_set == NAMES}
    deltas = []
    for cell, report in reports:
        base = names.get((cell.dataset, cell.variant))
        if cell.label_set == NAMES or base is None:
            continue
        per_class = class_deltas(report, base, _subclasses(cell.label_set_path))
        delta = None if report["mIoU"] is None or base["mIoU"] is None else round(report["mIoU"] - base["mIoU"], 4)
        deltas.append({
            "dataset": cell.dataset, "variant": cell.variant, "label_set": cell.label_set, "mIoU": report["mIoU"],
            "names_mIoU": base["mIoU"], "delta": delta,
            "gained": [r for r in per_class if r["delta"] > 0][:top],
            "lost": sorted((r for r in per_class if r["delta"] < 0), key=lambda r: (r["delta"], r["class"]))[:top],
            "per_class": per_class,
        })
    notes = []
    if not names and any(c.label_set != NAMES for c in cells):
        notes.append("no `names` column in the grid: deltas are over class names, so none are reported")
    return {"units": "percent", "cells": rows, "deltas": deltas, "notes": notes}


def _fmt(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if sign else f"{value:.2f}"


def render_markdown(summary: dict[str, Any]) -> str:
    """compare.md: per dataset a variants x label sets mIoU table (delta over names in brackets), then the classes."""
    cells = summary["cells"]
    deltas = {(d["dataset"], d["variant"], d["label_set"]): d for d in summary["deltas"]}
    lines = ["# llmseg compare", "",
             "mIoU in percent (MMSegmentation's definition); in brackets the difference to the same variant with",
             "class names only. Each cell is an `evaluate` result folder (its metrics.json).", ""]
    for dataset in dict.fromkeys(c["dataset"] for c in cells):
        mine = [c for c in cells if c["dataset"] == dataset]
        sets = list(dict.fromkeys(c["label_set"] for c in mine))
        lines += [f"## {dataset}", "", "| variant | " + " | ".join(sets) + " |", "|---|" + "---:|" * len(sets)]
        for variant in dict.fromkeys(c["variant"] for c in mine):
            row = []
            for name in sets:
                cell = next((c for c in mine if c["variant"] == variant and c["label_set"] == name), None)
                text = _fmt(cell["mIoU"]) if cell else ""
                d = deltas.get((dataset, variant, name))
                if d is not None:
                    text += f" ({_fmt(d['delta'], sign=True)})"
                row.append(text)
            lines.append(f"| {variant} | " + " | ".join(row) + " |")
        lines.append("")
        for (ds, variant, name), d in deltas.items():
            if ds != dataset:
                continue
            lines += [f"### {variant}: {name} vs names ({_fmt(d['delta'], sign=True)} mIoU)", ""]
            for title, rows in (("Gained most", d["gained"]), ("Lost most", d["lost"])):
                lines.append(f"{title}:")
                lines.append("")
                if not rows:
                    lines += ["(none)", ""]
                    continue
                lines += ["| class | IoU names | IoU " + name + " | delta | subclasses |", "|---|---:|---:|---:|---|"]
                for r in rows:
                    subs = ", ".join(r["subclasses"])
                    lines.append(f"| {r['class']} | {_fmt(r['names_IoU'])} | {_fmt(r['IoU'])} | {_fmt(r['delta'], sign=True)} | {subs} |")
                lines.append("")
    if summary.get("pictures"):
        lines += ["## Pictures", ""] + [f"- `{p}`" for p in summary["pictures"]] + [""]
    if summary.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in summary["notes"]] + [""]
    return "\n".join(lines)


def compare(
    datasets: Sequence[str],
    label_sets: Sequence[str | LabelSetChoice],
    variants: Mapping[str, MethodConfig] | MethodConfig,
    data_root: str | os.PathLike = "data",
    out: str | os.PathLike = "results/compare",
    *,
    run: runner.RunConfig | None = None,
    text_cache_dir: str | os.PathLike | None = None,
    overlays: int = 4,
    plots: bool = True,
    resume: bool = True,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the grid (reusing finished cells) and write compare.json / compare.md and the pictures.

    `variants`: {name: MethodConfig} (e.g. `variants_from_presets`), or one config. `run`: the
    engine settings of every cell (out, run_name and resume are set per cell). Returns compare.json.
    """
    out = Path(out)
    if isinstance(variants, MethodConfig):
        variants = variants_from_presets(variants, [])
    cache = str(text_cache_dir) if text_cache_dir else str(out / "text_cache")
    cells = plan_cells(list(datasets), list(label_sets), dict(variants), out, cache)
    base_run = run or runner.RunConfig()
    if overlays > 0:
        base_run = base_run.model_copy(update={"save_pred": True})
    with hold_folder(out, "compare folder"):  # one grid at a time writes into `out`
        return _run_grid(cells, variants, data_root, out, base_run, overlays=overlays, plots=plots, resume=resume,
                         echo=echo)


def _run_grid(cells: Sequence[Cell], variants: Mapping[str, MethodConfig], data_root: str | os.PathLike, out: Path,
              base_run: runner.RunConfig, *, overlays: int, plots: bool, resume: bool,
              echo: Callable[[str], None] | None) -> dict[str, Any]:
    """The cells, the summary and the pictures, while this process holds the grid folder."""
    counts = run_cells(cells, data_root, base_run, resume=resume, echo=echo)
    summary = summarize(cells)
    summary["grid"] = {"datasets": list(dict.fromkeys(c.dataset for c in cells)),
                       "variants": {k: v.model_dump(mode="json") for k, v in variants.items()},
                       "label_sets": list(dict.fromkeys(c.label_set for c in cells)),
                       "data_root": str(data_root), "limit": base_run.limit}
    summary["cells_reused"], summary["cells_evaluated"] = counts["reused"], counts["evaluated"]
    pictures, notes = draw_all(summary, cells, data_root, out, overlays=overlays, plots=plots)
    summary["pictures"] = [p.relative_to(out).as_posix() if p.is_relative_to(out) else str(p) for p in pictures]
    summary["notes"] += notes
    atomic_write_json(out / "compare.json", summary)
    atomic_write_text(out / "compare.md", render_markdown(summary))
    return summary
