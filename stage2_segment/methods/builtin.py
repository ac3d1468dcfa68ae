"""The built-in methods: `dense` (the SCLIP/ClearCLIP/NACLIP protocol) and `llm-supervision` (the seed).

Importing this module registers them; each entry lists the MethodConfig fields the method reads
(what `check_applicable` allows) and its defaults. The method classes (and torch) load on build.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmseg.datasets import dataset_top_cls_num
from llmseg.stage2.registry_tables import METHODS

from ..options import MethodInputs, method_options
from .presets import DEFAULT_PRESET, resolve_dense_settings

if TYPE_CHECKING:
    from llmseg.stage2.protocols import SegmentationMethod

    from ..config import MethodConfig

DENSE_FIELDS = ("preset", "short_side", "crop", "stride", "logit_scale", "prob_thd", "area_thd", "pamr", "crf", "crf_iterations")


@METHODS.register(
    "dense",
    config=method_options(*DENSE_FIELDS, templates="openai80", assembly="max", preset=DEFAULT_PRESET, name="DenseOptions"),
    help="the training-free dense CLIP protocol (SCLIP / ClearCLIP / NACLIP presets): sliding window, thresholds, PAMR",
)
def build_dense(config: MethodConfig, inputs: MethodInputs) -> SegmentationMethod:
    # lazy import: start-up time (dense.py imports torch; this module is read for --help)
    from .dense import DenseMethod

    settings = resolve_dense_settings(config, inputs.dataset)
    if not inputs.backbone.has_dense_modes:
        settings["dense_mode"] = None  # dense modes rewrite an open_clip block; other backbones are used as they are
    return DenseMethod(inputs, settings=settings, crf=bool(config.crf), crf_iterations=config.crf_iterations)


@METHODS.register(
    "llm-supervision",
    config=method_options("preset", "top_cls_num", "candidates", "crf", templates="seed13", assembly="softmax", name="LLMSupervisionOptions"),
    help="the seed (CVPRW'24): per-class subclass maps, candidate classes, thresholds, binary CRF",
)
def build_llm_supervision(config: MethodConfig, inputs: MethodInputs) -> SegmentationMethod:
    # lazy import: start-up time (llm_supervision.py imports torch; this module is read for --help)
    from .llm_supervision import LLMSupervisionMethod

    top = config.top_cls_num if config.top_cls_num is not None else dataset_top_cls_num(inputs.dataset)
    return LLMSupervisionMethod(inputs, top_cls_num=top, candidates=config.candidates, crf=config.crf is not False)
