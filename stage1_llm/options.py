"""Typer options made from a pydantic settings model's fields: each option is declared once, on the field.

`with_settings_options(Model)` adds one option per field of `Model` to a typer command: the field's
type (`None` dropped, a union's first member), default and description become the option's type,
default and help, a lower bound (`ge`) its `min`. A field's `json_schema_extra={"cli": {...}}` may
add what only the command line needs: `decls` (the flag names, e.g. `("--refresh",)`), `hidden`,
`min: None` (no range on the command line: the API's check names the field instead), or
`"cli": False` to leave the field off the command line (a Python object, say). The command
receives the fields as keyword arguments beside its own parameters.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar, Union, get_args, get_origin

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

F = TypeVar("F", bound=Callable[..., Any])


def cli_settings(field: FieldInfo) -> dict[str, Any] | None:
    """The field's command-line extras (`json_schema_extra["cli"]`): {} by default, None when it has no option."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    cli = extra.get("cli", {})
    return None if cli is False else dict(cli) if isinstance(cli, dict) else {}


def option_type(annotation: Any) -> Any:
    """The type a typer option can parse: `X | None` stays optional, `str | Path | Template` becomes `str`."""
    if get_origin(annotation) not in (Union, types.UnionType):
        return annotation
    members = [a for a in get_args(annotation) if a is not type(None)]
    first = members[0]
    return first | None if type(None) in get_args(annotation) else first


def lower_bound(field: FieldInfo) -> Any:
    """The field's `ge` bound, or None (pydantic keeps it as a metadata object with a `ge` attribute)."""
    return next((m.ge for m in field.metadata if getattr(m, "ge", None) is not None), None)


def settings_parameters(model: type[BaseModel]) -> list[inspect.Parameter]:
    """One keyword-only parameter per command-line field of `model`, annotated with its typer option."""
    params = []
    for name, field in model.model_fields.items():
        cli = cli_settings(field)
        if cli is None:
            continue
        bound = cli["min"] if "min" in cli else lower_bound(field)
        option = typer.Option(*cli.get("decls", ()), help=field.description, min=bound, hidden=cli.get("hidden", False))
        annotation = Annotated[option_type(field.annotation), option]  # type: ignore[valid-type]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=annotation))
    return params


def with_settings_options(model: type[BaseModel], *, order: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorate a typer command so that it also takes every command-line field of `model` as an option.

    The command's own parameters (minus its `**settings`) and the fields are listed in `order`
    (names not in it come after, in their own order), which is the order `--help` shows them.
    Typer reads the parameters from `__signature__` and their types from `__annotations__`.
    """

    def decorate(command: F) -> F:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]
        params = [p.replace(kind=p.KEYWORD_ONLY) for p in own] + settings_parameters(model)
        names = [p.name for p in params]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise TypeError(f"{command.__name__}: parameters also fields of {model.__name__}: {', '.join(duplicates)}")
        rank = {name: index for index, name in enumerate(order)}
        params.sort(key=lambda p: rank.get(p.name, len(rank)))
        command.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
        command.__annotations__ = {**{p.name: p.annotation for p in params}, "return": None}
        return command

    return decorate
