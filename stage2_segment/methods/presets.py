"""Per-paper, per-dataset settings of the dense protocol, as data files (docs/methods.md).

A preset is a JSON file: `default` holds the paper's general numbers, `datasets[ds]` the overrides
for one benchmark. The bundled ones live in `preset_files/<name>.json`; `--preset PATH` takes a
user's file of the same shape (for example one written by a tuning run). `crop = 0` means the
whole resized image in one pass (NACLIP on VOC). Besides the dense numbers a preset may set
`assembly`, `k`, `top_cls_num`, `templates` and `crf` (methods.PRESET_CONFIG_FIELDS; what a
tuning run chooses), and its `method` must be the configured one. `prob_thd` / `area_thd` only act on datasets
whose class 0 is background.

Also here, one layer below the backbones and methods that read them: what a config resolves to
(`resolve_dense_mode`, `resolve_mode_options`, `resolve_naclip_std`, `resolve_dense_settings`, a dense
mode's own settings `mode_settings`) and which settings apply at all (`check_applicable`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from llmseg.errors import ConfigError, LlmsegError
from llmseg.io import RepeatedKeyError, refuse_repeated_keys
from llmseg.registry import Registry
from llmseg.stage2.registry_tables import BACKBONES, METHODS, dense_modes

from ..config import MethodConfig
from ..options import MethodOptions, flag, parse_backbone

PRESET_DIR = Path(__file__).with_name("preset_files")

# The settings a config may override (None in MethodConfig = keep the preset's value).
DENSE_KEYS = ("dense_mode", "short_side", "crop", "stride", "logit_scale", "prob_thd", "area_thd", "pamr")
# MethodConfig fields a preset may set besides the dense numbers (what a tuning run chooses).
PRESET_CONFIG_FIELDS = ("assembly", "k", "top_cls_num", "templates", "crf")
# How a peer's code does each step (methods/dense.py ProtocolRules, backbones' PosEmbedRule).
PROTOCOL_KEYS = ("pos_embed", "resize", "normalize", "crop_remainder", "whole_remainder", "whole_upsample")
# Every key a preset's `default` or `datasets[ds]` block may hold: anything else is a typo.
PRESET_KEYS = (*DENSE_KEYS, "naclip_std", *PRESET_CONFIG_FIELDS, *PROTOCOL_KEYS)

DEFAULT_PRESET = "sclip"

# llm-supervision's per-dataset top_cls_num (SimSeg's hard-coded values) is data: "top_cls_num" in
# label_sets/<dataset>/dataset.json (llmseg.datasets.dataset_top_cls_num).

# NACLIP's Gaussian neighbourhood std (in patches) when neither --naclip-std nor the preset gives one.
NACLIP_STD_DEFAULT = 5.0

# Each method's template set and assembly defaults live on its registry entry (methods/builtin.py).


class PresetFile(BaseModel):
    """The shape of a preset file; unknown top-level keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    paper: str = ""
    method: str = "dense"
    default: dict[str, Any]
    datasets: dict[str, dict[str, Any]] = {}
    source: str | None = None  # where the numbers came from (a paper, a tuning run)


def bundled_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def _problems(exc: ValidationError, prefix: str = "") -> str:
    """pydantic's errors as `field.path: message; ...` (no traceback, no pydantic URL)."""
    return "; ".join(
        f"{'.'.join(str(p) for p in (prefix, *e['loc']) if p != '') or '(top level)'}: {e['msg']}" for e in exc.errors()
    )


def _check_protocol(where: str, block: dict[str, Any]) -> None:
    """The peer-protocol keys of one block, checked by the models that read them (no torch import)."""
    # lazy import: start-up time (ops.preprocess imports torch; presets are read for `llmseg --help`)
    from llmseg.stage2.ops.preprocess import NormalizeRule, ResizeRule

    shapes: dict[str, Any] = {"resize": ResizeRule, "normalize": NormalizeRule,
                              "crop_remainder": Literal["pad", "truncate"], "whole_remainder": Literal["pad", "truncate"],
                              "whole_upsample": Literal["resized", "original"], "pos_embed": _PosEmbedShape}
    for key, shape in shapes.items():
        if block.get(key) is None:
            continue
        try:
            TypeAdapter(shape).validate_python(block[key], strict=True)
        except ValidationError as exc:
            raise ValueError(_problems(exc, f"{where}.{key}")) from None
    decimals = (block.get("normalize") or {}).get("decimals")
    if decimals is not None and not 0 <= decimals <= 12:
        raise ValueError(f"{where}.normalize.decimals: must be 0..12, got {decimals}")


