"""Build a segmentation method from a `MethodConfig`: the one entry point of the CLI, API and `evaluate`.

The build layer: `load_backbone(config)` builds the model (after `check_applicable` and the family's input
checks; reuse it across class lists via `build_method(..., backbone=...)`); `build_method` refuses
settings the chosen method does not read, resolves the preset and per-dataset defaults (presets.py, home
of the `resolve_*` functions, re-exported here), loads and validates the label set, embeds the names once
(per-backbone memory + optional disk cache) and hands them to the method's registered builder
(`registry_tables.METHODS`; the built-ins are in builtin.py). Torch-free at import: the dense method and the
text encoder load when a method is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmseg.datasets import dataset_background
from llmseg.errors import ConfigError
from llmseg.io import sha256_file, sha256_text, stable_hash
from llmseg.labelset import LabelSet, load_label_set
from llmseg.stage2.protocols import SegmentationMethod
from llmseg.stage2.registry_tables import ASSEMBLY_RULES, BACKBONES, METHODS
from llmseg.templates import load_templates

from ..backbones.base import Backbone, BackboneError
from ..config import MethodConfig
from ..options import MethodInputs, MethodOptions, parse_backbone
from ..preflight import check_method_inputs
from .common import NameTable, has_background
from .presets import (
    PRESET_CONFIG_FIELDS,
    check_applicable,
    load_preset,
    method_options_of,
    preset_of,
    preset_settings,
    resolve_dense_mode,
    resolve_dense_settings,
    resolve_mode_options,
    resolve_naclip_std,
)

__all__ = [
    "PRESET_CONFIG_FIELDS",
    "build_method",
    "check_applicable",
    "load_backbone",
    "method_options_of",
    "resolve_dense_mode",
    "resolve_dense_settings",
    "resolve_mode_options",
    "resolve_naclip_std",
    "with_preset_fields",
]


def load_backbone(config: MethodConfig) -> Backbone:
    """The backbone `config.backbone` names, built by its registered builder from the config."""
    family, arg = parse_backbone(config.backbone)
    check_applicable(config)
    check_method_inputs(config)  # weights asked for and reachable, files present: before anything is built
    backbone = BACKBONES.build(family, config, arg)
    if not isinstance(backbone, Backbone):
        raise BackboneError(f"backbone '{family}': its builder returned {type(backbone).__name__}, not a Backbone")
    return backbone


# MethodConfig fields a preset may set besides the dense numbers (which resolve_dense_settings reads):
# a tuned preset (`llmseg tune`) carries the assembly rule, K and llm-supervision's top_cls_num too.
# (presets.PRESET_CONFIG_FIELDS, imported above)


def with_preset_fields(config: MethodConfig, dataset: str | None) -> MethodConfig:
    """`config` with each PRESET_CONFIG_FIELDS value the user left unset taken from its preset.

    Also refuses a preset written for another method (its numbers would mean something else).
    """
    preset = preset_of(config)
    if not preset:
        return config
    table = load_preset(preset)
    if table.method != config.method:
        raise ConfigError(f"preset '{preset}' is for method '{table.method}', not --method {config.method}")
    settings = preset_settings(preset, dataset)
    update = {key: settings[key] for key in PRESET_CONFIG_FIELDS if key in settings and getattr(config, key) is None}
    return MethodConfig.model_validate({**config.model_dump(), **update}) if update else config


def _dataset_background(dataset: str | None) -> bool | None:
    if dataset is None:
        return None
    return dataset_background(dataset)  # the dataset.json's "background"; None: no facts, judge by name


def build_method(
    config: MethodConfig,
    classes: Sequence[str],
    dataset: str | None = None,
    backbone: Backbone | None = None,
    label_set: LabelSet | None = None,
) -> SegmentationMethod:
    """The configured method for these classes (class 0 = background on background datasets)."""
    # lazy import: start-up time (ops.text imports torch; this package is read for `llmseg --help`)
    from llmseg.stage2.ops.text import text_embeddings

    classes = list(classes)
    if not classes:
        raise ConfigError("build_method: empty class list")
    entry = METHODS.entry(config.method)
    options: type[MethodOptions] = entry.config or MethodOptions
    check_applicable(config)
    config, label_set = _with_label_set(config, classes, dataset, label_set)
    assembly = config.assembly or (options.default_assembly if label_set is not None else "none")
    names = _name_table(classes, label_set, assembly, config.include_class_name)

    if backbone is None:
        backbone = load_backbone(config)
    mode = resolve_dense_mode(config)
    backbone = _method_view(backbone, config, dataset)

    templates = config.templates or options.default_templates
    template_list = load_templates(templates)
    text = text_embeddings(backbone, names.names, template_list, cache_dir=config.text_cache_dir)
    class_text = text if not names.from_label_set else text_embeddings(
        backbone, classes, template_list, cache_dir=config.text_cache_dir
    )
    inputs = MethodInputs(
        backbone=backbone,
        names=names,
        text=text,
        class_text=class_text,
        classes=classes,
        dataset=dataset,
        assembly=assembly,
        background=has_background(classes, _dataset_background(dataset)),
        describe_extra=_describe_extra(config, classes, dataset, label_set, templates, template_list, backbone, mode),
    )
    return entry.builder(config, inputs)


def _with_label_set(
    config: MethodConfig, classes: list[str], dataset: str | None, label_set: LabelSet | None
) -> tuple[MethodConfig, LabelSet | None]:
    """The config with its preset's fields, and the label set (given, or read from --label-set) cut to --k.

    Without a label set the preset's K and assembly rule have nothing to act on, so they are dropped;
    the user's own --k (here) and subclass --assembly (`_name_table`) are refused instead.
    """
    given = {key for key in ("k", "assembly") if getattr(config, key) is not None}
    config = with_preset_fields(config, dataset)
    label_set_path = str(config.label_set) if config.label_set else None
    if label_set is None and label_set_path:
        label_set = load_label_set(label_set_path, classes)
    elif label_set is not None and label_set.classes != classes:
        raise ConfigError(f"label set classes {label_set.classes[:3]}... differ from the class list {classes[:3]}...")
    if label_set is None:  # a preset's K and assembly rule have nothing to act on with class names only
        config = config.model_copy(update={key: None for key in ("k", "assembly") if key not in given})
    if config.k is not None:
        if label_set is None:
            raise ConfigError(f"--k {config.k} keeps the first K subclasses of a label set: give one (--label-set)")
        label_set = label_set.first(config.k)
    return config, label_set


def _name_table(classes: list[str], label_set: LabelSet | None, assembly: str, include_class_name: bool) -> NameTable:
    """The names to embed: the class names for a one-name-per-class rule, else the label set's subclasses."""
    per_class = ASSEMBLY_RULES.get(assembly).one_name_per_class  # "none": the class names themselves
    if not per_class and label_set is None:
        raise ConfigError(f"--assembly {assembly} needs a label set (--label-set)")
    return NameTable.build(classes, None if per_class else label_set, include_class_name)


