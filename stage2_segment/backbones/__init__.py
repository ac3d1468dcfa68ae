"""Backbones behind one interface (base.Backbone): `openclip:<arch>` with dense modes, and `simseg`."""

from .base import Backbone, BackboneError

__all__ = ["Backbone", "BackboneError"]
