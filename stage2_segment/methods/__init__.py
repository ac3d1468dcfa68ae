"""Build a segmentation method from a `MethodConfig`: the one entry point of the CLI, API and `evaluate`.

`load_backbone(config)` builds the model (reuse it across class lists via `build_method(...,
backbone=...)`); `build_method` resolves the preset and per-dataset defaults (presets.py), loads
and validates the label set, embeds the names once (per-backbone memory + optional disk cache)
and returns a `DenseMethod` or an `LLMSupervisionMethod`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmseg.io import sha256_file, sha256_text, stable_hash
from llmseg.labelset import LabelSet, load_label_set

from ..backbones.base import Backbone, BackboneError
from ..interface import MethodConfig, SegmentationMethod
from .common import NameTable, has_background
from .presets import (
    DEFAULT_PRESET,
    DENSE_KEYS,
    METHOD_TEMPLATES,
    load_preset,
    preset_settings,
)

__all__ = ["build_method", "load_backbone", "resolve_dense_mode", "resolve_dense_settings"]


def resolve_dense_mode(config: MethodConfig) -> str:
    """--dense-mode, else the preset's mode, else sclip's for `dense` and vanilla for llm-supervision."""
    if config.dense_mode:
        return config.dense_mode
    preset = config.preset or (DEFAULT_PRESET if config.method == "dense" else None)
    return load_preset(preset).default.get("dense_mode", "vanilla") if preset else "vanilla"


def load_backbone(config: MethodConfig) -> Backbone:
    """`openclip:<arch>` (with --pretrained) or `simseg` (with --checkpoint, --text-tokenizer)."""
    if config.backbone == "simseg":
        if not config.checkpoint:
            raise BackboneError("backbone 'simseg' needs --checkpoint (e.g. ckpts/simseg.vit-s.pth)")
        from ..backbones.simseg import SimSegBackbone

        return SimSegBackbone(config.checkpoint, tokenizer=config.text_tokenizer, device=config.device, precision=config.precision)
    if config.backbone.startswith("openclip:"):
        from ..backbones.openclip import OpenClipBackbone

        return OpenClipBackbone(
            config.backbone.split(":", 1)[1],
            config.pretrained,
            dense_mode=resolve_dense_mode(config),
            device=config.device,
            precision=config.precision,
        )
    raise BackboneError(f"unknown backbone '{config.backbone}': use 'openclip:<arch>' or 'simseg'")


def resolve_dense_settings(config: MethodConfig, dataset: str | None) -> dict[str, Any]:
    """Preset numbers for the dataset, each overridden by an explicit config value."""
    preset = config.preset or DEFAULT_PRESET
    settings = preset_settings(preset, dataset)
    settings["dense_mode"] = resolve_dense_mode(config)
    for key in DENSE_KEYS:
        value = getattr(config, key, None)
        if value is not None:
            settings[key] = value
    settings["preset"] = preset
    return settings


def _dataset_background(dataset: str | None) -> bool | None:
    if dataset is None:
        return None
    from llmseg.datasets import dataset_background

    return dataset_background(dataset)  # the dataset.json's "background"; None: no facts, judge by name


def _dataset_top_cls_num(dataset: str | None) -> int:
    from llmseg.datasets import dataset_top_cls_num

    return dataset_top_cls_num(dataset)  # the dataset.json's "top_cls_num", else 10 (clamped to C by the method)


def build_method(
    config: MethodConfig,
    classes: Sequence[str],
    dataset: str | None = None,
    backbone: Backbone | None = None,
    label_set: LabelSet | None = None,
) -> SegmentationMethod:
    """The configured method for these classes (class 0 = background on background datasets)."""
    from ..text import text_embeddings

    classes = list(classes)
    if not classes:
        raise ValueError("build_method: empty class list")
    label_set_path = str(config.label_set) if config.label_set else None
    if label_set is None and label_set_path:
        label_set = load_label_set(label_set_path, classes)
    elif label_set is not None and label_set.classes != classes:
        raise ValueError(f"label set classes {label_set.classes[:3]}... differ from the class list {classes[:3]}...")
    assembly = config.assembly or (
        ("max" if config.method == "dense" else "softmax") if label_set is not None else "none"
    )
    if assembly != "none" and label_set is None:
        raise ValueError(f"--assembly {assembly} needs a label set (--label-set)")
    names = NameTable.build(classes, label_set if assembly != "none" else None, config.include_class_name)

    if backbone is None:
        backbone = load_backbone(config)
    mode = resolve_dense_mode(config)
    if hasattr(backbone, "last_block"):
        backbone.last_block.mode = mode  # a reused open_clip backbone follows this config's mode
        backbone.dense_mode = mode
    elif config.dense_mode not in (None, "vanilla"):
        raise ValueError(f"--dense-mode {config.dense_mode} applies to openclip backbones only")

    templates = config.templates or METHOD_TEMPLATES[config.method]
    from llmseg.templates import load_templates

    template_list = load_templates(templates)
    text = text_embeddings(backbone, names.names, template_list, cache_dir=config.text_cache_dir)
    class_text = text if not names.from_label_set else text_embeddings(
        backbone, classes, template_list, cache_dir=config.text_cache_dir
    )
    background = has_background(classes, _dataset_background(dataset))
    extra: dict[str, Any] = {
        "dataset": dataset,
        "classes": classes,
        "label_set": label_set_path,
        "label_set_sha256": sha256_file(label_set_path) if label_set_path and Path(label_set_path).is_file() else None,
        "label_set_content_sha256": stable_hash(label_set.root) if label_set is not None else None,
        "include_class_name": config.include_class_name,
        "templates": str(templates),
        "templates_sha256": sha256_text("\n".join(template_list)),
        "text_weights_fingerprint": backbone.text_fingerprint(),
        "dense_mode": mode if hasattr(backbone, "last_block") else None,
        "device": config.device,
        "precision": config.precision,
    }
    if config.method == "dense":
        from .dense import DenseMethod

        settings = resolve_dense_settings(config, dataset)
        if not hasattr(backbone, "last_block"):
            settings["dense_mode"] = None  # dense modes rewrite an open_clip block; other backbones are used as they are
        return DenseMethod(
            backbone,
            names,
            text,
            class_text,
            num_classes=len(classes),
            assembly=assembly,
            settings=settings,
            background=background,
            crf=bool(config.crf),
            crf_iterations=config.crf_iterations,
            describe_extra=extra,
        )
    if config.method == "llm-supervision":
        from .llm_supervision import LLMSupervisionMethod

        top = config.top_cls_num if config.top_cls_num is not None else _dataset_top_cls_num(dataset)
        return LLMSupervisionMethod(
            backbone,
            names,
            text,
            class_text,
            num_classes=len(classes),
            assembly=assembly,
            top_cls_num=top,
            candidates=config.candidates,
            background=background,
            crf=config.crf is not False,
            describe_extra=extra,
        )
    raise ValueError(f"unknown method '{config.method}'")
