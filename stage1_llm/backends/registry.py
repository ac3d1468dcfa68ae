"""The LLM backend registry: the name `--backend` takes -> a builder and the pydantic model of its settings.

A builder is called as `builder(model, **settings)` and returns an object implementing
`base.Backend`. Adding a backend is one module: write the class and its settings model, then
`@BACKENDS.register("name", config=Settings)` over the class; code outside the package (a plugin,
a test) registers the same way and `generate_label_set(backend="name")` / `llmseg subclasses
generate --backend name` find it. The built-in modules are imported only when first asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from llmseg.errors import ConfigError
from llmseg.registry import Registry

from .base import Backend

BACKENDS: Registry[Callable[..., Backend]] = Registry(
    "backend",
    builtins={
        "openai": "llmseg.stage1.backends.openai_compat:OpenAIBackend",
        "hf": "llmseg.stage1.backends.hf_local:HFBackend",
    },
    group="llmseg.backends",
)


def backend_settings(backend: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options this backend's settings model declares, validated; None means 'the default'.

    Options another backend uses (the generation loop passes `device` to every backend) are left
    out, so one call site serves every backend.
    """
    entry = BACKENDS.entry(backend)
    model: type[BaseModel] | None = entry.config
    if model is None:
        return {}
    given = {key: value for key, value in options.items() if key in model.model_fields and value is not None}
    try:
        return model.model_validate(given).model_dump()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(settings)'}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"backend '{backend}': {problems}") from exc


def make_backend(backend: str, model: str, **options: Any) -> Backend:
    """Build a backend by name; heavy imports happen in the backend's constructor, not at import time."""
    settings = backend_settings(backend, options)
    return BACKENDS.get(backend)(model, **settings)
