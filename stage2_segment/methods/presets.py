"""Per-paper, per-dataset settings of the dense protocol, as data (protocols.md section 2).

`PRESETS[name]["default"]` holds the paper's general numbers, `PRESETS[name]["datasets"][ds]` the
overrides for one benchmark. `crop = 0` means the whole resized image in one pass (NACLIP on VOC).
`prob_thd` / `area_thd` only act on datasets whose class 0 is background.
"""

from __future__ import annotations

from typing import Any

DENSE_KEYS = ("dense_mode", "short_side", "crop", "stride", "logit_scale", "prob_thd", "area_thd", "pamr")

PRESETS: dict[str, dict[str, Any]] = {
    "sclip": {
        "paper": "SCLIP (Wang et al., ECCV 2024)",
        "default": dict(
            dense_mode="sclip", short_side=336, crop=224, stride=112, logit_scale=40.0, prob_thd=0.1, area_thd=None, pamr=False
        ),
        "datasets": {
            "pascal_voc": dict(logit_scale=65.0, prob_thd=0.1, area_thd=0.1),
            "pascal_context": dict(logit_scale=50.0, prob_thd=0.1),
            "coco_object": dict(logit_scale=50.0, prob_thd=0.1),
            "coco_stuff": dict(short_side=448),
            "cityscapes": dict(short_side=560),
        },
    },
    "clearclip": {
        "paper": "ClearCLIP (Lan et al., ECCV 2024)",
        "default": dict(
            dense_mode="clearclip", short_side=448, crop=448, stride=224, logit_scale=50.0, prob_thd=None, area_thd=None, pamr=False
        ),
        "datasets": {
            "pascal_voc": dict(prob_thd=0.5),
            "pascal_context": dict(prob_thd=0.15),
            "coco_object": dict(prob_thd=0.4),
            "cityscapes": dict(short_side=560),
        },
    },
    "naclip": {
        "paper": "NACLIP (Hajimiri et al., WACV 2025)",
        "default": dict(
            dense_mode="naclip", short_side=336, crop=224, stride=112, logit_scale=40.0, prob_thd=0.1, area_thd=None, pamr=True
        ),
        "datasets": {
            "pascal_voc": dict(crop=0),
            "pascal_voc20": dict(crop=0),
            "coco_stuff": dict(short_side=448),
            "cityscapes": dict(short_side=560),
        },
    },
}

DEFAULT_PRESET = "sclip"

# llm-supervision: SimSeg's hard-coded top_cls_num per dataset (seed-method.md section 3), clamped to C.
TOP_CLS_NUM: dict[str, int] = {"pascal_voc": 10, "pascal_context": 30, "coco_object": 10}
TOP_CLS_NUM_DEFAULT = 10

# Template set and assembly defaults per method.
METHOD_TEMPLATES = {"dense": "openai80", "llm-supervision": "seed13"}


def preset_settings(preset: str, dataset: str | None) -> dict[str, Any]:
    """The preset's numbers for a dataset (its defaults where the paper gives no dataset-specific value)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}': use one of {', '.join(PRESETS)}")
    table = PRESETS[preset]
    settings = dict(table["default"])
    if dataset is not None:
        settings.update(table["datasets"].get(dataset, {}))
    return settings
