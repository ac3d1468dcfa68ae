"""The option models: which `MethodConfig` fields a method or backbone family reads, and its own defaults.

A registered builder carries one of these models (`method_options` / `backbone_options` make it from
the fields' names), so "an option the chosen method does not use is an error" (`check_applicable`,
methods/presets.py) and the CLI help work without a table per option:

    @METHODS.register("my-method", config=method_options("short_side", templates="single"))
    def build_my_method(config: MethodConfig, inputs: MethodInputs) -> SegmentationMethod: ...

    @BACKBONES.register("mine", config=backbone_options("pretrained", takes_arg=True))
    def build_mine(config: MethodConfig, arg: str | None) -> Backbone: ...   # --backbone mine:<arg>

Also here: `MethodInputs` (what `build_method` hands every method), `flag` (a field's CLI spelling) and
`parse_backbone` (family[:arg]). Torch-free: it imports only the registries and the config below it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, create_model

from llmseg.errors import BackboneError, ConfigError
from llmseg.stage2.registry_tables import BACKBONES

from .config import MethodConfig

if TYPE_CHECKING:
    from .backbones.base import Backbone
    from .methods.common import NameTable

__all__ = [
    "BackboneOptions",
    "MethodInputs",
    "MethodOptions",
    "backbone_options",
    "flag",
    "method_options",
    "parse_backbone",
]


class MethodOptions(BaseModel):
    """The `MethodConfig` fields one method reads, plus the method's own defaults (class variables)."""

    model_config = ConfigDict(extra="forbid")

    default_templates: ClassVar[str] = "openai80"  # when --templates is not given
    default_assembly: ClassVar[str] = "max"  # with a label set and no --assembly ("none" without a label set)
    default_preset: ClassVar[str | None] = None  # the preset whose dense mode applies when --preset is not given


class BackboneOptions(BaseModel):
    """The `MethodConfig` fields one backbone family reads; `takes_arg`: spelled `family:<arg>`."""

    model_config = ConfigDict(extra="forbid")

    takes_arg: ClassVar[bool] = False
    arg_name: ClassVar[str] = "arg"  # what the part after the colon is, for messages and help
    # the family's own check of its inputs (weights, checkpoint, tokenizer) before it is built: (arg, config)
    input_check: ClassVar[Callable[[str | None, MethodConfig], None] | None] = None

    @classmethod
    def check_inputs(cls, arg: str | None, config: MethodConfig) -> None:
        """Run the family's input check (preflight.check_method_inputs); a family without one is built as it is."""
        if cls.input_check is not None:
            cls.input_check(arg, config)


@dataclass
class MethodInputs:
    """What `build_method` prepares for every method before calling the method's builder."""

    backbone: Backbone
    names: NameTable  # the flat name list (label-set subclasses, or the class names) and each one's class
    text: Any  # [N, D] torch tensor: one normalised text vector per name
    class_text: Any  # [C, D]: the class names' vectors (== text without a label set)
    classes: list[str]
    dataset: str | None
    assembly: str  # the resolved rule name (registry_tables.ASSEMBLY_RULES)
    background: bool  # class 0 is background (thresholds act on it)
    describe_extra: dict[str, Any] = field(default_factory=dict)  # for the method's describe()

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _fields_model(name: str, base: type[BaseModel], fields: Iterable[str]) -> type[BaseModel]:
    """A `base` subclass whose fields are these `MethodConfig` fields (ConfigError naming an unknown one)."""
    known = MethodConfig.model_fields
    unknown = [f for f in fields if f not in known]
    if unknown:
        raise ConfigError(f"{name}: {', '.join(unknown)} are not MethodConfig fields (use one of {', '.join(known)})")
    spec = {f: (known[f].annotation, known[f]) for f in fields}
    return create_model(name, __base__=base, **spec)  # type: ignore[call-overload]


def method_options(
    *fields: str,
    templates: str = "openai80",
    assembly: str = "max",
    preset: str | None = None,
    name: str = "MethodOptions",
) -> type[MethodOptions]:
    """A `MethodOptions` model of these `MethodConfig` fields (types and help copied from MethodConfig)."""
    model = _fields_model(name, MethodOptions, fields)
    model.default_templates = templates  # type: ignore[attr-defined]
    model.default_assembly = assembly  # type: ignore[attr-defined]
    model.default_preset = preset  # type: ignore[attr-defined]
    return model  # type: ignore[return-value]


def backbone_options(
    *fields: str,
    takes_arg: bool = False,
    arg_name: str = "arg",
    name: str = "BackboneOptions",
    inputs: Callable[[str | None, MethodConfig], None] | None = None,
) -> type[BackboneOptions]:
    """A `BackboneOptions` model of these `MethodConfig` fields; `inputs`: the family's input check (arg, config)."""
    model = _fields_model(name, BackboneOptions, fields)
    model.takes_arg = takes_arg  # type: ignore[attr-defined]
    model.arg_name = arg_name  # type: ignore[attr-defined]
    model.input_check = staticmethod(inputs) if inputs is not None else None  # type: ignore[attr-defined]
    return model  # type: ignore[return-value]


def flag(field: str) -> str:
    """The CLI spelling of a MethodConfig field (a dict field is the repeatable singular, e.g. --mode-option)."""
    info = MethodConfig.model_fields.get(field)
    mapping = info is not None and "dict[" in str(info.annotation)
    return "--" + field.replace("_", "-").removesuffix("s" if mapping else "")


def parse_backbone(spec: str) -> tuple[str, str | None]:
    """'openclip:ViT-B-16' -> ('openclip', 'ViT-B-16'); 'simseg' -> ('simseg', None). Checks the family exists."""
    family, sep, arg = spec.partition(":")
    try:
        entry = BACKBONES.entry(family)
    except ConfigError as exc:
        raise BackboneError(f"{exc} (spelled family[:arg], e.g. openclip:ViT-B-16)") from None
    takes_arg = bool(getattr(entry.config, "takes_arg", False))
    if takes_arg and not arg:
        raise BackboneError(f"backbone '{spec}': write it as '{family}:<{getattr(entry.config, 'arg_name', 'arg')}>'")
    if not takes_arg and sep:
        raise BackboneError(f"backbone '{spec}': '{family}' takes nothing after a colon; write '{family}'")
    return family, (arg if sep else None)
