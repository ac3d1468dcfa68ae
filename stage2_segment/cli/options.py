"""The `MethodConfig` fields as typer options (evaluate, segment, compare, tune), made from the model itself.

Each option's help is its field's description (config.MethodConfig), followed by the names the
registries offer (methods, backbones, assembly rules, bundled presets) and by which method or
backbone reads it, so a new field or a new registered name shows up here without an edit.
Every option defaults to None, meaning "not given": `method_fields` then leaves the field to the
preset's or the method's default, so the CLI and the Python API resolve defaults in one place.
A command takes them all through `@with_method_options(...)`, as one dict `method_options`.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import typer

from llmseg.errors import ConfigError
from llmseg.stage2.config import MethodConfig
from llmseg.stage2.methods.presets import bundled_presets
from llmseg.stage2.registry_tables import ASSEMBLY_RULES, BACKBONES, METHODS

F = TypeVar("F", bound=Callable[..., Any])

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
    users = [
        name
        for registry in (METHODS, BACKBONES)
        for name in registry.names()
        if field in getattr(registry.entry(name).config, "model_fields", {})
    ]
    return f" (read by: {', '.join(users)})" if users else ""


_DEFAULT_NOTE = re.compile(r"\s*\(default[ :][^()]*\)")


def help_text(field: str, default: Any = None, note: str = "") -> str:
    """The --help line of a MethodConfig field, plus a command's own `note`.

    With a command-specific `default`, the description's "(default ...)" (MethodConfig's) is dropped:
    typer shows the command's own as [default: ...].
    """
    description = MethodConfig.model_fields[field].description or field
    if default is not None:
        description = _DEFAULT_NOTE.sub("", description)
    return description + _choices(field) + _users(field) + (f" {note}" if note else "")


def flags(field: str) -> tuple[str, ...]:
    """--name (--name/--no-name for a bool; a dict field is the repeatable --singular-name NAME=VALUE)."""
    name = field.replace("_", "-")
    if _is_dict(field):
        return (f"--{name.removesuffix('s')}",)
    return (f"--{name}/--no-{name}",) if _base_type(field) is bool else (f"--{name}",)


def _is_dict(field: str) -> bool:
    """Whether the field is a mapping (set on the command line as repeated NAME=VALUE)."""
    return typing.get_origin(_base_type(field)) is dict


def _base_type(field: str) -> type:
    """The field's type without None; a Literal of strings is a plain str on the command line."""
    annotation = MethodConfig.model_fields[field].annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is Literal:
        return str
    return annotation  # type: ignore[return-value]


def option_type(field: str, default: Any = None, note: str = "") -> Any:
    """`Annotated[T | None, typer.Option(...)]` for one MethodConfig field (default None = not given)."""
    base: Any = list[str] if _is_dict(field) else _base_type(field)
    option = typer.Option(
        *flags(field), help=help_text(field, default, note), rich_help_panel=PANELS.get(field, METHOD_PANEL)
    )
    return Annotated[base | None, option]


OPTION_TYPES: dict[str, Any] = {field: option_type(field) for field in MethodConfig.model_fields}


def method_fields(**given: Any) -> dict[str, Any]:
    """The options the user gave (not None), as MethodConfig keyword arguments."""
    return {name: value for name, value in given.items() if value is not None}


def with_method_options(
    *,
    only: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
    notes: dict[str, str] | None = None,
) -> Callable[[F], F]:
    """Decorator: one typer option per MethodConfig field (`only` these, minus `exclude`), given to the command as one dict.

    The command declares a keyword parameter `method_options: dict[str, Any]`; the wrapper's signature
    replaces it by the generated options (after the command's own), so typer lists them and a new
    MethodConfig field needs no CLI edit. The dict holds only the options the user gave (`method_fields`);
    `defaults` gives a field a shown default other than None (e.g. device='cpu'); `notes` adds a
    command's own words to a field's help (what a name means in that command).
    """
    defaults, notes = defaults or {}, notes or {}

    def wrap(command: F) -> F:
        hints = typing.get_type_hints(command, include_extras=True)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in inspect.signature(command).parameters.values()
            if p.name != "method_options"
        ]
        fields = [f for f in (only or MethodConfig.model_fields) if f not in exclude]
        added = [
            inspect.Parameter(f, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(f), annotation=_annotation(f, defaults, notes))
            for f in fields
        ]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {f: kwargs.pop(f) for f in fields if f in kwargs}
            return command(*args, method_options=_parse_dicts(method_fields(**given)), **kwargs)

        parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added
        wrapper.__signature__ = inspect.Signature(parameters, return_annotation=None)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": None}
        return wrapper  # type: ignore[return-value]

    return wrap


def _annotation(field: str, defaults: dict[str, Any], notes: dict[str, str]) -> Any:
    """The field's shared option, or one made for a command that changes its default or adds a note."""
    if field in defaults or field in notes:
        return option_type(field, defaults.get(field), notes.get(field, ""))
    return OPTION_TYPES[field]


def _parse_dicts(given: dict[str, Any]) -> dict[str, Any]:
    """The repeatable NAME=VALUE options of dict fields (e.g. --mode-option std=2) as dicts; the rest as given."""
    out = dict(given)
    for field, value in given.items():
        if _is_dict(field):
            out[field] = dict(_name_value(field, item) for item in value) if value else None
    return {k: v for k, v in out.items() if v is not None}


def _name_value(field: str, item: str) -> tuple[str, str]:
    """'name=value' -> ('name', 'value'); ConfigError naming the option when there is no '='."""
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
        raise ConfigError(f"{flags(field)[0]} expects NAME=VALUE, got '{item}'")
    return name.strip().replace("-", "_"), value.strip()
