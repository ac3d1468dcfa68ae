"""Train the demo's small CLIP contrastively on generated image/caption pairs (open_clip's own loss).

The architecture is an open_clip custom config shipped in `assets/` (registered with
`open_clip.add_model_config`), so every open_clip code path (and the engine's `openclip:`
backbone) builds it by name. Training is deterministic under a seed: the data are a pure
function of the seed, the weights are initialised after `torch.manual_seed`, and the token
embedding is initialised from numpy's stable PCG64 stream so that the shipped weights can
store only the rows training touched (see `save_compact` / `materialize`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from llmseg.errors import LlmsegError, MissingFileError
from llmseg.io import atomic_path, sha256_file
from llmseg.stage2.registry_tables import BACKBONES

from ..methods.presets import resolve_dense_mode, resolve_mode_options
from ..options import backbone_options
from .generator import caption, region_captions, render_scene

ASSETS = Path(__file__).resolve().parent / "assets"
MODEL_NAME = "llmseg-demo-clip"
CONFIG_PATH = ASSETS / f"{MODEL_NAME}.json"
WEIGHTS_PATH = ASSETS / f"{MODEL_NAME}.safetensors"  # shipped with the package: read, never written by a command
TOKEN_KEY = "token_embedding.weight"
EMBED_INIT_STD = 0.02
# How the demo CLIP is read densely (the demo run and the app's demo model); here, not in run.py, which loads torch.
DENSE_MODE = "vanilla"  # the demo CLIP pools by averaging patch tokens: its own patch tokens localise best
TEMPLATES = "single"
LOGIT_SCALE = 50.0


class DemoWeightsError(LlmsegError, ValueError):
    """A file given as demo weights that is not a compact demo weights file."""


def default_train_out(cwd: str | Path | None = None) -> Path:
    """Where `llmseg demo train` writes without --out: the working directory, never the installed package.

    The package folder may be site-packages (read-only, shared, replaced on upgrade); the shipped
    weights there stay what was released.
    """
    return Path(cwd if cwd is not None else Path.cwd()) / f"{MODEL_NAME}.safetensors"


@dataclass
class TrainConfig:
    """Everything that determines the trained weights."""

    steps: int = 400
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 50
    seed: int = 0
    world_seed: int = 1000  # training scenes; the benchmark uses a different seed
    pool_size: int = 4096
    region_weight: float = 1.0  # region-caption loss (mask-pooled patch tokens vs each object's own caption)
    model: str = MODEL_NAME
    config_path: str | None = None  # a custom open_clip config JSON (tests use a tinier one)


@dataclass
class TrainResult:
    model: Any  # open_clip's CLIP (untyped)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    token_ids: list[int] = field(default_factory=list)  # rows of the token embedding training touched


def register_model_config(path: str | Path = CONFIG_PATH) -> str:
    """Make `open_clip` know the demo architecture by name (idempotent); returns the name."""
    # lazy import: start-up time (llmseg --help registers demo-clip from here without loading torch)
    import open_clip

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"open_clip model config not found: {path}")
    if path.stem not in open_clip.list_models():
        open_clip.add_model_config(path)
    return path.stem


def model_input_size(name: str = MODEL_NAME) -> int:
    # lazy import: start-up time (llmseg --help registers demo-clip from here without loading torch)
    import open_clip

    size = open_clip.get_model_config(name)["vision_cfg"]["image_size"]
    return int(size if isinstance(size, int) else size[0])


def token_embedding_init(vocab: int, width: int, seed: int) -> np.ndarray:
    """The token embedding's initial value: numpy PCG64 (stable across versions), std 0.02."""
    rng = np.random.default_rng([int(seed), 7919])
    return (rng.standard_normal((vocab, width)) * EMBED_INIT_STD).astype(np.float32)


@dataclass
class Pool:
    """Training scenes at the model's input size, their captions, and per-region patch weights."""

    images: np.ndarray  # [N, S, S, 3] uint8
    captions: list[str]
    region_weights: np.ndarray  # [N, R, G*G] float32: share of each patch covered by the region (0 = absent)
    region_texts: list[list[str]]  # per scene: one caption per region (objects..., background)


MAX_REGIONS = 5  # up to 4 objects + the background


