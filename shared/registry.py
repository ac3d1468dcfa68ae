"""Name -> builder registries: how methods, backbones, dense modes, assembly rules, LLM backends
and dataset layouts are found by the strings users type.

A registry entry is a builder (a class or a function) plus, optionally, the pydantic model of its
settings. Adding an option is one module that calls `REGISTRY.register("name")(builder)`; code
outside the package (a user's plugin, a test) registers the same way. Built-in entries are
imported lazily from `builtins` (name -> "module:attribute"), so `llmseg --help` stays fast.

An installed distribution adds entries without being imported by anyone: it declares them as
entry points in the registry's `group` (e.g. `llmseg.methods`), `name = "module:attribute"`, and
they are imported, like the built-ins, when first looked up. A built-in name always wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import import_module, metadata
from typing import Any, Generic, TypeVar

from .errors import ConfigError, PluginImportError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    builder: T
    config: type | None = None  # the pydantic model of the entry's settings, if it has any
    help: str = ""


class Registry(Generic[T]):
    """A named table of builders of one kind (e.g. `kind="dense mode"`)."""

    def __init__(self, kind: str, builtins: dict[str, str] | None = None, *, group: str | None = None) -> None:
        self.kind = kind
        self.group = group  # the entry-point group installed plug-ins declare their entries in
        self._entries: dict[str, Entry[T]] = {}
        self._lazy = dict(builtins or {})  # name -> "module:attr", imported on first use
        self._plugins_found = group is None

    def _find_plugins(self) -> None:
        """Add the entry points of installed distributions to the lazy table (once, on first use)."""
        if self._plugins_found:
            return
        self._plugins_found = True
        for point in metadata.entry_points(group=self.group or ""):
            if point.name not in self._entries and point.name not in self._lazy:
                self._lazy[point.name] = point.value

    def register(self, name: str, *, config: type | None = None, help: str = "", replace: bool = False) -> Callable[[T], T]:
        """Decorator: `@REG.register("sclip")` over a class or function."""

        def add(builder: T) -> T:
            if not replace and name in self._entries and self._entries[name].builder is not builder:
                raise ConfigError(f"{self.kind} '{name}' is already registered")
            self._entries[name] = Entry(name, builder, config, help or (builder.__doc__ or "").strip().split("\n")[0])
            self._lazy.pop(name, None)
            return builder

        return add

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)
        self._lazy.pop(name, None)

    def _load(self, name: str) -> None:
        """Import a built-in entry's module. The entry stays listed until that succeeds, so a failing
        import is reported on every lookup (naming the module and its error), never as an unknown name."""
        self._find_plugins()
        target = self._lazy.get(name)
        if target is None or name in self._entries:
            return
        module, _, attr = target.partition(":")
        try:
            mod = import_module(module)  # registering happens on import; attr is a fallback
        except Exception as exc:  # any failure of a plug-in's import is reported, with its cause
            raise PluginImportError(
                f"{self.kind} '{name}' cannot be loaded: importing {module} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if name not in self._entries:
            if not attr or not hasattr(mod, attr):
                raise PluginImportError(
                    f"{self.kind} '{name}': module {module} was imported but registers no '{name}'"
                    + (f" and has no attribute '{attr}'" if attr else "")
                )
            self.register(name)(getattr(mod, attr))
        self._lazy.pop(name, None)

    def entry(self, name: str) -> Entry[T]:
        self._load(name)
        if name not in self._entries:
            raise ConfigError(f"unknown {self.kind} '{name}': use one of {', '.join(self.names()) or '(none registered)'}")
        return self._entries[name]

    def get(self, name: str) -> T:
        return self.entry(name).builder

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        builder: Any = self.get(name)  # a class or a function here (T is unbound: some registries hold data)
        return builder(*args, **kwargs)

    def names(self) -> list[str]:
        self._find_plugins()
        return sorted({*self._entries, *self._lazy})

    def __contains__(self, name: object) -> bool:
        self._find_plugins()
        return isinstance(name, str) and (name in self._entries or name in self._lazy)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())
