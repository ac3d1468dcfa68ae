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
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from llmseg.errors import ConfigError

PRESET_DIR = Path(__file__).with_name("preset_files")

# The settings a config may override (None in MethodConfig = keep the preset's value).
DENSE_KEYS = ("dense_mode", "short_side", "crop", "stride", "logit_scale", "prob_thd", "area_thd", "pamr")

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


@lru_cache(maxsize=64)
def _read(path: str) -> PresetFile:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return PresetFile.model_validate(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"preset file {path}: cannot read it: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"preset file {path}: {problems}") from None


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
