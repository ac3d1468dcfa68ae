"""Backbones behind one interface (base.Backbone), found by name in `registries.BACKBONES`.

`--backbone family[:arg]`: `openclip:<arch>` (dense modes) and `simseg` are built in (builtin.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Backbone, BackboneError

if TYPE_CHECKING:
    from ..interface import MethodConfig

__all__ = ["Backbone", "BackboneError", "load_backbone"]


def load_backbone(config: MethodConfig) -> Backbone:
    """The backbone `config.backbone` names, built by its registered builder from the config."""
    from ..registries import BACKBONES, check_applicable, parse_backbone

    family, arg = parse_backbone(config.backbone)
    check_applicable(config)
    from ..preflight import check_method_inputs

    check_method_inputs(config)  # weights asked for and reachable, files present: before anything is built
    backbone = BACKBONES.build(family, config, arg)
    if not isinstance(backbone, Backbone):
        raise BackboneError(f"backbone '{family}': its builder returned {type(backbone).__name__}, not a Backbone")
    return backbone