def build_pool(n: int, world_seed: int, image_size: int, patch_size: int, progress: bool = True) -> Pool:
    """`n` training scenes (rendered at full size, resized bicubically to the input size)."""
    # lazy import: start-up time (llmseg --help registers demo-clip from here without loading torch)
    from PIL import Image

    grid = image_size // patch_size
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    weights = np.zeros((n, MAX_REGIONS, grid * grid), np.float32)
    captions: list[str] = []
    texts: list[list[str]] = []
    for i in tqdm(range(n), desc="rendering training scenes", disable=not progress, leave=False):
        scene = render_scene(world_seed, i)
        picture = Image.fromarray(scene.image)
        if picture.size != (image_size, image_size):
            picture = picture.resize((image_size, image_size), Image.Resampling.BICUBIC)
        images[i] = np.asarray(picture)
        captions.append(caption(scene, world_seed, i))
        texts.append(region_captions(scene, world_seed, i))
        full = scene.image.shape[0]
        if full % grid:
            raise ValueError(f"render size {full} is not a multiple of the patch grid {grid}")
        cell = full // grid
        union = np.zeros((grid, grid), np.float32)
        for r, mask in enumerate(scene.masks):
            share = mask.reshape(grid, cell, grid, cell).mean(axis=(1, 3)).astype(np.float32)
            weights[i, r] = share.reshape(-1)
            union += share
        weights[i, len(scene.masks)] = np.clip(1.0 - union, 0.0, 1.0).reshape(-1)
    return Pool(images, captions, weights, texts)


def _param_groups(model, weight_decay: float) -> list[dict]:
    """open_clip's convention: no decay on gains, biases, embeddings and logit_scale."""
    decay: list[Any] = []  # the trainable parameters (torch.nn.Parameter)
    no_decay: list[Any] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exclude = param.ndim < 2 or "embedding" in name or "logit_scale" in name or name.endswith(".bias")
        (no_decay if exclude else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class _TrainingData:
    """The pool as tensors, ready for batches: what every training step draws from."""

    tokens: Any  # [N, L] caption tokens (torch)
    pixels: Any  # [N, 3, S, S] uint8 (torch)
    mean: Any  # open_clip's normalisation, [1, 3, 1, 1]
    std: Any
    region_weights: Any  # [N, R, G*G] (torch)
    region_ids: np.ndarray  # [N, R] index into region_tokens, -1 = no region
    region_tokens: Any  # [V, L] the distinct region captions, tokenized
    grid: int  # patches per side
    token_ids: list[int]  # rows of the token embedding the captions use


def train(
    cfg: TrainConfig | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Contrastive training with `open_clip.ClipLoss`; deterministic for a given config and thread count."""
    cfg = cfg or TrainConfig()
    name = register_model_config(cfg.config_path) if cfg.config_path else register_model_config()
    if name != cfg.model:
        cfg.model = name
    started = time.perf_counter()
    model = _seeded_model(cfg)
    data = _training_data(model, cfg, progress)
    losses = _optimise(model, data, cfg, progress, on_step)
    model.eval()
    return TrainResult(model=model, losses=losses, seconds=time.perf_counter() - started, token_ids=data.token_ids)


def _seeded_model(cfg: TrainConfig):
    """A fresh open_clip model initialised after `torch.manual_seed`, its token embedding from numpy's PCG64."""
    # lazy import: start-up time (llmseg --help registers demo-clip from here without loading torch)
    import open_clip
    import torch

    torch.manual_seed(cfg.seed)
    model = open_clip.create_model(cfg.model, pretrained=None)
    embedding = model.token_embedding.weight
    with torch.no_grad():
        vocab, width = embedding.shape
        embedding.copy_(torch.from_numpy(token_embedding_init(vocab, width, seed=cfg.seed)))
    return model


def _training_data(model, cfg: TrainConfig, progress: bool) -> _TrainingData:
    """Render the training scenes and tokenize their captions (whole-scene and per-region)."""
    # lazy import: start-up time (llmseg --help registers demo-clip from here without loading torch)
    import open_clip
    import torch

    tokenizer = open_clip.get_tokenizer(cfg.model)
    size = model_input_size(cfg.model)
    patch = int(model.visual.patch_size[0])
    pool = build_pool(cfg.pool_size, cfg.world_seed, size, patch, progress=progress)
    tokens = tokenizer(pool.captions)
    region_vocab = sorted({t for texts in pool.region_texts for t in texts})
    region_tokens = tokenizer(region_vocab)
    region_index = {t: i for i, t in enumerate(region_vocab)}
    region_ids = np.full((len(pool.captions), MAX_REGIONS), -1, np.int64)
    for i, texts in enumerate(pool.region_texts):
        region_ids[i, : len(texts)] = [region_index[t] for t in texts]
    token_ids = sorted(int(t) for t in torch.unique(torch.cat([tokens.flatten(), region_tokens.flatten()])))
    return _TrainingData(
        tokens=tokens,
        pixels=torch.from_numpy(pool.images).permute(0, 3, 1, 2).contiguous(),
        mean=torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1),
        std=torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1),
        region_weights=torch.from_numpy(pool.region_weights),
        region_ids=region_ids,
        region_tokens=region_tokens,
        grid=size // patch,
        token_ids=token_ids,
    )


