"""Check every input a run needs BEFORE any model is built or any file is written.

Why: without data or weights a run used to spend minutes in hub retries (or silently build random
weights) and then fail with a message about something else. Each check here is cheap (file
existence, the Hugging Face cache, a short connection probe) and names the missing thing with the
command or place that fixes it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from llmseg.errors import BackboneError, ConfigError, LlmsegError, MissingFileError
from llmseg.labelset import load_label_set
from llmseg.resources import resolve_label_set_path
from llmseg.stage2.registry_tables import BACKBONES

from .options import BackboneOptions, parse_backbone

if TYPE_CHECKING:
    from llmseg.datasets import DatasetSpec

    from .config import MethodConfig

PROBE_TIMEOUT_S = 3.0
DEFAULT_SIMSEG_CHECKPOINT = "ckpts/simseg.vit-s.pth"
DEFAULT_BERT = "bert-base-uncased"
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class PreflightError(LlmsegError, ValueError):
    """An input of the run (weights, checkpoint, tokenizer, data) is missing or cannot be reached."""


class WeightsUnavailable(PreflightError, BackboneError):
    """Weights, a checkpoint or a tokenizer that were not asked for, are missing or cannot be reached."""


def hf_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set to a true value."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hf_cache_dir() -> str:
    """The Hugging Face hub cache folder, as huggingface_hub resolves it (HF_HUB_CACHE, HF_HOME, ...)."""
    # lazy import: start-up time (llmseg --help does not load huggingface_hub; it reads HF_HUB_CACHE when first imported)
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to the URL's host opens within `timeout`, else why not."""
    parsed = urlparse(url)
    host = parsed.hostname or url
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def hf_cached(repo_id: str, filenames: tuple[str, ...]) -> str | None:
    """The cached path of the first of `filenames` in the HF cache, or None."""
    # lazy import: start-up time (llmseg --help does not load huggingface_hub and its HTTP client)
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return found
    return None


def _hub_unavailable(what: str, repo_id: str, filenames: tuple[str, ...], fix: str) -> WeightsUnavailable | None:
    """An error when `repo_id` is neither cached nor reachable; None when a download can go ahead."""
    if hf_cached(repo_id, filenames) is not None:
        return None
    where = f"{hf_cache_dir()}/models--{repo_id.replace('/', '--')}/ (file {filenames[0]})"
    if hf_offline():
        why = "HF_HUB_OFFLINE is set"
    else:
        problem = reachable(hf_endpoint())
        if problem is None:
            return None
        why = f"{hf_endpoint()} is unreachable ({problem})"
    return WeightsUnavailable(f"{what} is not in the Hugging Face cache and {why}: expected {where}. {fix}")


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith(_WEIGHT_SUFFIXES) or Path(value).exists()


def check_openclip_weights(arch: str, pretrained: str | None, random_weights: bool) -> None:
    """The open_clip weights are asked for, and are a file, or a tag cached / downloadable."""
    # lazy import: start-up time (llmseg --help does not load open_clip and torch)
    import open_clip

    if open_clip.get_model_config(arch) is None:
        return  # the builder names the unknown architecture
    if random_weights:
        if pretrained is not None:
            raise ConfigError(f"--random-weights and --pretrained {pretrained} contradict each other: give one")
        return
    if pretrained is None:
        raise WeightsUnavailable(
            f"openclip:{arch} has no weights: pass --pretrained TAG (e.g. openai; the tags: "
            f"open_clip.list_pretrained_tags_by_model('{arch}')) or --pretrained path/to/weights.safetensors. "
            "Random weights only with --random-weights (tests and speed runs)"
        )
    if _looks_like_path(pretrained):
        if not Path(pretrained).is_file():
            raise MissingFileError(f"--pretrained {pretrained}: no such weights file")
        return
    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(arch)
        raise ConfigError(
            f"--pretrained {pretrained}: not a weights file and not an open_clip tag of {arch} "
            f"(its tags: {', '.join(tags) or 'none'})"
        )
    if cfg.get("file"):
        return
    hub = cfg.get("hf_hub", "")
    if hub:
        repo_id, filename = os.path.split(hub.rstrip("/") if hub.endswith("/") else hub)
        filenames: tuple[str, ...]
        if hub.endswith("/"):
            repo_id, filenames = hub.rstrip("/"), ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        else:
            filenames = (filename,)
        error = _hub_unavailable(
            f"openclip:{arch} weights '{pretrained}' (hf_hub {repo_id})", repo_id, filenames,
            f"Download it on a connected machine (huggingface-cli download {repo_id} {filenames[0]}) and copy the "
            f"cache folder there, or pass --pretrained path/to/{filenames[0]}",
        )
        if error is not None:
            raise error
        return
    url = cfg.get("url", "")
    if url and (problem := reachable(url)) is not None:
        raise WeightsUnavailable(
            f"openclip:{arch} weights '{pretrained}' must be downloaded from {url}, which is unreachable "
            f"({problem}); download it elsewhere and pass --pretrained path/to/{Path(urlparse(url).path).name}"
        )