def _method_view(backbone: Backbone, config: MethodConfig, dataset: str | None) -> Any:
    """open_clip: this method's own view (mode, naclip std, pos-embed rule), the one dense_logits takes; the
    backbone itself is unchanged. Other backbones are returned as they are."""
    # lazy import: start-up time (dense.py imports torch; this package is read for `llmseg --help`)
    from .dense import dense_backbone

    return dense_backbone(backbone, config, dataset)


def _describe_extra(
    config: MethodConfig,
    classes: list[str],
    dataset: str | None,
    label_set: LabelSet | None,
    templates: str,
    template_list: Sequence[str],
    backbone: Backbone,
    mode: str,
) -> dict[str, Any]:
    """What the method's `describe()` adds about its inputs: dataset, label set and templates (with hashes), the
    text weights' fingerprint, the dense mode and the device."""
    label_set_path = str(config.label_set) if config.label_set else None
    return {
        "dataset": dataset,
        "classes": classes,
        "label_set": label_set_path,
        "label_set_sha256": sha256_file(label_set_path) if label_set_path and Path(label_set_path).is_file() else None,
        "label_set_content_sha256": stable_hash(label_set.root) if label_set is not None else None,
        "k": config.k,
        "include_class_name": config.include_class_name,
        "templates": str(templates),
        "templates_sha256": sha256_text("\n".join(template_list)),
        "text_weights_fingerprint": backbone.text_fingerprint(),
        "dense_mode": mode if backbone.has_dense_modes else None,
        "device": config.device,
        "precision": config.precision,
    }