class _PosEmbedShape(BaseModel):
    """The `pos_embed` block's shape (backbones.dense_block.PosEmbedRule), with a finite, small offset."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["bicubic", "bilinear", "nearest", "area"] = "bicubic"
    align_corners: bool | None = False
    antialias: bool = False
    by: Literal["size", "scale_factor"] = "size"
    offset: float = Field(0.0, ge=-1, le=1, allow_inf_nan=False)
    keep_if_same_count: bool = False


def check_block(where: str, block: dict[str, Any]) -> dict[str, Any]:
    """One `default` / `datasets[ds]` block: known keys only, each value as MethodConfig or the protocol checks it.

    Returns the block with the MethodConfig values in their checked types; ValueError names `where.key`.
    """
    unknown = [key for key in block if key not in PRESET_KEYS]
    if unknown:
        raise ValueError(f"{where}: unknown key '{unknown[0]}' (a preset may set: {', '.join(PRESET_KEYS)})")
    given = {key: value for key, value in block.items() if key in MethodConfig.model_fields and value is not None}
    try:
        checked = MethodConfig.model_validate(given, strict=True)
    except ValidationError as exc:
        raise ValueError(_problems(exc, where).replace("Value error, ", "")) from None
    except LlmsegError as exc:  # a registry's own error (an unknown assembly rule or dense mode)
        raise ValueError(f"{where}: {exc}") from None
    _check_protocol(where, block)
    return {**block, **{key: getattr(checked, key) for key in given}}


def check_preset(table: PresetFile) -> PresetFile:
    """Every block of a preset checked (check_block); ValueError names the block and the key."""
    default = check_block("default", table.default)
    datasets = {name: check_block(f"datasets.{name}", block) for name, block in table.datasets.items()}
    return table.model_copy(update={"default": default, "datasets": datasets})


def _stat_key(path: str) -> tuple[int, int] | None:
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _read(path: str) -> PresetFile:
    """The checked preset file (cached while the file is unchanged)."""
    return _read_cached(path, _stat_key(path))


@lru_cache(maxsize=64)
def _read_cached(path: str, _stat: tuple[int, int] | None) -> PresetFile:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"), object_pairs_hook=refuse_repeated_keys)
    except RepeatedKeyError as exc:
        raise ConfigError(f"preset file {path}: key {exc.key!r} is given twice in one object; remove the other") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"preset file {path}: cannot read it: {exc}") from exc
    try:
        return check_preset(PresetFile.model_validate(raw))
    except ValidationError as exc:
        raise ConfigError(f"preset file {path}: {_problems(exc)}") from None
    except ValueError as exc:
        raise ConfigError(f"preset file {path}: {exc}") from None


def load_preset(preset: str) -> PresetFile:
    """A bundled preset by name, or a preset file by path."""
    bundled = PRESET_DIR / f"{preset}.json"
    if bundled.is_file():
        return _read(str(bundled))
    if preset.endswith(".json") or "/" in preset or Path(preset).is_file():
        if not Path(preset).is_file():
            raise ConfigError(f"preset file {preset} does not exist")
        return _read(str(Path(preset).resolve()))
    raise ConfigError(f"unknown preset '{preset}': use one of {', '.join(bundled_presets())}, or a preset file path")


def preset_settings(preset: str, dataset: str | None) -> dict[str, Any]:
    """The preset's numbers for a dataset (its defaults where the paper gives no dataset-specific value)."""
    table = load_preset(preset)
    settings = dict(table.default)
    if dataset is not None:
        settings.update(table.datasets.get(dataset, {}))
    return settings


# --- what a config resolves to: its method's options, the preset's dense mode and numbers ---------------------


