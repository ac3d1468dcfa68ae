"""Fixtures for the Python API and `llmseg segment`: a tiny randomly initialised open_clip model
(registered through open_clip's own config mechanism, weights saved to a file), synthetic photos,
and the CLI runner."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_ARCH = "llmseg-api-tiny"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
# small, fast protocol for tests: whole image at short side 64
FAST = {"short_side": 64, "crop": 0, "templates": "single"}


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> str:
    """Register the tiny architecture with open_clip and save seeded random weights as safetensors."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny_clip")
    (folder / f"{TINY_ARCH}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_ARCH, pretrained=None)
    path = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


@pytest.fixture(scope="session")
def tiny_arch(tiny_weights) -> str:
    return TINY_ARCH


@pytest.fixture(scope="session")
def segmenter(tiny_weights):
    from llmseg.stage2.api import Segmenter

    return Segmenter.create(f"openclip:{TINY_ARCH}", pretrained=tiny_weights, preset="sclip", **FAST)


def _photo(h: int = 48, w: int = 80, seed: int = 0) -> np.ndarray:
    """A blocky synthetic photo (two coloured halves plus noise)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2] = (200, 60, 40)
    image[:, w // 2 :] = (40, 90, 200)
    noise = rng.integers(-20, 21, size=image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.fixture
def make_photo():
    return _photo


@pytest.fixture
def photo_files(tmp_path):
    """Two JPEGs and one PNG of different sizes in tmp_path/in."""
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for i, (h, w, suffix) in enumerate([(48, 80, ".jpg"), (64, 40, ".png"), (50, 50, ".jpg")]):
        path = folder / f"img{i}{suffix}"
        Image.fromarray(_photo(h, w, seed=i)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def simseg_files(tmp_path_factory) -> tuple[str, str]:
    """(checkpoint, tokenizer folder) of a tiny SimSeg, built by the models tests' own builder.

    The builder lives in tests/models/conftest.py (not importable as a module under
    --import-mode=importlib), so it is loaded from its file rather than written a second time.
    """
    import importlib.util
    import string
    from pathlib import Path

    import torch

    source = Path(__file__).resolve().parents[1] / "models" / "conftest.py"
    spec = importlib.util.spec_from_file_location("llmseg_models_conftest", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder = tmp_path_factory.mktemp("simseg_api")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase] + list(".,()-'")
    vocab = specials + list(module.WORDS) + pieces
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    state, _, _ = module.build_simseg_state(len(vocab))
    path = folder / "simseg.tiny.pth"
    torch.save({"state_dict": state, "meta": {"epoch": 1}}, path)
    return str(path), str(folder)
