"""Per-paper, per-dataset settings of the dense protocol, as data files (docs/methods.md).

A preset is a JSON file: `default` holds the paper's general numbers, `datasets[ds]` the overrides
for one benchmark. The bundled ones live in `preset_files/<name>.json`; `--preset PATH` takes a
user's file of the same shape (for example one written by a tuning run). `crop = 0` means the
whole resized image in one pass (NACLIP on VOC). Besides the dense numbers a preset may set
`assembly`, `k`, `top_cls_num`, `templates` and `crf` (methods.PRESET_CONFIG_FIELDS; what a
tuning run chooses), and its `method` must be the configured one. `prob_thd` / `area_thd` only act on datasets
whose class 0 is background.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmseg.errors import ConfigError, LlmsegError
from llmseg.io import RepeatedKeyError, refuse_repeated_keys

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
    from pydantic import TypeAdapter

    from ..preprocess import NormalizeRule, ResizeRule

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
    from ..interface import MethodConfig

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