def method_options_of(config: MethodConfig) -> type[MethodOptions]:
    """The options model of the configured method (its fields and defaults); ConfigError if unknown."""
    return METHODS.entry(config.method).config or MethodOptions


def preset_of(config: MethodConfig) -> str | None:
    """--preset, else the method's default preset (sclip for `dense`, none for llm-supervision)."""
    return config.preset or method_options_of(config).default_preset


def resolve_dense_mode(config: MethodConfig) -> str:
    """--dense-mode, else the preset's mode (the method's default preset), else vanilla."""
    if config.dense_mode:
        return config.dense_mode
    preset = preset_of(config)
    return load_preset(preset).default.get("dense_mode", "vanilla") if preset else "vanilla"


def mode_settings(mode: str, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The mode's own settings from `--mode-option` values, checked against its registered model (unset ones dropped).

    ConfigError naming the mode and the option: an option the mode does not have, or a bad value.
    """
    model = dense_modes().entry(mode).config
    given = dict(given or {})
    if model is None or not issubclass(model, BaseModel):
        if given:
            raise ConfigError(f"dense mode '{mode}' takes no --mode-option (got {', '.join(sorted(given))})")
        return {}
    unknown = sorted(set(given) - set(model.model_fields))
    if unknown:
        known = ", ".join(model.model_fields) or "none"
        raise ConfigError(f"dense mode '{mode}' has no option {', '.join(unknown)} (its options: {known})")
    try:
        return model.model_validate(given).model_dump(exclude_none=True)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"dense mode '{mode}': bad --mode-option {problems}") from None


def resolve_mode_options(config: MethodConfig) -> dict[str, Any]:
    """The resolved dense mode's own settings (--mode-option NAME=VALUE), checked against the mode's model."""
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
    preset = preset_of(config)
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


# --- which settings apply: a field the chosen method, backbone or dense mode does not read is refused ----------


def _uses(config_model: type | None) -> set[str]:
    return set(getattr(config_model, "model_fields", {}) or {})


def _claimed(registry: Registry[Any]) -> set[str]:
    """Every field some entry of this registry reads (loading the built-ins, which are torch-free)."""
    return set().union(*(_uses(registry.entry(n).config) for n in registry.names()))


def _given(config: MethodConfig) -> list[str]:
    """Fields set to something other than their default (a model_dump round trip is not 'given')."""
    return [name for name, info in type(config).model_fields.items() if getattr(config, name) != info.get_default()]


def check_applicable(config: MethodConfig, extra: Iterable[tuple[str, str, Registry[Any]]] = ()) -> None:
    """Refuse a setting the chosen method or backbone does not read (ConfigError naming who does).

    A field belongs to a registry when one of its entries lists it; it applies when the chosen entry
    of every registry it belongs to lists it. Fields no entry lists (device, templates, ...) apply
    always; the dense mode is a level when the backbone reads --dense-mode. `extra`: more
    (flag, chosen name, registry) levels. Here, beside `resolve_dense_mode`, because the dense-mode
    level needs the resolved mode.
    """
    family, _ = parse_backbone(config.backbone)
    levels = [("--method", config.method, METHODS), ("--backbone", family, BACKBONES), *extra]
    if "dense_mode" in _uses(BACKBONES.entry(family).config):
        levels.append(("--dense-mode", resolve_dense_mode(config), dense_modes()))
        resolve_mode_options(config)  # --mode-option values the mode does not have, or bad ones: ConfigError
    for name in _given(config):
        for level_flag, chosen, registry in levels:
            if name not in _claimed(registry) or name in _uses(registry.entry(chosen).config):
                continue
            uses = sorted(_uses(registry.entry(chosen).config))
            users = [n for n in registry.names() if name in _uses(registry.entry(n).config)]
            shown = config.backbone if level_flag == "--backbone" else chosen
            raise ConfigError(
                f"{flag(name)} does not apply to {level_flag} {shown} "
                f"(it uses: {', '.join(flag(u) for u in uses) or 'none of the optional settings'}); "
                f"{flag(name)} is for {', '.join(users)} {registry.kind}s only"
            )
