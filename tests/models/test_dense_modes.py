"""Each dense mode of the open_clip wrapper vs an independent float64 computation of its formula."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from llmseg.stage2.backbones.dense_modes import BUILTIN_DENSE_MODES as DENSE_MODES


def _ln(x, mod):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias


def _softmax(a):
    a = a - a.max(-1, keepdim=True).values
    e = torch.exp(a)
    return e / e.sum(-1, keepdim=True)


def _reference_tokens(model, images, mode, grid):
    """float64: embed + first blocks through open_clip, last block written out from its weights."""
    v = model.visual
    b = images.shape[0]
    x = F.conv2d(images, v.conv1.weight, stride=v.conv1.stride).flatten(2).transpose(1, 2)
    pos = v.positional_embedding
    g0 = int(math.isqrt(pos.shape[0] - 1))
    patch_pos = pos[1:].reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
    if grid != (g0, g0):
        patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
    pos = torch.cat([pos[:1], patch_pos.permute(0, 2, 3, 1).reshape(-1, pos.shape[1])])
    x = torch.cat([v.class_embedding.reshape(1, 1, -1).expand(b, 1, -1), x], 1) + pos
    x = _ln(x, v.ln_pre)
    blocks = list(v.transformer.resblocks)
    for blk in blocks[:-1]:
        x = blk(x)
    last = blocks[-1].block if hasattr(blocks[-1], "block") else blocks[-1]
    attn = last.attn
    heads = attn.num_heads
    y = _ln(x, last.ln_1)
    qkv = y @ attn.in_proj_weight.T + attn.in_proj_bias
    q, k, val = qkv.chunk(3, -1)
    n, c = x.shape[1], x.shape[2]
    hd = c // heads

    def split(t):
        return t.reshape(b, n, heads, hd).permute(0, 2, 1, 3)

    q, k, val = split(q), split(k), split(val)
    s = 1.0 / math.sqrt(hd)

    def merge(t):
        return t.permute(0, 2, 1, 3).reshape(b, n, c)

    def out_proj(t):
        return t @ attn.out_proj.weight.T + attn.out_proj.bias

    def mlp(t):
        h = _ln(t, last.ln_2) @ last.mlp.c_fc.weight.T + last.mlp.c_fc.bias
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU (the tiny config has no QuickGELU)
        return h @ last.mlp.c_proj.weight.T + last.mlp.c_proj.bias

    plain = x + out_proj(merge(_softmax(q @ k.transpose(-1, -2) * s) @ val))
    plain = plain + mlp(plain)
    if mode == "vanilla":
        out = plain
    elif mode == "maskclip":
        out = out_proj(merge(val))
    elif mode == "sclip":
        a = _softmax(q @ q.transpose(-1, -2) * s) + _softmax(k @ k.transpose(-1, -2) * s)
        out = x + out_proj(merge(a @ val))
        out = out + mlp(out)
    elif mode == "clearclip":
        out = out_proj(merge(_softmax(q @ q.transpose(-1, -2) * s) @ val))
    else:
        h, w = grid
        coords = [(i, j) for i in range(h) for j in range(w)]
        bias = torch.zeros(n, n, dtype=torch.float64)
        for p, (yi, xi) in enumerate(coords):
            for r, (yj, xj) in enumerate(coords):
                bias[p + 1, r + 1] = math.exp(-((yi - yj) ** 2 + (xi - xj) ** 2) / (2 * 5.0**2))
        out = out_proj(merge(_softmax(k @ k.transpose(-1, -2) * s + bias) @ val))
    pooled = _ln(plain[:, 0], v.ln_post) @ v.proj
    tokens = _ln(out[:, 1:], v.ln_post) @ v.proj
    return F.normalize(pooled, dim=-1), F.normalize(tokens, dim=-1).reshape(b, grid[0], grid[1], -1)


@pytest.mark.parametrize("mode", DENSE_MODES)
@pytest.mark.parametrize("size", [(64, 64), (96, 64)])
def test_dense_mode_matches_float64_formula(tiny_openclip, mode, size):
    backbone = tiny_openclip(mode)
    backbone.model.double()
    backbone._pos_cache.clear()
    torch.manual_seed(1)
    images = torch.randn(2, 3, *size, dtype=torch.float64)
    grid = (size[0] // 16, size[1] // 16)
    pooled, dense = backbone.encode_image(images)
    with torch.no_grad():
        ref_pooled, ref_dense = _reference_tokens(backbone.model, images, mode, grid)
    assert dense.shape == (2, *grid, 32)
    torch.testing.assert_close(dense.double(), ref_dense, atol=2e-6, rtol=0)
    torch.testing.assert_close(pooled.double(), ref_pooled, atol=2e-6, rtol=0)


@pytest.mark.parametrize("mode", DENSE_MODES)
def test_global_vector_is_open_clip_encode_image(tiny_openclip, mode):
    backbone = tiny_openclip(mode)
    images = torch.randn(3, 3, 64, 64)
    pooled, _ = backbone.encode_image(images)
    with torch.no_grad():  # the model is never modified: open_clip's own encode_image is the reference
        expected = backbone.model.encode_image(images, normalize=True)
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=0)


def test_vanilla_dense_equals_open_clip_tokens(tiny_openclip):
    backbone = tiny_openclip("vanilla")
    images = torch.randn(2, 3, 64, 64)
    _, dense = backbone.encode_image(images)
    visual = backbone.model.visual
    visual.output_tokens = True
    try:
        with torch.no_grad():
            _, tokens = visual(images)
    finally:
        visual.output_tokens = False
    expected = F.normalize(tokens @ visual.proj, dim=-1).reshape(2, 4, 4, -1)
    torch.testing.assert_close(dense, expected, atol=1e-5, rtol=0)


def test_modes_differ_and_non_multiple_input_is_rejected(tiny_openclip):
    images = torch.randn(1, 3, 64, 64)
    outs = {m: tiny_openclip(m).encode_image(images)[1] for m in DENSE_MODES}
    for a in DENSE_MODES:
        for b in DENSE_MODES:
            if a < b:
                assert (outs[a] - outs[b]).abs().max() > 1e-3, (a, b)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        tiny_openclip("sclip").encode_image(torch.randn(1, 3, 70, 64))


def test_quickgelu_rule(tiny_arch, tmp_path):
    from llmseg.stage2.backbones.openclip import _quickgelu_needed

    assert _quickgelu_needed("ViT-B-16", "openai")
    assert not _quickgelu_needed("ViT-B-16-quickgelu", "openai")
    assert not _quickgelu_needed("ViT-B-16", None)
    weights = tmp_path / "dfn2b_vit_b16.safetensors"
    weights.write_bytes(b"x")
    assert _quickgelu_needed("ViT-B-16", str(weights))
    plain = tmp_path / "mine.safetensors"
    plain.write_bytes(b"x")
    assert not _quickgelu_needed("ViT-B-16", str(plain))


def test_local_weights_file_loads_offline(tiny_openclip, tiny_arch, tmp_path):
    from safetensors.torch import save_file

    from llmseg.stage2.backbones.openclip import OpenClipBackbone

    source = tiny_openclip("vanilla", seed=3)
    path = tmp_path / "tiny.safetensors"
    state = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    state = {k.replace("resblocks.1.block.", "resblocks.1."): v for k, v in state.items()}
    save_file(state, str(path))
    loaded = OpenClipBackbone(tiny_arch, str(path), dense_mode="clearclip")
    assert loaded.describe()["weights_sha256"] and len(loaded.describe()["weights_sha256"]) == 64
    images = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded.encode_image(images)[0], source.encode_image(images)[0])


def test_torchscript_archive_is_refused_then_converted(tiny_arch, tmp_path):
    import warnings

    import open_clip

    from llmseg.stage2.backbones.base import BackboneError
    from llmseg.stage2.backbones.openclip import OpenClipBackbone, convert_torchscript_checkpoint

    torch.manual_seed(5)
    model = open_clip.create_model(tiny_arch).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        archive = torch.jit.script(model)
    src = tmp_path / "ViT-tiny.pt"
    archive.save(str(src))
    with pytest.raises(BackboneError, match="convert_torchscript_checkpoint"):
        OpenClipBackbone(tiny_arch, str(src))
    dst = convert_torchscript_checkpoint(src, tmp_path / "tiny.safetensors")
    backbone = OpenClipBackbone(tiny_arch, str(dst), dense_mode="maskclip")
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = F.normalize(model.encode_image(images), dim=-1)
    torch.testing.assert_close(backbone.encode_image(images)[0], expected, atol=1e-6, rtol=0)


def test_bf16_autocast_stays_close_to_fp32(tiny_arch):
    from llmseg.stage2.backbones.openclip import OpenClipBackbone

    torch.manual_seed(0)
    fp32 = OpenClipBackbone(tiny_arch, None, dense_mode="sclip")
    torch.manual_seed(0)
    bf16 = OpenClipBackbone(tiny_arch, None, dense_mode="sclip", precision="bf16")
    images = torch.randn(1, 3, 64, 64)
    a, b = fp32.encode_image(images), bf16.encode_image(images)
    assert b[1].dtype == torch.float32
    assert (a[1] * b[1]).sum(-1).min() > 0.97  # cosine between fp32 and bf16 patch vectors
    ta, tb = fp32.encode_text(["a photo of a cat."]), bf16.encode_text(["a photo of a cat."])
    assert float((ta * tb).sum()) > 0.97


def test_random_weights_are_seeded_so_every_process_builds_the_same_model(tiny_arch):
    """Without --pretrained the model is seeded (torchrun ranks must agree) and the global RNG is untouched."""
    from llmseg.stage2.backbones.openclip import OpenClipBackbone

    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = OpenClipBackbone(tiny_arch, None)
    assert torch.equal(torch.rand(3), before)  # fork_rng: the caller's stream is unchanged
    b = OpenClipBackbone(tiny_arch, None)
    c = OpenClipBackbone(tiny_arch, None, init_seed=1)
    sa, sb, sc = (m.model.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_a_dense_mode_registered_from_outside_is_used(tiny_openclip):
    """A new mode is one registered function; the backbone runs it by name and --dense-mode accepts it."""
    from llmseg.stage2.backbones.dense_modes import DENSE_MODES
    from llmseg.stage2.config import MethodConfig

    @DENSE_MODES.register("value-only-test", help="out_proj(v) plus the residual")
    def value_only(parts):
        return parts.residual(parts.out_proj(parts.v))

    try:
        backbone = tiny_openclip("vanilla")
        images = torch.randn(1, 3, 64, 64)
        _, dense = backbone.encode_image(images, dense_mode="value-only-test")
        _, plain = backbone.encode_image(images, dense_mode="maskclip")
        assert (dense - plain).abs().max() > 1e-3  # the residual makes it differ from maskclip
        assert MethodConfig(random_weights=True, dense_mode="value-only-test").dense_mode == "value-only-test"
        with torch.no_grad():  # written out: x + out_proj(v) after ln_post/proj
            v = backbone.model.visual
            blocks = list(v.transformer.resblocks)
            x = v.conv1(images).flatten(2).transpose(1, 2)
            x = torch.cat([v.class_embedding.reshape(1, 1, -1), x], 1) + v.positional_embedding
            x = v.ln_pre(x)
            for blk in blocks[:-1]:
                x = blk(x)
            last = blocks[-1]
            val = F.linear(last.ln_1(x), last.attn.in_proj_weight, last.attn.in_proj_bias).chunk(3, -1)[2]
            out = x + last.attn.out_proj(val)
            ref = F.normalize(v.ln_post(out[:, 1:]) @ v.proj, dim=-1).reshape(1, 4, 4, -1)
        torch.testing.assert_close(dense, ref, atol=1e-5, rtol=0)
    finally:
        DENSE_MODES.unregister("value-only-test")


def test_unknown_dense_mode_lists_the_registered_ones(tiny_openclip):
    from llmseg.errors import ConfigError

    with pytest.raises(ConfigError, match="naclip"):
        tiny_openclip("vanilla").encode_image(torch.randn(1, 3, 64, 64), dense_mode="nope")


def test_two_methods_on_one_backbone_keep_their_own_modes(tiny_openclip):
    """build_method gives each method a view; the backbone and its model are never changed."""
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.methods import build_method

    backbone = tiny_openclip("vanilla", seed=4)
    state_before = {k: t.clone() for k, t in backbone.model.state_dict().items()}
    modules_before = [type(m) for m in backbone.model.modules()]
    classes = ["cat", "dog"]
    a = build_method(MethodConfig(random_weights=True, preset="sclip", templates="single"), classes, backbone=backbone)
    b = build_method(MethodConfig(random_weights=True, preset="naclip", templates="single", naclip_std=2.0), classes, backbone=backbone)
    images = torch.randn(1, 3, 64, 96)
    rule = a.backbone.pos_embed
    _, da = a.backbone.encode_image(images)
    _, db = b.backbone.encode_image(images)
    _, ea = backbone.encode_image(images, dense_mode="sclip", pos_embed=rule)
    _, eb = backbone.encode_image(images, dense_mode="naclip", naclip_std=2.0, pos_embed=rule)
    torch.testing.assert_close(da, ea, atol=0, rtol=0)
    torch.testing.assert_close(db, eb, atol=0, rtol=0)
    _, e5 = backbone.encode_image(images, dense_mode="naclip", naclip_std=5.0, pos_embed=rule)
    assert (db - e5).abs().max() > 1e-4  # the view's std is used
    assert backbone.dense_mode == "vanilla" and a.backbone.dense_mode == "sclip" and b.backbone.dense_mode == "naclip"
    assert a.backbone.text_memory is backbone.text_memory  # the text cache is shared
    assert [type(m) for m in backbone.model.modules()] == modules_before
    assert all(torch.equal(state_before[k], t) for k, t in backbone.model.state_dict().items())
    with pytest.raises(AttributeError, match="read-only"):
        a.backbone.dense_mode = "vanilla"
    assert a.describe()["backbone"]["dense_mode"] == "sclip" and b.describe()["backbone"]["naclip_std"] == 2.0


@pytest.mark.parametrize("vision_extra", [{"pool_type": "avg"}, {"final_ln_after_pool": True}, {}],
                         ids=["avg", "ln-after-pool", "tok"])
@pytest.mark.parametrize("mode", ["vanilla", "clearclip"])
def test_pooling_follows_open_clip_encode_image(tmp_path, vision_extra, mode):
    """The global vector is computed from public modules the way open_clip pools (pool_type, ln_post order)."""
    import json

    import open_clip

    from llmseg.stage2.backbones.openclip import OpenClipBackbone

    name = "LlmsegPool-" + "-".join(f"{k}{v}" for k, v in vision_extra.items()) + "-16"
    cfg = {"embed_dim": 32,
           "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 16, **vision_extra},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    backbone = OpenClipBackbone(name, None, dense_mode=mode, init_seed=2)
    images = torch.randn(2, 3, 64, 64)
    pooled, _ = backbone.encode_image(images)
    with torch.no_grad():
        expected = backbone.model.encode_image(images, normalize=True)
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=0)
