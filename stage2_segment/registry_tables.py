"""Stage two's registry tables: the names users type for methods, backbones, dense modes and assembly rules.

(The `Registry` class itself is `llmseg.registry`, shared/registry.py; this module holds stage two's instances.)

The bottom layer of stage two: registry objects and nothing else, so that every other module may import
them. What an entry's settings are is options.py's (`method_options` / `backbone_options`), which
settings apply is `methods.presets.check_applicable`'s. Built-ins are imported on first use (by module
name, not by import), so this module (and `llmseg --help`) stays free of torch:

    @METHODS.register("my-method", config=method_options("short_side", templates="single"))
    def build_my_method(config: MethodConfig, inputs: MethodInputs) -> SegmentationMethod: ...

    @ASSEMBLY_RULES.register("median")
    class Median(AssemblyRule): ...                                         # llmseg.stage2.ops.assembly
"""

from __future__ import annotations

from typing import Any

from llmseg.registry import Registry

__all__ = [
    "ASSEMBLY_RULES",
    "BACKBONES",
    "DENSE_MODES",
    "METHODS",
    "dense_modes",
]

METHODS: Registry[Any] = Registry(
    "method",
    builtins={"dense": "llmseg.stage2.methods.builtin", "llm-supervision": "llmseg.stage2.methods.builtin"},
    group="llmseg.methods",
)
BACKBONES: Registry[Any] = Registry(
    "backbone",
    # the demo CLIP ("demo-clip") is not a core backbone: the package declares it as an entry point of this
    # group (pyproject.toml), the way an installed plug-in does
    builtins={"openclip": "llmseg.stage2.backbones.builtin", "simseg": "llmseg.stage2.backbones.builtin"},
    group="llmseg.backbones",
)
ASSEMBLY_RULES: Registry[Any] = Registry(
    "assembly rule", builtins={name: "llmseg.stage2.ops.assembly" for name in ("none", "max", "mean", "softmax", "chils")},
    group="llmseg.assembly_rules",
)


# The built-in modes are rules over a ViT block (backbones/dense_modes.py, which imports torch: loaded on first use).
DENSE_MODES: Registry[Any] = Registry(
    "dense mode",
    builtins={name: "llmseg.stage2.backbones.dense_modes" for name in ("vanilla", "maskclip", "sclip", "clearclip", "naclip")},
    group="llmseg.dense_modes",
)


def dense_modes() -> Registry[Any]:
    """The dense-mode registry (kept as a function: callers written before DENSE_MODES lived here use it)."""
    return DENSE_MODES
