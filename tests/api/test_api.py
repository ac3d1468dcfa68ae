"""The Python API: inputs of every kind, text embeddings computed once, outputs checked against
direct computations on the arrays, and every bad-input rule."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest
import torch
from PIL import Image

from llmseg.labelset import LabelSet
from llmseg.stage2.api import Segmenter, SegmentInputError, parse_classes, to_rgb
from llmseg.stage2.pictures.palettes import palette_for

CLASSES = ["red thing", "blue thing", "grey thing"]
LABEL_SET = {
    "red thing": ["red car", "red apple"],
    "blue thing": ["blue sky", "blue sea", "blue door"],
    "grey thing": ["grey road"],
}


# --------------------------------------------------------------------------- inputs


def test_to_rgb_conversions(make_photo, tmp_path):
    rgb = make_photo(20, 30)
    assert np.array_equal(to_rgb(Image.fromarray(rgb)), rgb)
    assert np.array_equal(to_rgb(Image.fromarray(rgb).convert("RGBA")), rgb)
    chw_float = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0
    assert np.array_equal(to_rgb(chw_float), rgb)
    assert np.array_equal(to_rgb(torch.from_numpy(rgb)), rgb)  # HxWx3 uint8 tensor
    assert np.array_equal(to_rgb(rgb.astype(np.float64) / 255.0), rgb)
    grey = rgb[:, :, 0]
    assert np.array_equal(to_rgb(grey), np.repeat(grey[:, :, None], 3, axis=2))
    Image.fromarray(rgb).save(tmp_path / "x.png")
    assert np.array_equal(to_rgb(tmp_path / "x.png"), rgb)
    assert np.array_equal(to_rgb(str(tmp_path / "x.png")), rgb)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((4, 4, 5), np.uint8), "HxWx3"),
        (np.zeros((4, 4, 3), np.int32), "int32"),
        (np.full((4, 4, 3), 2.0), r"\[0, 1\]"),
        (torch.zeros(1, 3, 8, 8), "HxWx3"),
        ("no/such/image.jpg", "not found"),
        (12345, "unsupported image type"),
    ],
)
def test_to_rgb_rejects(bad, match):
    with pytest.raises(SegmentInputError, match=match):
        to_rgb(bad)


def test_to_rgb_unreadable_file(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"this is not a jpeg")
    with pytest.raises(SegmentInputError, match="broken.jpg"):
        to_rgb(path)


def test_parse_classes():
    assert parse_classes("cat, dog ,sofa,") == ["cat", "dog", "sofa"]
    assert parse_classes(["cat", " dog "]) == ["cat", "dog"]
    with pytest.raises(SegmentInputError, match="empty"):
        parse_classes("")
    with pytest.raises(SegmentInputError, match="empty"):
        parse_classes([])
    with pytest.raises(SegmentInputError, match="class 2 is an empty name"):
        parse_classes("cat, , dog")
    with pytest.raises(SegmentInputError, match="'cat' is given twice"):
        parse_classes("cat, dog, cat")


# --------------------------------------------------------------------------- segmentation


def test_every_input_kind_gives_the_same_result(segmenter, make_photo, tmp_path):
    rgb = make_photo(40, 56)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    reference = segmenter(rgb, classes=CLASSES)
    h, w = rgb.shape[:2]
    assert reference.labels.shape == (h, w) and reference.labels.dtype == np.int64
    assert reference.scores.shape == (len(CLASSES), h, w)
    assert reference.subclass.shape == (h, w) and (reference.subclass == -1).all()
    assert reference.labels.min() >= 0 and reference.labels.max() < len(CLASSES)
    for other in (
        Image.fromarray(rgb),
        torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0,
        torch.from_numpy(rgb),
        tmp_path / "p.png",
    ):
        out = segmenter(other, classes=", ".join(CLASSES))
        assert np.array_equal(out.labels, reference.labels)
        assert np.allclose(out.scores, reference.scores, atol=1e-5)


def test_text_embeddings_are_computed_once(segmenter, make_photo):
    """Count calls through a wrapper around the real backbone's encode_text."""
    backbone = segmenter.backbone
    real = backbone.encode_text
    calls: list[int] = []

    def counting(texts, *args, **kwargs):
        calls.append(len(texts))
        return real(texts, *args, **kwargs)

    fresh = [f"thing {uuid.uuid4().hex[:8]}", f"stuff {uuid.uuid4().hex[:8]}"]  # never embedded before
    backbone.encode_text = counting
    try:
        first = segmenter(make_photo(32, 32, seed=1), classes=fresh)
        assert calls, "the first call must embed the new class names"
        seen = len(calls)
        method = segmenter.method_for(fresh)[0]
        second = segmenter(make_photo(36, 44, seed=2), classes=fresh)
        third = segmenter(make_photo(32, 32, seed=1), classes=", ".join(fresh))
        assert len(calls) == seen, "same classes: the text encoder must not run again"
        assert segmenter.method_for(fresh)[0] is method
        assert np.array_equal(first.labels, third.labels)
        assert second.labels.shape == (36, 44)
    finally:
        del backbone.encode_text  # back to the class's method
    assert backbone.encode_text.__func__ is type(backbone).encode_text


def test_label_set_forms_agree(segmenter, make_photo, tmp_path):
    rgb = make_photo(40, 40)
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(LABEL_SET))
    outs = [segmenter(rgb, classes=CLASSES, label_set=form) for form in (LABEL_SET, LabelSet(LABEL_SET), path, str(path))]
    flat = [s for subs in LABEL_SET.values() for s in subs]
    for out in outs:
        assert out.subclass_names == flat
        assert out.subclass_owners == [0, 0, 1, 1, 1, 2]
        assert np.array_equal(out.labels, outs[0].labels)
        assert np.array_equal(out.subclass, outs[0].subclass)
    sub = outs[0].subclass
    assert sub.min() >= -1 and sub.max() < len(flat)
    # a winning subclass belongs to the pixel's class
    has = sub >= 0
    owners = np.array(outs[0].subclass_owners)
    assert np.array_equal(owners[sub[has]], outs[0].labels[has])