def check_simseg_inputs(checkpoint: str | None, tokenizer: str | None) -> None:
    """The SimSeg checkpoint file exists and the BERT tokenizer is a folder with vocab.txt or cached."""
    if not checkpoint:
        raise WeightsUnavailable(
            f"backbone 'simseg' needs --checkpoint: put the SimSeg checkpoint at {DEFAULT_SIMSEG_CHECKPOINT} "
            f"and pass --checkpoint {DEFAULT_SIMSEG_CHECKPOINT}"
        )
    if not Path(checkpoint).is_file():
        raise MissingFileError(
            f"--checkpoint {checkpoint}: no such file (the SimSeg checkpoint; e.g. {DEFAULT_SIMSEG_CHECKPOINT})"
        )
    name = tokenizer or DEFAULT_BERT
    if tokenizer is not None and _looks_like_path(tokenizer):
        if not Path(tokenizer).is_dir():
            raise MissingFileError(f"--text-tokenizer {tokenizer}: no such folder (a folder with vocab.txt)")
        if not (Path(tokenizer) / "vocab.txt").is_file():
            raise MissingFileError(f"--text-tokenizer {tokenizer}: no vocab.txt in it")
        return
    error = _hub_unavailable(
        f"simseg's text tokenizer '{name}'", name, ("vocab.txt",),
        "Pass --text-tokenizer <folder with vocab.txt> or copy the cache folder there",
    )
    if error is not None:
        raise error


def check_method_inputs(config: MethodConfig, classes: Sequence[str] | None = None) -> None:
    """Weights, checkpoint, tokenizer and label set of a method config (built-in backbones).

    With `classes`, the label set is also read and matched against them (a cheap JSON read).
    """
    if config.label_set is not None:
        if classes is not None:
            load_label_set(str(config.label_set), list(classes))
        else:
            try:
                resolve_label_set_path(config.label_set)
            except FileNotFoundError as exc:
                raise MissingFileError(f"--label-set: {exc}") from exc
    family, arg = parse_backbone(config.backbone)
    options = BACKBONES.entry(family).config  # each family's own input check (its options model's check_inputs)
    if options is not None and issubclass(options, BackboneOptions):
        options.check_inputs(arg, config)


def check_dataset(spec: DatasetSpec, data_root: str | os.PathLike) -> None:
    """The dataset's folders and split list exist under the data root, before anything is built."""
    # lazy import: start-up time (llmseg --help, which loads this module, does not load PIL and the data readers)
    from .data.readers import DataError, list_samples

    layout = spec.layout
    if layout is None:
        spec.data_dir(data_root)  # raises the dataset's own "no layout" error
        return
    base = spec.data_dir(data_root)
    expected = [base / layout.img_dir, base / layout.ann_dir]
    if layout.split_file is not None:
        expected.append(base / layout.split_file)
    missing = [p for p in expected if not p.exists()]
    fix = (
        f"Put the {spec.name} benchmark under {Path(data_root)}/ in the MMSegmentation layout (README "
        f"'Label sets and datasets'), convert raw labels with `llmseg data convert` where needed, then run "
        f"`llmseg data check {spec.name} --data-root {data_root}`"
    )
    if missing:
        raise PreflightError(
            f"dataset '{spec.name}' is not under --data-root {data_root}: missing "
            + ", ".join(str(p) for p in missing)
            + f" (expected {base}/{{{layout.img_dir}, {layout.ann_dir}"
            + (f", {layout.split_file}" if layout.split_file else "")
            + f"}}). {fix}"
        )
    try:
        list_samples(spec, data_root, limit=1)
    except DataError as exc:
        raise PreflightError(f"{exc}. {fix}") from exc
