"""The built-in backbones: `openclip:<arch>` (open_clip weights, dense modes) and `simseg` (a SimSeg checkpoint).

Importing this module registers them; the model code (and torch) is imported only when one is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmseg.errors import ConfigError
from llmseg.stage2.registry_tables import BACKBONES

from ..methods.presets import resolve_dense_mode, resolve_mode_options, resolve_naclip_std
from ..options import backbone_options
from ..preflight import check_openclip_weights, check_simseg_inputs
from .base import Backbone, BackboneError

if TYPE_CHECKING:
    from ..config import MethodConfig


def _openclip_inputs(arch: str | None, config: MethodConfig) -> None:
    """The weights asked for exist (a file) or can be fetched (a tag): before the model is built."""
    check_openclip_weights(str(arch), config.pretrained, config.random_weights)


def _simseg_inputs(_arg: str | None, config: MethodConfig) -> None:
    """The checkpoint and tokenizer are there, and no --random-weights: before the model is built."""
    if config.random_weights:
        raise ConfigError("--random-weights applies to openclip backbones only (simseg loads its checkpoint)")
    check_simseg_inputs(config.checkpoint, config.text_tokenizer)


@BACKBONES.register(
    "openclip",
    config=backbone_options("pretrained", "random_weights", "dense_mode", "naclip_std", "mode_options", takes_arg=True, arg_name="arch",
                            name="OpenClipOptions", inputs=_openclip_inputs),
    help="openclip:<arch>: an open_clip CLIP (--pretrained tag or weights file) with a dense-mode last block",
)
def build_openclip(config: MethodConfig, arch: str | None) -> Backbone:
    # lazy import: start-up time (openclip.py imports torch and open_clip; this module is read for `llmseg --help`)
    from .openclip import OpenClipBackbone

    return OpenClipBackbone(
        str(arch),
        config.pretrained,
        dense_mode=resolve_dense_mode(config),
        naclip_std=resolve_naclip_std(config),
        mode_options=resolve_mode_options(config),
        device=config.device,
        precision=config.precision,
    )


@BACKBONES.register(
    "simseg",
    config=backbone_options("checkpoint", "text_tokenizer", name="SimSegOptions", inputs=_simseg_inputs),
    help="simseg: a SimSeg checkpoint (--checkpoint, --text-tokenizer), the seed's backbone",
)
def build_simseg(config: MethodConfig, arg: str | None) -> Backbone:
    if not config.checkpoint:
        raise BackboneError("backbone 'simseg' needs --checkpoint (e.g. ckpts/simseg.vit-s.pth)")
    # lazy import: start-up time (simseg.py imports torch and transformers; this module is read for `llmseg --help`)
    from .simseg import SimSegBackbone

    return SimSegBackbone(config.checkpoint, tokenizer=config.text_tokenizer, device=config.device, precision=config.precision)