def _optimise(
    model,
    data: _TrainingData,
    cfg: TrainConfig,
    progress: bool,
    on_step: Callable[[int, float], None] | None,
) -> list[float]:
    """AdamW over `cfg.steps` batches (warm-up, then cosine decay); returns the loss of every step."""
    # lazy import: start-up time (llmseg --help registers demo-clip from here without loading torch)
    import open_clip
    import torch

    loss_fn = open_clip.ClipLoss()
    optimizer = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    rng = np.random.default_rng([cfg.seed, 31337])
    model.train()
    visual = model.visual
    visual.output_tokens = True
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc="training demo CLIP", disable=not progress)
    try:
        for step in bar:
            picked, flip, batch = _draw_batch(data, rng, cfg.batch_size)
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(step, cfg)
            loss = _batch_loss(model, loss_fn, data, picked, flip, batch, cfg.region_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if on_step is not None:
                on_step(step, losses[-1])
    finally:
        visual.output_tokens = False
    return losses


def _learning_rate(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over `cfg.warmup` steps, then cosine decay to zero at `cfg.steps`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress_ = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * progress_))


def _draw_batch(data: _TrainingData, rng: np.random.Generator, batch_size: int):
    """The next batch from the seeded stream: (scene indices, which of them are mirrored, normalised pixels)."""
    # lazy import: start-up time (llmseg --help registers demo-clip from here without loading torch)
    import torch

    scenes = len(data.region_ids)  # one row per training scene
    picked = rng.choice(scenes, size=min(batch_size, scenes), replace=False)
    flip_np = rng.random(len(picked)) < 0.5
    index = torch.from_numpy(picked)
    flip = torch.from_numpy(flip_np)
    batch = data.pixels[index].float().div_(255.0)
    batch[flip] = batch[flip].flip(-1)
    return picked, flip, (batch - data.mean) / data.std


def _batch_loss(model, loss_fn, data: _TrainingData, picked: np.ndarray, flip, batch, region_weight: float):
    """open_clip's ClipLoss of the images against their captions, plus the weighted region-caption loss."""
    # lazy import: start-up time (llmseg --help registers demo-clip from here without loading torch)
    import torch
    import torch.nn.functional as F

    index = torch.from_numpy(picked)
    visual = model.visual
    pooled, patch_tokens = visual(batch)
    image_features = F.normalize(pooled, dim=-1)
    text_features = model.encode_text(data.tokens[index], normalize=True)
    scale = model.logit_scale.exp()
    loss = loss_fn(image_features, text_features, scale)
    if region_weight > 0:
        loss = loss + region_weight * _region_loss(
            patch_tokens @ visual.proj, data.region_weights[index], flip, data.grid, data.region_ids[picked],
            data.region_tokens, model, scale,
        )
    return loss


def _region_loss(patch_features, weights, flip, grid, ids, region_tokens, model, scale):
    """Cross-entropy of mask-pooled patch features against the batch's distinct region captions.

    Each region (an object or the background) is the coverage-weighted mean of its patch
    features; it must pick its own caption among the distinct captions of the batch (a
    contrastive loss over unique texts, since many regions share a caption).
    """
    # lazy import: start-up time (llmseg --help registers demo-clip from here without loading torch)
    import torch
    import torch.nn.functional as F

    b, r, _ = weights.shape
    w = weights.reshape(b, r, grid, grid)
    w = torch.where(flip.view(b, 1, 1, 1), w.flip(-1), w).reshape(b, r, -1)
    mass = w.sum(-1)
    valid = torch.from_numpy(ids >= 0) & (mass >= 0.5)
    regions = torch.einsum("brp,bpd->brd", w, patch_features) / mass.clamp_min(1e-6).unsqueeze(-1)
    regions = F.normalize(regions[valid], dim=-1)
    used, target = np.unique(ids[valid.numpy()], return_inverse=True)
    texts = model.encode_text(region_tokens[torch.from_numpy(used)], normalize=True)
    logits = scale * regions @ texts.T
    return F.cross_entropy(logits, torch.from_numpy(target.reshape(-1)))


