"""Pictures: palettes against the published colour tables, overlay pixels against a float64 blend,
legend placement and contents, palette PNGs read back from disk."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

from llmseg.stage2.pictures.palettes import (
    CITYSCAPES,
    IGNORE_COLOR,
    _srgb_to_lab,
    distinct_palette,
    palette_for,
    voc_palette,
)
from llmseg.stage2.pictures.visualize import (
    BOUNDARY_COLOR,
    area_shares,
    boundary_mask,
    label_png,
    overlay,
    save_label_png,
    subclass_overlay,
)


def _scene(h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    labels = np.zeros((h, w), np.int64)
    labels[:, w // 2 :] = 2  # half the image
    labels[10:40, 10:40] = 1  # a 30x30 square
    return image, labels


def _colors_in(region: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(int(v) for v in c) for c in np.unique(region.reshape(-1, 3), axis=0)}


def test_voc_palette_known_colours():
    pal = voc_palette()
    # VOC devkit colours: background, aeroplane, bicycle, dog, person, tvmonitor, and 255 (void)
    assert pal[0].tolist() == [0, 0, 0]
    assert pal[1].tolist() == [128, 0, 0]
    assert pal[2].tolist() == [0, 128, 0]
    assert pal[12].tolist() == [64, 0, 128]
    assert pal[15].tolist() == [192, 128, 128]
    assert pal[20].tolist() == [0, 64, 128]
    assert pal[255].tolist() == list(IGNORE_COLOR)
    assert len(_colors_in(pal[None])) == 256


def test_dataset_palettes():
    assert palette_for(["background", "aeroplane"], "pascal_voc").tolist() == [[0, 0, 0], [128, 0, 0]]
    voc20 = palette_for([f"c{i}" for i in range(20)], "pascal_voc20")
    assert voc20[0].tolist() == [128, 0, 0] and voc20[14].tolist() == [192, 128, 128]  # person keeps its colour
    city = palette_for([f"c{i}" for i in range(19)], "cityscapes")
    assert city[0].tolist() == [128, 64, 128] and city[13].tolist() == [0, 0, 142] and len(CITYSCAPES) == 19


def test_distinct_palette_is_fixed_and_separated():
    a = distinct_palette(40)
    assert np.array_equal(a, distinct_palette(40))
    assert np.array_equal(distinct_palette(10), a[:10])
    lab = _srgb_to_lab(a[:20]).astype(np.float64)
    closest = min(np.linalg.norm(lab[i] - lab[j]) for i, j in itertools.combinations(range(20), 2))
    assert closest > 25.0, closest
    assert [0, 0, 0] not in a.tolist() and [255, 255, 255] not in a.tolist()
    user = palette_for(["background", "cat", "dog"])
    assert user[0].tolist() == [0, 0, 0] and np.array_equal(user[1:], distinct_palette(2))


def test_srgb_to_lab_reference_points():
    lab = _srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]], np.uint8))
    assert np.allclose(lab[0], [100.0, 0.0, 0.0], atol=0.01)
    assert np.allclose(lab[1], [0.0, 0.0, 0.0], atol=1e-6)
    assert np.allclose(lab[2], [53.24, 80.09, 67.20], atol=0.05)  # textbook sRGB red in CIELAB (D65)


def test_area_shares_match_counting():
    _, labels = _scene()
    shares = area_shares(labels, 3)
    total = labels.size
    assert list(shares) == [2, 0, 1]  # largest first
    for cls in range(3):
        assert shares[cls] == pytest.approx((labels == cls).sum() / total)
    with_ignore = labels.copy()
    with_ignore[0, :] = 255
    assert 255 not in area_shares(with_ignore, 3)


def test_boundary_mask_marks_label_changes():
    labels = np.zeros((6, 6), np.int64)
    labels[:, 3:] = 1
    mask = boundary_mask(labels)
    assert mask[:, 2].all() and mask.sum() == 6
    assert boundary_mask(labels, thickness=2)[:, 1:4].all() and boundary_mask(labels, thickness=2).sum() == 18


def test_overlay_blend_boundaries_and_legend():
    image, labels = _scene()
    names = ["background", "cat", "dog"]
    colors = palette_for(names)
    pic = overlay(image, labels, names)
    h, w = labels.shape
    assert pic.mode == "RGB" and pic.width > w and pic.height >= h
    arr = np.asarray(pic)
    photo = arr[:h, :w]
    # blend pixels against a float64 reference, away from the boundaries
    edge = boundary_mask(labels)
    expected = np.rint(0.5 * image.astype(np.float64) + 0.5 * colors[labels].astype(np.float64))
    assert np.abs(photo[~edge].astype(np.float64) - expected[~edge]).max() <= 1
    assert (photo[edge] == BOUNDARY_COLOR).all()
    # the legend is beside the photo and shows the colours of the classes present
    legend = arr[:, w:]
    found = _colors_in(legend)
    for c in colors:
        assert tuple(int(v) for v in c) in found


def test_overlay_legend_lists_only_present_classes():
    image, labels = _scene()
    names = ["background", "cat", "dog", "unicorn"]
    colors = palette_for(names)
    legend = np.asarray(overlay(image, labels, names))[:, labels.shape[1] :]
    assert tuple(int(v) for v in colors[3]) not in _colors_in(legend)


def test_overlay_leaves_unlabelled_pixels_alone():
    image, labels = _scene()
    labels = labels.copy()
    labels[60:80, 5:25] = 255
    pic = np.asarray(overlay(image, labels, ["a", "b", "c"], boundaries=False, legend=False))
    assert pic.shape == image.shape
    assert np.array_equal(pic[61:79, 6:24], image[61:79, 6:24])


def test_overlay_accepts_pil_and_rejects_mismatched_labels():
    image, labels = _scene()
    from_pil = overlay(Image.fromarray(image), labels, ["a", "b", "c"])
    assert np.array_equal(np.asarray(from_pil), np.asarray(overlay(image, labels, ["a", "b", "c"])))
    with pytest.raises(ValueError, match="shape"):
        overlay(image, labels[:-1], ["a", "b", "c"])


def test_many_classes_legend_wraps_into_columns():
    image = np.zeros((40, 40, 3), np.uint8)
    labels = np.arange(40 * 40).reshape(40, 40) % 30
    pic = overlay(image, labels, [f"class{i}" for i in range(30)])
    assert pic.height < 400  # 30 rows would not fit in one column of a short picture
    assert len(_colors_in(np.asarray(pic)[:, 40:]) & {tuple(map(int, c)) for c in palette_for([str(i) for i in range(30)])}) == 30


def test_label_png_roundtrip(tmp_path):
    _, labels = _scene()
    labels = labels.copy()
    labels[0, 0] = -1
    colors = palette_for(["background", "aeroplane", "bicycle"], "pascal_voc")
    path = save_label_png(tmp_path / "x.png", labels, colors)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]  # no temporary left behind
    with Image.open(path) as img:
        assert img.mode == "P"
        values = np.asarray(img)
        palette = np.array(img.getpalette()[: 256 * 3]).reshape(256, 3)
    assert values[0, 0] == 255 and np.array_equal(values[1:], labels[1:])
    assert palette[:3].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    assert palette[255].tolist() == list(IGNORE_COLOR)
    with pytest.raises(ValueError, match="0..255"):
        label_png(np.full((2, 2), 300), colors)


def test_subclass_overlay_legend():
    image, labels = _scene()
    sub = np.full(labels.shape, -1, np.int32)
    sub[labels == 1] = 1
    sub[labels == 2] = 3
    names = ["tabby", "siamese", "beagle", "poodle"]
    pic = subclass_overlay(image, sub, names, [0, 0, 1, 1], ["cat", "dog"])
    colors = palette_for(names)
    h, w = labels.shape
    legend = _colors_in(np.asarray(pic)[:, w:])
    assert tuple(map(int, colors[1])) in legend and tuple(map(int, colors[3])) in legend
    assert tuple(map(int, colors[0])) not in legend
    photo = np.asarray(pic)[:h, :w]
    assert np.array_equal(photo[60:90, 2:30], image[60:90, 2:30])  # no subclass -> untouched


def test_legend_text_never_shows_zero_for_a_present_class():
    from llmseg.stage2.pictures.visualize import LegendEntry

    assert LegendEntry("cat", (0, 0, 0), 0.0004).text == "cat  <0.1%"
    assert LegendEntry("cat", (0, 0, 0), 0.0005).text == "cat  0.1%"
    assert LegendEntry("cat", (0, 0, 0), 0.5).text == "cat  50.0%"


def test_comparison_panels_are_the_blends_of_each_map_in_one_palette():
    from llmseg.stage2.pictures.visualize import comparison

    image, truth = _scene()
    pred = truth.copy()
    pred[50:70, 5:30] = 1
    pred[0:5, :] = 255  # ignore: left uncoloured
    colors = np.array([[10, 200, 30], [250, 0, 0], [0, 0, 250]], np.uint8)
    picture = np.asarray(comparison(image, [("ground truth", truth), ("prediction", pred)], ["a", "b", "c"], colors,
                                    gap=4, alpha=0.5))
    h, w = truth.shape
    top = next(y for y in range(picture.shape[0]) if np.array_equal(picture[y:y + h, :w], image))
    assert top > 0  # a title strip above the panels
    for panel, labels in enumerate((truth, pred), start=1):
        x = panel * (w + 4)
        got = picture[top:top + h, x:x + w].astype(np.float64)
        painted = np.zeros((h, w, 3))
        valid = labels < 3
        painted[valid] = colors[labels[valid]]
        want = np.where(valid[..., None], 0.5 * image + 0.5 * painted, image.astype(np.float64))
        edge = boundary_mask(labels, max(1, round(min(labels.shape) / 256)))
        want[edge] = BOUNDARY_COLOR
        np.testing.assert_array_equal(got, np.rint(want))
    legend = picture[top:, 3 * (w + 4):]
    found = {tuple(int(v) for v in px) for px in legend.reshape(-1, 3)}
    assert {tuple(c) for c in colors.tolist()} <= found  # every class present in either map has a swatch
