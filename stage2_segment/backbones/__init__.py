"""Backbones behind one interface (base.Backbone), found by name in `registry_tables.BACKBONES`.

`--backbone family[:arg]`: `openclip:<arch>` (dense modes) and `simseg` are built in (builtin.py).
`load_backbone` (config -> a built backbone) is the build layer's: `llmseg.stage2.methods.load_backbone`.
"""

from __future__ import annotations

from .base import Backbone, BackboneError

__all__ = ["Backbone", "BackboneError"]
