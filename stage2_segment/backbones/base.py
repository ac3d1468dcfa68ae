"""The one interface every backbone offers: normalised text vectors, global and dense image vectors.

Methods never reach inside a model: they preprocess with the backbone's own mean/std and sizes,
call `encode_image` / `encode_text`, and work on the normalised vectors. A new backbone subclasses
`Backbone` and registers a builder in `llmseg.stage2.registry_tables.BACKBONES` (see backbones/builtin.py).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from llmseg.errors import BackboneError

if TYPE_CHECKING:
    import torch


def refuse_non_finite(named: Iterable[tuple[str, torch.Tensor]], source: str) -> None:
    """BackboneError naming `source` and the first tensor holding NaN or infinity.

    Why: such weights load and run without complaint and give NaN scores, which argmax turns into
    class 0 everywhere: a plausible-looking but wrong number.
    """
    import torch  # lazy import: start-up time (this module is read for `llmseg --help`, which loads no torch)

    for name, tensor in named:
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise BackboneError(f"{source}: weights '{name}' hold {bad} non-finite values (NaN or infinity); "
                                "the file is damaged or was saved from a diverged model: refusing to load it")


class Backbone(ABC):
    """Text and image encoders sharing one embedding space."""

    name: str  # e.g. "openclip:ViT-B-16" or "simseg"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch_size: int
    native_size: int  # the square input size the weights were trained at
    embed_dim: int
    device: str = "cpu"
    has_dense_modes: ClassVar[bool] = False  # True: `with_mode` gives views that use a registered dense mode


    def __init__(self) -> None:
        # name -> embedding, per template set: reused across class lists (Python API, several datasets)
        self.text_memory: dict[tuple[tuple[str, ...], str], Any] = {}
        self._text_fingerprint: str | None = None

    @abstractmethod
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """[N, D] float32, L2-normalised, on the backbone's device."""

    @abstractmethod
    def encode_image(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images [B, 3, H, W] normalised with mean/std, H and W multiples of the patch size.

        Returns (global [B, D], dense [B, H/p, W/p, D]), both L2-normalised along D.
        """

    @abstractmethod
    def text_parameters(self) -> Iterable[torch.Tensor]:
        """The tensors that determine `encode_text` (for the text-cache key)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Architecture, weights source and checkpoint sha256: everything that fixes the outputs."""

    def with_mode(self, mode: str, *, naclip_std: float | None = None, pos_embed: Any = None,
                  mode_options: Mapping[str, Any] | None = None) -> Any:
        """A view of this backbone whose `encode_image` uses dense mode `mode` (backbones with `has_dense_modes`).

        The base class has none: asking is a BackboneError naming the backbone, not an AttributeError.
        """
        raise BackboneError(f"backbone '{self.name}' has no dense modes (asked for '{mode}'); "
                            "--dense-mode applies to openclip backbones only")

    def text_fingerprint(self) -> str:
        """sha256 over the text tower's weights: the text cache is keyed by what the weights are."""
        if self._text_fingerprint is None:
            import torch  # lazy import: start-up time (this module is read for `llmseg --help`, which loads no torch)

            digest = hashlib.sha256()
            for tensor in self.text_parameters():
                data = tensor.detach().to("cpu").contiguous().reshape(-1)
                digest.update(str(tuple(tensor.shape)).encode() + str(data.dtype).encode())
                digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
            self._text_fingerprint = digest.hexdigest()
        return self._text_fingerprint