def test_label_set_mismatch_names_the_class(segmenter, make_photo, tmp_path):
    rgb = make_photo(16, 16)
    with pytest.raises(SegmentInputError, match="grey thing"):
        segmenter(rgb, classes=CLASSES, label_set={k: v for k, v in LABEL_SET.items() if k != "grey thing"})
    with pytest.raises(SegmentInputError, match="green thing"):
        segmenter(rgb, classes=CLASSES, label_set={**LABEL_SET, "green thing": ["lawn"]})
    with pytest.raises(SegmentInputError, match="not found"):
        segmenter(rgb, classes=CLASSES, label_set=tmp_path / "missing.json")
    with pytest.raises(SegmentInputError, match="twice"):
        segmenter(rgb, classes="cat, cat")


def test_summary_matches_the_arrays(segmenter, make_photo):
    out = segmenter(make_photo(40, 60), classes=CLASSES, label_set=LABEL_SET)
    summary = out.summary()
    assert summary["height"] == 40 and summary["width"] == 60 and summary["classes"] == CLASSES
    assert sum(entry["pixel_share"] for entry in summary["present"]) == pytest.approx(1.0, abs=1e-5)
    for entry in summary["present"]:
        region = out.labels == entry["id"]
        assert entry["name"] == CLASSES[entry["id"]]
        assert entry["pixel_share"] == pytest.approx(region.mean(), abs=1e-6)
        assert entry["mean_score"] == pytest.approx(float(np.mean(out.scores[entry["id"]][region], dtype=np.float64)), abs=1e-5)
        names = [s["name"] for s in entry["subclasses"]]
        assert set(names) <= set(LABEL_SET[entry["name"]])
        counts = {n: int((out.subclass[region] == out.subclass_names.index(n)).sum()) for n in names}
        for s in entry["subclasses"]:
            assert s["share_of_class"] == pytest.approx(counts[s["name"]] / region.sum(), abs=1e-6)
    shares = [e["pixel_share"] for e in summary["present"]]
    assert shares == sorted(shares, reverse=True)


def test_save_writes_the_four_files(segmenter, make_photo, tmp_path):
    rgb = make_photo(40, 60)
    out = segmenter(rgb, classes=CLASSES, label_set=LABEL_SET)
    written = out.save(tmp_path / "o", "pic")
    assert sorted(written) == ["pic.json", "pic.png", "pic_overlay.png", "pic_subclass.png"]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(written)  # no temporaries left
    with Image.open(written["pic.png"]) as img:
        assert img.mode == "P" and img.size == (60, 40)
        assert np.array_equal(np.asarray(img), out.labels)
        palette = np.array(img.getpalette()[:9]).reshape(3, 3)
    assert np.array_equal(palette, palette_for(CLASSES))
    with Image.open(written["pic_overlay.png"]) as img:
        assert img.width > 60 and img.height >= 40
        legend = np.asarray(img.convert("RGB"))[:, 60:].reshape(-1, 3)
    present = {tuple(map(int, palette_for(CLASSES)[i])) for i in np.unique(out.labels)}
    assert present <= {tuple(map(int, c)) for c in np.unique(legend, axis=0)}
    with Image.open(written["pic_subclass.png"]) as img:
        assert img.width > 60
    assert json.loads(written["pic.json"].read_text()) == out.summary()


def test_no_subclass_picture_without_label_set(segmenter, make_photo, tmp_path):
    out = segmenter(make_photo(20, 20), classes=CLASSES)
    assert sorted(out.save(tmp_path, "a")) == ["a.json", "a.png", "a_overlay.png"]
    with pytest.raises(SegmentInputError, match="label set"):
        out.subclass_overlay()


def test_dataset_palette_and_classes(segmenter, make_photo):
    out = segmenter(make_photo(24, 24), dataset="pascal_voc20", label_set="label_sets/pascal_voc20/top5.json", )
    assert len(out.classes) == 20 and out.classes[0] == "aeroplane"
    assert out.colors[0].tolist() == [128, 0, 0]
    assert len(out.subclass_names) == 100


def test_create_rejects_bad_config():
    with pytest.raises(ValueError, match="dense_mode"):
        Segmenter.create("openclip:whatever", dense_mode="nope")


def test_package_exports_the_api():
    import llmseg.stage2
    from llmseg.stage2 import SegmentationOutput
    from llmseg.stage2 import Segmenter as Exported

    assert Exported is Segmenter and SegmentationOutput.__module__ == "llmseg.stage2.api"
    with pytest.raises(AttributeError, match="nope"):
        llmseg.stage2.nope  # noqa: B018


def test_paths_are_read_upright_but_benchmark_images_as_stored(tmp_path):
    """A phone photo stored sideways with EXIF orientation 6 is segmented as a viewer shows it."""
    from llmseg.stage2.data import load_image

    stored = np.zeros((20, 30, 3), np.uint8)
    stored[:, :10] = (255, 0, 0)  # red band on the stored image's left
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.png"
    Image.fromarray(stored).save(path, exif=exif)
    assert np.array_equal(load_image(path), stored)  # benchmarks: the stored pixels, aligned with labels
    upright = to_rgb(path)
    assert upright.shape == (30, 20, 3)
    assert np.array_equal(upright, np.rot90(stored, k=-1))  # clockwise: the red band ends up on top
    assert (upright[:10] == (255, 0, 0)).all()
