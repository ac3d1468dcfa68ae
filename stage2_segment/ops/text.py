"""Names -> text embeddings: every template filled, encoded, L2-normalised, averaged, L2-normalised again.

Embeddings are remembered per backbone (in memory, per name and template set) and optionally cached
on disk, keyed by the text tower's weight fingerprint, the templates and the names. The disk cache
is only an optimisation: a missing, corrupt or mismatching entry is recomputed and rewritten.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from llmseg.io import atomic_write_bytes, stable_hash
from llmseg.stage2.backbones.base import Backbone
from llmseg.templates import load_templates

log = logging.getLogger(__name__)
CACHE_VERSION = 1


PROMPTS_PER_CALL = 16384  # names x templates per encode_text call: bounds the [prompts, D] block (847 x 5 x 80 = 338800)


def embed_prompts(backbone: Backbone, names: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """[N, D] float32: mean over templates of the normalised prompt embeddings, normalised again.

    Names go to the encoder in chunks of about PROMPTS_PER_CALL prompts, so 4235 subclasses x 80
    templates never hold all 338800 prompt vectors at once; each name's average is unchanged.
    """
    if not names:
        return torch.zeros(0, backbone.embed_dim)
    step = max(1, PROMPTS_PER_CALL // max(1, len(templates)))
    out = []
    for start in range(0, len(names), step):
        chunk = names[start : start + step]
        prompts = [template.format(name) for name in chunk for template in templates]
        feats = backbone.encode_text(prompts).float().cpu()
        feats = F.normalize(feats, dim=-1).reshape(len(chunk), len(templates), -1)
        out.append(F.normalize(feats.mean(dim=1), dim=-1))
    return torch.cat(out)


def cache_key(backbone: Backbone, templates: Sequence[str], names: Sequence[str]) -> str:
    return stable_hash(
        {"version": CACHE_VERSION, "weights": backbone.text_fingerprint(), "templates": list(templates), "names": list(names)}
    )


def _read_cache(path: Path, key: str, count: int) -> torch.Tensor | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            emb = np.asarray(data["embeddings"], dtype=np.float32)
    except Exception as exc:  # corrupt / truncated / foreign file: recompute
        log.warning("text cache entry %s unreadable (%s); recomputing", path, exc)
        return None
    if emb.ndim != 2 or emb.shape[0] != count or not np.isfinite(emb).all():
        log.warning("text cache entry %s has shape %s, expected %d rows; recomputing", path, emb.shape, count)
        return None
    return torch.from_numpy(emb)


def _write_cache(path: Path, key: str, emb: torch.Tensor) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, key=np.array(key), embeddings=emb.numpy().astype(np.float32))
    atomic_write_bytes(path, buffer.getvalue())


def text_embeddings(
    backbone: Backbone,
    names: Sequence[str],
    templates: str | Sequence[str] = "openai80",
    *,
    cache_dir: str | Path | None = None,
) -> torch.Tensor:
    """[N, D] float32 on the CPU for `names` with a template set name/file or an explicit list."""
    template_list = tuple(load_templates(templates) if isinstance(templates, str | Path) else templates)
    names = list(names)
    memory = backbone.text_memory
    todo = list(dict.fromkeys(n for n in names if (template_list, n) not in memory))
    if todo:
        emb = None
        path = None
        if cache_dir is not None:
            key = cache_key(backbone, template_list, todo)
            path = Path(cache_dir) / f"{key[:32]}.npz"
            if path.is_file():
                emb = _read_cache(path, key, len(todo))
        if emb is None:
            emb = embed_prompts(backbone, todo, template_list)
            if path is not None:
                _write_cache(path, key, emb)
        for name, vector in zip(todo, emb, strict=True):
            memory[(template_list, name)] = vector
    if not names:
        return torch.zeros(0, backbone.embed_dim)
    return torch.stack([memory[(template_list, n)] for n in names])
