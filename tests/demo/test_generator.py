"""The procedural world: determinism, masks that match what was drawn, captions in fine-grained words only."""

from __future__ import annotations

import numpy as np
import pytest

from llmseg.stage2.demo.generator import (
    BACKGROUNDS,
    COLOURS,
    FAMILIES,
    SHAPES,
    TEXTURES,
    boundary,
    caption,
    family_labels,
    region_captions,
    render_scene,
)


def test_same_seed_same_bytes_and_other_seed_differs():
    a = render_scene(5, 3)
    b = render_scene(5, 3)
    assert a.image.tobytes() == b.image.tobytes()
    assert [m.tobytes() for m in a.masks] == [m.tobytes() for m in b.masks]
    assert caption(a, 5, 3) == caption(b, 5, 3)
    assert render_scene(6, 3).image.tobytes() != a.image.tobytes()
    assert render_scene(5, 4).image.tobytes() != a.image.tobytes()


@pytest.mark.parametrize("index", range(12))
def test_masks_match_the_drawn_paint(index):
    scene = render_scene(11, index)
    assert 1 <= len(scene.objects) <= 4
    covered = np.zeros(scene.image.shape[:2], dtype=int)
    for identity, mask in zip(scene.objects, scene.masks, strict=True):
        assert mask.sum() > 0.01 * mask.size
        covered += mask
        interior = mask & ~boundary(mask, 1)
        pixels = scene.image[interior].astype(float)
        rgb = np.array(COLOURS[identity.colour][0], float)
        # every painted pixel is the colour or its half-dark shade (stripes, dots), within the paint noise
        d_full = np.abs(pixels - rgb).max(axis=1)
        d_dark = np.abs(pixels - 0.5 * rgb).max(axis=1)
        assert np.mean(np.minimum(d_full, d_dark) <= 16) > 0.99
        if identity.texture == "plain":
            assert np.mean(d_full <= 16) > 0.99
        else:
            assert 0.1 < np.mean(d_dark <= 16) < 0.9
    assert covered.max() <= 1, "objects must not overlap"
    # outside every mask the neutral background: low saturation
    outside = scene.image[covered == 0].astype(int)
    saturation = outside.max(axis=1) - outside.min(axis=1)
    assert np.mean(saturation < 60) > 0.99


def test_family_labels_follow_colour_families():
    scene = render_scene(3, 7)
    labels = family_labels(scene)
    for identity, mask in zip(scene.objects, scene.masks, strict=True):
        assert np.all(labels[mask] == 1 + FAMILIES.index(COLOURS[identity.colour][1]))
    assert np.all(labels[scene.instance_map() == 0] == 0)


def test_captions_name_every_object_in_fine_grained_words_only():
    vocabulary = set(COLOURS) | set(SHAPES) | set(TEXTURES) | {w for b in BACKGROUNDS for w in b.split()}
    for index in range(40):
        scene = render_scene(9, index)
        text = caption(scene, 9, index)
        for identity in scene.objects:
            assert identity.colour in text
        words = set(text.replace(",", " ").replace(".", " ").split())
        assert not words & {"warm", "cool", "warm-coloured", "cool-coloured", "coloured", "shape", "background"}
        assert words - {"a", "an", "and", "on", "of", "photo", "picture", "image", "showing"} <= vocabulary


def test_region_captions_name_each_object_then_the_background():
    scene = render_scene(4, 2)
    texts = region_captions(scene, 4, 2)
    assert len(texts) == len(scene.objects) + 1
    for identity, text in zip(scene.objects, texts, strict=False):
        assert text.startswith("a photo of a ") and identity.colour in text
    assert texts[-1] == f"a photo of a {scene.background}."


def test_size_only_changes_resolution():
    small, large = render_scene(2, 1, size=64), render_scene(2, 1, size=128)
    assert small.image.shape == (64, 64, 3) and large.image.shape == (128, 128, 3)
    assert small.objects == large.objects and small.background == large.background
    # the masks agree once the large one is pooled 2x2 (majority)
    pooled = large.masks[0].reshape(64, 2, 64, 2).mean(axis=(1, 3)) > 0.5
    assert np.mean(pooled == small.masks[0]) > 0.97
