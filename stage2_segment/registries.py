"""The stage-two registries: the names users type for methods, backbones and assembly rules.

Adding one is one module that registers a builder with the model of the `MethodConfig` fields it
reads (`method_options` / `backbone_options` make that model from the fields' names):

    @METHODS.register("my-method", config=method_options("short_side", templates="single"))
    def build_my_method(config: MethodConfig, inputs: MethodInputs) -> SegmentationMethod: ...

    @BACKBONES.register("mine", config=backbone_options("pretrained", takes_arg=True))
    def build_mine(config: MethodConfig, arg: str | None) -> Backbone: ...   # --backbone mine:<arg>

    @ASSEMBLY_RULES.register("median")
    class Median(AssemblyRule): ...                                         # llmseg.stage2.assembly

The field lists are what makes "an option the chosen method does not use is an error"
(`check_applicable`) and the CLI help work without a table per option. Built-ins are imported on
first use, so this module (and `llmseg --help`) stays free of torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, create_model

from llmseg.errors import ConfigError
from llmseg.registry import Registry

if TYPE_CHECKING:
    from .backbones.base import Backbone
    from .interface import MethodConfig
    from .methods.common import NameTable

__all__ = [
    "ASSEMBLY_RULES",
    "BACKBONES",
    "METHODS",
    "BackboneOptions",
    "MethodInputs",
    "MethodOptions",
    "backbone_options",
    "check_applicable",
    "dense_modes",
    "flag",
    "method_options",
    "parse_backbone",
]

METHODS: Registry[Any] = Registry(
    "method",
    builtins={"dense": "llmseg.stage2.methods.builtin", "llm-supervision": "llmseg.stage2.methods.builtin"},
    group="llmseg.methods",
)
BACKBONES: Registry[Any] = Registry(
    "backbone",
    builtins={"openclip": "llmseg.stage2.backbones.builtin", "simseg": "llmseg.stage2.backbones.builtin",
              "demo-clip": "llmseg.stage2.demo.train"},
    group="llmseg.backbones",
)
ASSEMBLY_RULES: Registry[Any] = Registry(
    "assembly rule", builtins={name: "llmseg.stage2.assembly" for name in ("none", "max", "mean", "softmax", "chils")},
    group="llmseg.assembly_rules",
)


def dense_modes() -> Registry[Any]:
    """The dense-mode registry (backbones/dense_modes.py; it imports torch, so only when needed)."""
    from .backbones.dense_modes import DENSE_MODES

    return DENSE_MODES


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
    assembly: str  # the resolved rule name (registries.ASSEMBLY_RULES)
    background: bool  # class 0 is background (thresholds act on it)
    describe_extra: dict[str, Any] = field(default_factory=dict)  # for the method's describe()

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _fields_model(name: str, base: type[BaseModel], fields: Iterable[str]) -> type[BaseModel]:
    from .interface import MethodConfig

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
    from .interface import MethodConfig

    info = MethodConfig.model_fields.get(field)
    mapping = info is not None and "dict[" in str(info.annotation)
    return "--" + field.replace("_", "-").removesuffix("s" if mapping else "")


def parse_backbone(spec: str) -> tuple[str, str | None]:
    """'openclip:ViT-B-16' -> ('openclip', 'ViT-B-16'); 'simseg' -> ('simseg', None). Checks the family exists."""
    from .backbones.base import BackboneError

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
    (flag, chosen name, registry) levels.
    """
    family, _ = parse_backbone(config.backbone)
    levels = [("--method", config.method, METHODS), ("--backbone", family, BACKBONES), *extra]
    if "dense_mode" in _uses(BACKBONES.entry(family).config):
        from .methods import resolve_dense_mode, resolve_mode_options

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
