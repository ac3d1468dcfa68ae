"""Build a segmentation method from a `MethodConfig`: the one entry point of the CLI, API and `evaluate`.

`load_backbone(config)` builds the model (reuse it across class lists via `build_method(...,
backbone=...)`); `build_method` refuses settings the chosen method does not read, resolves the
preset and per-dataset defaults (presets.py), loads and validates the label set, embeds the names
once (per-backbone memory + optional disk cache) and hands them to the method's registered
builder (`registries.METHODS`; the built-ins are in builtin.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmseg.errors import ConfigError
from llmseg.io import sha256_file, sha256_text, stable_hash
from llmseg.labelset import LabelSet, load_label_set

from ..backbones import load_backbone
from ..backbones.base import Backbone
from ..interface import MethodConfig, SegmentationMethod
from ..registries import ASSEMBLY_RULES, METHODS, MethodInputs, MethodOptions, check_applicable
from .common import NameTable, has_background
from .presets import (
    DEFAULT_PRESET,
    DENSE_KEYS,
    NACLIP_STD_DEFAULT,
    PRESET_CONFIG_FIELDS,
    load_preset,
    preset_settings,
)

__all__ = [
    "build_method",
    "load_backbone",
    "method_options_of",
    "resolve_dense_mode",
    "resolve_dense_settings",
    "resolve_mode_options",
    "resolve_naclip_std",
]


def method_options_of(config: MethodConfig) -> type[MethodOptions]:
    """The options model of the configured method (its fields and defaults); ConfigError if unknown."""
    return METHODS.entry(config.method).config or MethodOptions


def _preset_of(config: MethodConfig) -> str | None:
    """--preset, else the method's default preset (sclip for `dense`, none for llm-supervision)."""
    return config.preset or method_options_of(config).default_preset


def resolve_dense_mode(config: MethodConfig) -> str:
    """--dense-mode, else the preset's mode (the method's default preset), else vanilla."""
    if config.dense_mode:
        return config.dense_mode
    preset = _preset_of(config)
    return load_preset(preset).default.get("dense_mode", "vanilla") if preset else "vanilla"


def resolve_mode_options(config: MethodConfig) -> dict[str, Any]:
    """The resolved dense mode's own settings (--mode-option NAME=VALUE), checked against the mode's model."""
    from ..backbones.dense_modes import mode_settings  # imports torch: kept off the CLI's start-up path

    return mode_settings(resolve_dense_mode(config), config.mode_options)


def resolve_naclip_std(config: MethodConfig) -> float:
    """--naclip-std (or --mode-option std=... in the naclip mode), else the preset's `naclip_std`, else NACLIP's 5.0."""
    given = (config.mode_options or {}).get("std") if resolve_dense_mode(config) == "naclip" else None
    if config.naclip_std is not None and given is not None:
        raise ConfigError("--naclip-std and --mode-option std=... both set NACLIP's std: give one of them")
    if given is not None:
        return float(resolve_mode_options(config)["std"])
    if config.naclip_std is not None:
        return float(config.naclip_std)
    preset = _preset_of(config)
    return float(load_preset(preset).default.get("naclip_std", NACLIP_STD_DEFAULT) if preset else NACLIP_STD_DEFAULT)


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
    if settings.get("logit_scale") is None:  # the one number the dense method cannot do without
        raise ConfigError(
            f"preset '{preset}' sets no logit_scale{f' for {dataset}' if dataset else ''} (in 'default' or "
            "'datasets'), and none was given: add it to the preset or pass --logit-scale"
        )
    return settings


# MethodConfig fields a preset may set besides the dense numbers (which resolve_dense_settings reads):
# a tuned preset (`llmseg tune`) carries the assembly rule, K and llm-supervision's top_cls_num too.
# (presets.PRESET_CONFIG_FIELDS, imported above)


def with_preset_fields(config: MethodConfig, dataset: str | None) -> MethodConfig:
    """`config` with each PRESET_CONFIG_FIELDS value the user left unset taken from its preset.

    Also refuses a preset written for another method (its numbers would mean something else).
    """
    preset = _preset_of(config)
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
        raise ConfigError("build_method: empty class list")
    entry = METHODS.entry(config.method)
    options: type[MethodOptions] = entry.config or MethodOptions
    check_applicable(config)
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
    assembly = config.assembly or (options.default_assembly if label_set is not None else "none")
    per_class = ASSEMBLY_RULES.get(assembly).one_name_per_class  # "none": the class names themselves
    if not per_class and label_set is None:
        raise ConfigError(f"--assembly {assembly} needs a label set (--label-set)")
    names = NameTable.build(classes, None if per_class else label_set, config.include_class_name)

    if backbone is None:
        backbone = load_backbone(config)
    mode = resolve_dense_mode(config)
    # open_clip: this method's own view (mode, naclip std, pos-embed rule), the one dense_logits takes; the backbone
    # is unchanged. Imported here, not at the top: dense.py imports this package (resolve_dense_*).
    from .dense import dense_backbone

    backbone = dense_backbone(backbone, config, dataset)

    templates = config.templates or options.default_templates
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
        "k": config.k,
        "include_class_name": config.include_class_name,
        "templates": str(templates),
        "templates_sha256": sha256_text("\n".join(template_list)),
        "text_weights_fingerprint": backbone.text_fingerprint(),
        "dense_mode": mode if backbone.has_dense_modes else None,
        "device": config.device,
        "precision": config.precision,
    }
    inputs = MethodInputs(
        backbone=backbone,
        names=names,
        text=text,
        class_text=class_text,
        classes=classes,
        dataset=dataset,
        assembly=assembly,
        background=background,
        describe_extra=extra,
    )
    return entry.builder(config, inputs)
