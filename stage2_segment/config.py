"""`MethodConfig`: everything that selects and parameterises a method, in one pydantic model.

It sits just above the registries (it checks `method`, `assembly` and `dense_mode` against them) and
below everything that reads a setting: the option models (options.py), the presets and the
`resolve_*` functions (methods/presets.py), the backbones, the methods and the CLI, which all import it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmseg.stage2.registry_tables import ASSEMBLY_RULES, METHODS, dense_modes

__all__ = ["MAX_SIDE", "MethodConfig"]


MAX_SIDE = 16_384  # pixels: the largest resize / crop / stride a setting may ask for


class MethodConfig(BaseModel):
    """Everything that selects and parameterises a method. None = the preset's or method's default.

    Each field's description is its help text in the CLI too (llmseg.stage2.cli.options). `method`, `assembly`
    and `dense_mode` are checked against their registries (llmseg.stage2.registry_tables) here,
    `backbone` (family[:arg]) when it is loaded; a field the chosen method or backbone does not
    read is refused when the method is built (check_applicable). Every number has bounds and
    NaN / infinity are refused, here and so also in preset files and `tune --grid` values.
    """

    model_config = ConfigDict(extra="forbid")

    method: str = Field("dense", description="The method, a registered name (default dense).")
    backbone: str = Field("openclip:ViT-B-16", description="The backbone, family[:arg] of a registered family (default openclip:ViT-B-16).")
    pretrained: str | None = Field(None, description="open_clip weights tag or local weights file.")
    random_weights: bool = Field(
        False, description="Build the backbone with seeded RANDOM weights (tests and speed runs only; recorded in metrics.json)."
    )
    checkpoint: str | None = Field(None, description="SimSeg checkpoint (.pth).")
    text_tokenizer: str | None = Field(
        None, description="SimSeg text tokenizer: HF id or local folder (default bert-base-uncased)."
    )
    dense_mode: str | None = Field(
        None, description="How the last block is rewritten: vanilla | maskclip | sclip | clearclip | naclip or a registered mode (default: the preset's, vanilla without one)."
    )
    naclip_std: float | None = Field(
        None, gt=0, le=1000, allow_inf_nan=False, description="NACLIP's Gaussian neighbourhood std, in patches (default: the preset's, else 5.0)."
    )
    mode_options: dict[str, float | int | str | bool] | None = Field(
        None, description="The dense mode's own settings as NAME=VALUE (repeat), checked against the mode's settings, e.g. std=3 for naclip."
    )
    preset: str | None = Field(
        None, description="A bundled preset or a preset JSON file: every number of that paper for the dataset (default sclip)."
    )
    label_set: str | None = Field(None, description="Label-set JSON (class -> list of subclasses); none = class names only.")
    k: int | None = Field(
        None, ge=1, le=100_000, description="Use each class's first K subclasses of the label set (default: all of them)."
    )
    assembly: str | None = Field(
        None, description="Subclass assembly rule, a registered name (default: the method's with a label set, else none)."
    )
    include_class_name: bool = Field(False, description="Add each class name to its own subclasses.")
    templates: str | None = Field(None, description="Prompt templates: openai80 | seed13 | single | a file (default per method).")
    # llm-supervision
    top_cls_num: int | None = Field(None, ge=1, le=100_000, description="Classes in the threshold statistics.")
    candidates: int = Field(5, ge=1, le=100_000, description="Candidate classes per image.")
    # dense protocol (None = preset / dataset default)
    short_side: int | None = Field(None, ge=1, le=MAX_SIDE, description="Resize so the short side is this.")
    crop: int | None = Field(None, ge=0, le=MAX_SIDE, description="Sliding-window crop (0 = whole image).")
    stride: int | None = Field(None, ge=0, le=MAX_SIDE, description="Sliding-window stride (0 = the crop).")
    logit_scale: float | None = Field(None, gt=0, le=10_000, allow_inf_nan=False, description="Temperature of the softmax over names.")
    prob_thd: float | None = Field(None, ge=0, le=1, allow_inf_nan=False, description="Background threshold on the top probability.")
    area_thd: float | None = Field(None, ge=0, le=1, allow_inf_nan=False, description="Drop classes under this share of the foreground.")
    pamr: bool | None = Field(None, description="PAMR refinement (default: the preset's).")
    crf: bool | None = Field(
        None, description="Dense CRF (default: the method's: off for dense, the seed's binary CRF on for llm-supervision)."
    )
    crf_iterations: int = Field(10, ge=0, le=1000, description="Dense CRF iterations.")
    # execution
    device: str = Field("cpu", description="cpu, cuda, cuda:1, ... (under torchrun 'cuda' = this rank's GPU).")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="fp32 | bf16 | fp16 (autocast on GPU).")
    text_cache_dir: str | None = Field(None, description="Folder for cached text embeddings; none = no cache.")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        METHODS.entry(value)
        return value

    @field_validator("assembly")
    @classmethod
    def _known_assembly(cls, value: str | None) -> str | None:
        if value is not None:
            ASSEMBLY_RULES.entry(value)
        return value

    @field_validator("dense_mode")
    @classmethod
    def _known_dense_mode(cls, value: str | None) -> str | None:
        if value is not None:
            dense_modes().entry(value)
        return value
