"""Training the demo CLIP: the loss falls, a seed fixes the weights, the compact file round-trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llmseg.stage2.demo.train import (
    TOKEN_KEY,
    TrainConfig,
    build_pool,
    materialize,
    register_model_config,
    save_compact,
    token_embedding_init,
    train,
)

TINY = Path(__file__).with_name("llmseg-demo-tiny.json")


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=30, batch_size=16, pool_size=48, lr=3e-3, warmup=5, config_path=str(TINY))
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: CPU kernels reduce in a fixed order
    try:
        yield train(_cfg(), progress=False)
    finally:
        torch.set_num_threads(threads)


def test_loss_falls(trained):
    first, last = np.mean(trained.losses[:5]), np.mean(trained.losses[-5:])
    assert last < first - 0.3, (first, last)


def test_same_seed_same_weights_other_seed_differs(trained):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        again = train(_cfg(), progress=False)
        other = train(_cfg(seed=1, steps=3), progress=False)
    finally:
        torch.set_num_threads(threads)
    _ = again = train(_cfg(), progress=False)
    assert again.losses == trained.losses
    for (name, a), (_, b) in zip(trained.model.state_dict().items(), again.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert other.losses[0] != trained.losses[0]


def test_compact_weights_round_trip_through_open_clip(trained, tmp_path):
    import open_clip

    cfg = _cfg()
    compact = save_compact(trained, tmp_path / "tiny.safetensors", cfg)
    full = materialize(compact, tmp_path / "cache")
    assert materialize(compact, tmp_path / "cache") == full  # cached by content hash
    assert compact.stat().st_size < full.stat().st_size / 5
    name = register_model_config(TINY)
    model = open_clip.create_model(name, pretrained=str(full)).eval()
    expected = trained.model.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key
    # rows training never touched are exactly their initial values
    init = token_embedding_init(*expected[TOKEN_KEY].shape, seed=cfg.seed)
    untouched = np.setdiff1d(np.arange(init.shape[0]), trained.token_ids)
    assert np.array_equal(model.state_dict()[TOKEN_KEY].numpy()[untouched], init[untouched])


def test_pool_region_weights_cover_each_patch_once():
    pool = build_pool(6, world_seed=3, image_size=32, patch_size=8, progress=False)
    assert pool.images.shape == (6, 32, 32, 3)
    totals = pool.region_weights.sum(axis=1)
    assert np.allclose(totals, 1.0, atol=1e-5)
    for texts, weights in zip(pool.region_texts, pool.region_weights, strict=True):
        present = weights.sum(axis=1) > 0
        assert present.sum() <= len(texts)


def test_missing_weights_are_trained_once_and_cached(tmp_path):
    from llmseg.stage2.demo.run import ensure_weights

    messages: list[str] = []
    missing = tmp_path / "assets" / "llmseg-demo-clip.safetensors"
    cfg = _cfg(steps=2)
    first = ensure_weights(tmp_path / "out", shipped=missing, train_config=cfg, echo=messages.append)
    assert first == tmp_path / "out" / "model" / missing.name and first.is_file()
    assert len(messages) == 1 and "training" in messages[0]
    again = ensure_weights(tmp_path / "out", shipped=missing, train_config=cfg, echo=messages.append)
    assert again == first and len(messages) == 1  # cached: no second training
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        ensure_weights(tmp_path / "out", weights=tmp_path / "nowhere.safetensors")


def test_train_default_output_is_outside_the_package(tmp_path, monkeypatch):
    """`llmseg demo train` without --out writes to the working directory, never into the installed package."""
    from typer.testing import CliRunner

    import llmseg
    import llmseg.stage2
    from llmseg.cli import app
    from llmseg.stage2.demo.train import WEIGHTS_PATH, default_train_out

    package_dirs = [Path(llmseg.__file__).resolve().parent, Path(llmseg.stage2.__file__).resolve().parent]
    assert default_train_out(tmp_path) == tmp_path / WEIGHTS_PATH.name
    monkeypatch.chdir(tmp_path)
    default = default_train_out().resolve()
    for folder in package_dirs:
        assert not default.is_relative_to(folder), (default, folder)
    shipped_before = WEIGHTS_PATH.read_bytes() if WEIGHTS_PATH.is_file() else None
    listing_before = sorted(p.name for p in WEIGHTS_PATH.parent.iterdir())
    result = CliRunner().invoke(app, ["demo", "train", "--steps", "1", "--batch-size", "2", "--pool-size", "8"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / WEIGHTS_PATH.name).is_file() and str(tmp_path / WEIGHTS_PATH.name) in result.output
    assert (WEIGHTS_PATH.read_bytes() if WEIGHTS_PATH.is_file() else None) == shipped_before
    assert sorted(p.name for p in WEIGHTS_PATH.parent.iterdir()) == listing_before
    # the file written is usable as --weights: it materialises into a full open_clip state dict
    assert materialize(tmp_path / WEIGHTS_PATH.name, tmp_path / "cache").is_file()


def test_bad_weights_files_are_user_errors(tmp_path):
    from llmseg.errors import LlmsegError

    with pytest.raises(LlmsegError, match="nowhere.safetensors"):
        materialize(tmp_path / "nowhere.safetensors", tmp_path / "cache")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file" * 4)
    with pytest.raises(LlmsegError, match="junk.safetensors"):
        materialize(junk, tmp_path / "cache")