def save_compact(result: TrainResult, path: str | Path, cfg: TrainConfig) -> Path:
    """Safetensors with every tensor except the untouched token-embedding rows (regenerated on load).

    Checks that those rows really are untouched (equal to their initial value) before leaving them out.
    """
    # lazy import: start-up time (llmseg --help registers demo-clip from here without loading torch)
    import torch
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().clone() for k, v in result.model.state_dict().items()}
    table = state.pop(TOKEN_KEY)
    ids = torch.tensor(result.token_ids, dtype=torch.int64)
    vocab, width = table.shape
    init = torch.from_numpy(token_embedding_init(vocab, width, seed=cfg.seed))
    untouched = torch.ones(table.shape[0], dtype=torch.bool)
    untouched[ids] = False
    if not torch.equal(table[untouched], init[untouched]):
        raise RuntimeError("token embedding rows outside the training vocabulary changed: cannot store compactly")
    state["_demo.token_ids"] = ids
    state["_demo.token_rows"] = table[ids].contiguous()
    meta = {
        "model": cfg.model,
        "vocab_size": str(table.shape[0]),
        "embed_seed": str(cfg.seed),
        "train_config": json.dumps(asdict(cfg), sort_keys=True),
        "final_loss": f"{result.losses[-1]:.6f}" if result.losses else "",
        "train_seconds": f"{result.seconds:.1f}",
    }
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(path)


def materialize(compact: str | Path, cache_dir: str | Path) -> Path:
    """A full open_clip state dict (loadable as `pretrained=<file>`) from the compact weights; cached by hash."""
    # lazy import: start-up time (llmseg --help registers demo-clip from here without loading torch)
    import torch
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save_file

    compact = Path(compact)
    if not compact.is_file():
        raise MissingFileError(f"demo weights not found: {compact}")
    digest = sha256_file(compact)[:16]
    target = Path(cache_dir) / f"{compact.stem}-full-{digest}.safetensors"
    if target.is_file():
        return target
    try:
        with safe_open(str(compact), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {key: fh.get_tensor(key) for key in fh.keys()}
    except SafetensorError as exc:
        raise DemoWeightsError(f"{compact}: not a safetensors file ({exc})") from exc
    try:
        ids = state.pop("_demo.token_ids")
        rows = state.pop("_demo.token_rows")
        vocab, seed = int(meta["vocab_size"]), int(meta["embed_seed"])
    except KeyError as exc:
        raise DemoWeightsError(f"{compact}: not a compact demo weights file (missing {exc})") from exc
    table = torch.from_numpy(token_embedding_init(vocab, rows.shape[1], seed=seed))
    table[ids] = rows
    state[TOKEN_KEY] = table
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata={"source": compact.name, "source_sha256_16": digest})
    return target


def load_model(weights: str | Path, cache_dir: str | Path):
    """The trained demo CLIP through open_clip's own factory (as the engine loads it)."""
    # lazy import: start-up time (llmseg --help registers demo-clip from here without loading torch)
    import open_clip

    name = register_model_config()
    model = open_clip.create_model(name, pretrained=str(materialize(weights, cache_dir)))
    return model.eval()


# ---------------------------------------------------------------- the demo CLIP as a named backbone

DEMO_BACKBONE = "demo-clip"


def user_cache_dir() -> Path:
    """$LLMSEG_CACHE_DIR, else $XDG_CACHE_HOME/llmseg, else ~/.cache/llmseg: never the installed package."""
    if os.environ.get("LLMSEG_CACHE_DIR"):
        return Path(os.environ["LLMSEG_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "llmseg"


def demo_pretrained(weights: str | Path | None = None) -> Path:
    """The full open_clip state dict of the demo CLIP (the shipped compact weights, or `weights`), in the user cache."""
    return materialize(Path(weights) if weights else WEIGHTS_PATH, user_cache_dir() / "demo_clip")


def _register_backbone() -> None:
    @BACKBONES.register(
        DEMO_BACKBONE,
        config=backbone_options("pretrained", "dense_mode", "mode_options", name="DemoClipOptions"),
        help="demo-clip: the bundled demo CLIP (offline; --pretrained: compact weights from `llmseg demo train`)",
    )
    def build_demo_clip(config, arg: str | None):
        # lazy import: start-up time (llmseg --help registers demo-clip from here without loading torch)
        from ..backbones.openclip import OpenClipBackbone

        register_model_config()
        pretrained = demo_pretrained(config.pretrained)
        # the engine's warnings about foreign local weights (QuickGELU, avg pooling) do not apply here
        logger = logging.getLogger("llmseg.stage2.backbones.openclip")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            backbone = OpenClipBackbone(MODEL_NAME, str(pretrained), dense_mode=resolve_dense_mode(config),
                                        mode_options=resolve_mode_options(config), device=config.device, precision=config.precision)
        finally:
            logger.setLevel(level)
        backbone.name = DEMO_BACKBONE
        return backbone


_register_backbone()
