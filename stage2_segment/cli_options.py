"""The `MethodConfig` fields as typer options for `evaluate` and `segment`, made from the model itself.

Each option's help is its field's description (interface.MethodConfig), followed by the names the
registries offer (methods, backbones, assembly rules, bundled presets) and by which method or
backbone reads it, so a new field or a new registered name shows up here without an edit.
Every option defaults to None, meaning "not given": `method_fields` then leaves the field to the
preset's or the method's default, so the CLI and the Python API resolve defaults in one place.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

import typer

from .interface import MethodConfig

METHOD_PANEL = "Method"
PROTOCOL_PANEL = "Dense protocol and refinement"
# Where each option is listed in --help (presentation only); unlisted fields go to METHOD_PANEL.
PANELS: dict[str, str | None] = {
    **dict.fromkeys(
        ("short_side", "crop", "stride", "logit_scale", "prob_thd", "area_thd", "pamr", "crf", "crf_iterations"),
        PROTOCOL_PANEL,
    ),
    **dict.fromkeys(("device", "precision", "text_cache_dir"), None),
}


def _choices(field: str) -> str:
    """' Registered: ...' for the fields whose values are registry names."""
    from .methods.presets import bundled_presets
    from .registries import ASSEMBLY_RULES, BACKBONES, METHODS

    if field == "method":
        return " Registered: " + ", ".join(METHODS.names()) + "."
    if field == "assembly":
        return " Registered: " + ", ".join(ASSEMBLY_RULES.names()) + "."
    if field == "preset":
        return " Bundled: " + ", ".join(bundled_presets()) + "."
    if field == "backbone":
        spelled = []
        for name in BACKBONES.names():
            config: Any = BACKBONES.entry(name).config  # a BackboneOptions subclass (arg_name, takes_arg) or None
            spelled.append(f"{name}:<{config.arg_name}>" if getattr(config, "takes_arg", False) else name)
        return " Registered: " + ", ".join(spelled) + "."
    return ""


def _users(field: str) -> str:
    """' (read by: dense)': the methods and backbones that read the field; '' for the common ones."""
    from .registries import BACKBONES, METHODS

    users = [
        name
        for registry in (METHODS, BACKBONES)
        for name in registry.names()
        if field in getattr(registry.entry(name).config, "model_fields", {})
    ]
    return f" (read by: {', '.join(users)})" if users else ""


def help_text(field: str) -> str:
    """The --help line of a MethodConfig field."""
    info = MethodConfig.model_fields[field]
    return (info.description or field) + _choices(field) + _users(field)


def flags(field: str) -> tuple[str, ...]:
    name = field.replace("_", "-")
    return (f"--{name}/--no-{name}",) if _base_type(field) is bool else (f"--{name}",)


def _base_type(field: str) -> type:
    """The field's type without None; a Literal of strings is a plain str on the command line."""
    annotation = MethodConfig.model_fields[field].annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is Literal:
        return str
    return annotation  # type: ignore[return-value]


def option_type(field: str) -> Any:
    """`Annotated[T | None, typer.Option(...)]` for one MethodConfig field (default None = not given)."""
    base = _base_type(field)
    option = typer.Option(*flags(field), help=help_text(field), rich_help_panel=PANELS.get(field, METHOD_PANEL))
    return Annotated[base | None, option]


OPTION_TYPES: dict[str, Any] = {field: option_type(field) for field in MethodConfig.model_fields}

# The names cli_engine / cli_segment annotate their parameters with.
Method = OPTION_TYPES["method"]
Backbone = OPTION_TYPES["backbone"]
Pretrained = OPTION_TYPES["pretrained"]
RandomWeights = OPTION_TYPES["random_weights"]
Checkpoint = OPTION_TYPES["checkpoint"]
TextTokenizer = OPTION_TYPES["text_tokenizer"]
DenseMode = OPTION_TYPES["dense_mode"]
NaclipStd = OPTION_TYPES["naclip_std"]
Preset = OPTION_TYPES["preset"]
LabelSetPath = OPTION_TYPES["label_set"]
Assembly = OPTION_TYPES["assembly"]
K = OPTION_TYPES["k"]
IncludeClassName = OPTION_TYPES["include_class_name"]
Templates = OPTION_TYPES["templates"]
TopClsNum = OPTION_TYPES["top_cls_num"]
Candidates = OPTION_TYPES["candidates"]
ShortSide = OPTION_TYPES["short_side"]
Crop = OPTION_TYPES["crop"]
Stride = OPTION_TYPES["stride"]
LogitScale = OPTION_TYPES["logit_scale"]
ProbThd = OPTION_TYPES["prob_thd"]
AreaThd = OPTION_TYPES["area_thd"]
Pamr = OPTION_TYPES["pamr"]
Crf = OPTION_TYPES["crf"]
CrfIterations = OPTION_TYPES["crf_iterations"]
Device = OPTION_TYPES["device"]
Precision = OPTION_TYPES["precision"]
TextCacheDir = OPTION_TYPES["text_cache_dir"]


def method_fields(**given: Any) -> dict[str, Any]:
    """The options the user gave (not None), as MethodConfig keyword arguments."""
    return {name: value for name, value in given.items() if value is not None}
