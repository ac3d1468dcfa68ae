"""`llmseg data convert pc459`: PASCAL Context full .mat LabelMaps -> annotations_detectron2/pc459_val TIFFs."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

scipy_io = pytest.importorskip("scipy.io")

from llmseg.cli import app  # noqa: E402
from llmseg.datasets import get_dataset  # noqa: E402
from llmseg.stage2.data import BenchmarkDataset, list_samples, load_label  # noqa: E402
from llmseg.stage2.data.check import check_dataset  # noqa: E402
from llmseg.stage2.data.convert import convert, find_conversion_tasks  # noqa: E402
from llmseg.stage2.data.readers import DataError  # noqa: E402

runner = CliRunner()
SPEC = get_dataset("pc459")
SHAPES = {"2008_000002": (13, 17), "2008_000007": (9, 21), "2010_006084": (16, 11)}


def _voc(data_root):
    return SPEC.data_dir(data_root)  # data_root/VOCdevkit/VOC2010


def _write_labels_txt(voc, names):
    """labels.txt of the Context release: "id: name", raw id 1 first."""
    (voc / "labels.txt").write_text("".join(f"{i}: {name}\n" for i, name in enumerate(names, 1)))


def _raw_tree(data_root, *, split="pascalcontext_val.txt", labels=True, seed=0):
    """VOC2010 with the Context release unpacked: JPEGImages, trainval/*.mat, a val list, labels.txt."""
    rng = np.random.default_rng(seed)
    voc = _voc(data_root)
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "trainval").mkdir()
    raws = {}
    for stem, (h, w) in {**SHAPES, "2008_000008": (8, 8)}.items():  # 2008_000008: a train image, not in the split
        raw = rng.integers(0, 460, (h, w)).astype(np.uint16)
        raw.flat[:3] = (0, 1, 459)  # unlabeled, the first and the last class
        scipy_io.savemat(voc / "trainval" / f"{stem}.mat", {"LabelMap": raw})
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(voc / "JPEGImages" / f"{stem}.jpg")
        raws[stem] = raw
    del raws["2008_000008"]
    split_path = voc / split
    split_path.parent.mkdir(parents=True, exist_ok=True)
    split_path.write_text("".join(f"{s}\n" for s in SHAPES))
    if labels:
        _write_labels_txt(voc, SPEC.classes)
    return voc, raws


def _expected(raw):
    """Independent of the converter: raw id r names labels.txt line r; its train id is that name's index in classes.txt."""
    by_raw = {0: 65535, **{r: SPEC.classes.index(name) for r, name in enumerate(SPEC.classes, 1)}}
    return np.vectorize(lambda v: by_raw[int(v)])(raw).astype(np.int64)


def _label_path(voc, stem):
    return voc / SPEC.layout.ann_dir / f"{stem}.tif"


def test_convert_python_then_cli_again_is_a_no_op_and_the_folder_reads_as_pc459(tmp_path):
    data_root = tmp_path / "data"
    voc, raws = _raw_tree(data_root)
    report = convert("pc459", voc, workers=0, progress=False)
    assert report.errors == [] and sorted(report.written) == sorted(str(_label_path(voc, s)) for s in SHAPES)
    assert not _label_path(voc, "2008_000008").exists()  # only the val split is converted
    for stem, raw in raws.items():
        with Image.open(_label_path(voc, stem)) as img:
            assert img.mode == "I;16" and img.size == (raw.shape[1], raw.shape[0])
            label = np.array(img)
        assert label.dtype == np.uint16 and np.array_equal(label.astype(np.int64), _expected(raw))
        assert {0, 458, 65535} <= set(np.unique(label).tolist())
    stamps = {s: _label_path(voc, s).stat().st_mtime_ns for s in SHAPES}
    res = runner.invoke(app, ["data", "convert", "pc459", str(voc), "--workers", "0", "--no-progress"])
    assert res.exit_code == 0 and "pc459: 0 written, 3 already up to date, 0 errors" in res.output, res.output
    assert {s: _label_path(voc, s).stat().st_mtime_ns for s in SHAPES} == stamps  # nothing rewritten

    refs = list_samples(SPEC, data_root)  # the pc459 layout: the samples are the label files
    assert [r.stem for r in refs] == sorted(SHAPES)
    for ref in refs:
        assert np.array_equal(load_label(ref.label_path, ignore_index=SPEC.ignore_index), _expected(raws[ref.stem]))
        item = BenchmarkDataset(SPEC, data_root, samples=[ref])[0]
        assert item["image"].shape == (*SHAPES[ref.stem], 3)
    check = check_dataset(SPEC, data_root, workers=0, progress=False)
    assert check.ok and check.num_samples == 3, check.problems


def test_converted_labels_score_like_a_direct_miou(tmp_path):
    data_root = tmp_path / "data"
    voc, raws = _raw_tree(data_root, seed=1)
    res = runner.invoke(app, ["data", "convert", "pc459", str(voc), "--workers", "2", "--no-progress"])  # worker processes
    assert res.exit_code == 0 and "3 written" in res.output, res.output
    rng = np.random.default_rng(2)
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    inter, union = np.zeros(459), np.zeros(459)
    for stem, raw in raws.items():
        raw = raw.astype(np.int64)
        truth = raw - 1  # straight from the .mat: valid where raw > 0
        pred = np.where(rng.random(raw.shape) < 0.6, np.maximum(truth, 0), rng.integers(0, 459, raw.shape))
        Image.fromarray(pred.astype(np.uint16)).save(pred_dir / f"{stem}.tif", format="TIFF")
        valid = raw > 0
        for k in range(459):
            inter[k] += ((pred == k) & (truth == k) & valid).sum()
            union[k] += (((pred == k) | (truth == k)) & valid).sum()
    with np.errstate(invalid="ignore"):
        expected = 100 * float(np.nanmean(inter / np.where(union > 0, union, np.nan)))
    out = tmp_path / "score"
    res = runner.invoke(app, ["score", "--dataset", "pc459", "--pred-dir", str(pred_dir), "--data-root", str(data_root),
                              "--out", str(out), "--num-workers", "0", "--no-progress"])
    assert res.exit_code == 0, res.output
    scored = json.loads((out / "metrics.json").read_text())
    assert scored["mIoU"] == pytest.approx(expected, abs=5e-5) and scored["num_images"] == 3  # the report keeps 4 decimals
    assert scored["num_pixels"] == sum(int((r > 0).sum()) for r in raws.values())


def test_bad_inputs_are_reported_naming_the_file_and_the_rest_converted(tmp_path):
    voc, raws = _raw_tree(tmp_path / "data", labels=False)  # no labels.txt: the conversion does not need it
    corrupt = voc / "trainval" / "2008_000002.mat"
    corrupt.write_bytes(b"MATLAB 5.0 MAT-file, truncated" + bytes(40))
    past = voc / "trainval" / "2008_000007.mat"
    raw = raws["2008_000007"].copy()
    raw[0, 0] = 460  # not one of the 459 classes
    scipy_io.savemat(past, {"LabelMap": raw})
    missing = voc / "trainval" / "2011_000001.mat"  # listed in the split, absent from trainval/
    with (voc / "pascalcontext_val.txt").open("a") as f:
        f.write("2011_000001\n")
    report = convert("pc459", voc, workers=0, progress=False)
    assert report.written == [str(_label_path(voc, "2010_006084"))]
    assert len(report.errors) == 3
    for path, error in zip((corrupt, past, missing), report.errors, strict=True):
        assert str(path) in error, error
    assert "values outside 0..459: [460]" in report.errors[1] and "not found" in report.errors[2]
    assert not _label_path(voc, "2008_000002").exists() and not _label_path(voc, "2008_000007").exists()
    res = runner.invoke(app, ["data", "convert", "pc459", str(voc), "--workers", "0", "--no-progress"])
    assert res.exit_code == 1 and str(corrupt) in res.output and "0 written, 1 already up to date, 3 errors" in res.output


def test_an_image_missing_or_of_another_size_is_an_error(tmp_path):
    voc, _ = _raw_tree(tmp_path / "data")
    (voc / "JPEGImages" / "2008_000002.jpg").unlink()
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(voc / "JPEGImages" / "2008_000007.jpg")
    report = convert("pc459", voc, workers=0, progress=False)
    assert len(report.written) == 1 and len(report.errors) == 2
    assert "image not found" in report.errors[0] and "2008_000002.jpg" in report.errors[0]
    assert "is 21x9 but" in report.errors[1] and "2008_000007.jpg is 5x5" in report.errors[1]


def test_the_mmseg_split_file_is_read_when_catseg_list_is_absent(tmp_path):
    voc, raws = _raw_tree(tmp_path / "data", split="ImageSets/SegmentationContext/val.txt")
    tasks = find_conversion_tasks("pc459", voc)
    assert [t[1] for t in tasks] == [str(voc / "trainval" / f"{s}.mat") for s in SHAPES]
    assert convert("pc459", voc, workers=0, progress=False).errors == []


def test_missing_folders_split_or_a_disagreeing_labels_txt_stop_before_converting(tmp_path):
    voc, _ = _raw_tree(tmp_path / "data")
    names = list(SPEC.classes)
    names[10], names[11] = names[11], names[10]  # ids 11 and 12 swapped: raw id - 1 would name the wrong class
    _write_labels_txt(voc, names)
    with pytest.raises(DataError, match=r"labels\.txt: 2 names disagree .*id 11 is 'bambooweaving' but class 10 is 'balloon'"):
        find_conversion_tasks("pc459", voc)
    _write_labels_txt(voc, names[:400])
    with pytest.raises(DataError, match=r"expected ids 1\.\.459"):
        find_conversion_tasks("pc459", voc)
    (voc / "labels.txt").unlink()
    (voc / "pascalcontext_val.txt").unlink()
    res = runner.invoke(app, ["data", "convert", "pc459", str(voc), "--no-progress"])
    assert res.exit_code == 2 and "pascalcontext_val.txt" in res.output and "SegmentationContext/val.txt" in res.output
    with pytest.raises(DataError, match="no trainval/ folder"):
        find_conversion_tasks("pc459", tmp_path)
    assert not (voc / "annotations_detectron2").exists()


def test_without_scipy_the_error_names_the_extra(tmp_path, monkeypatch):
    voc, _ = _raw_tree(tmp_path / "data")
    monkeypatch.setitem(sys.modules, "scipy", None)  # import scipy.io now raises ImportError
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(DataError, match=r"pip install 'llmseg\[convert\]'"):
        find_conversion_tasks("pc459", voc)
    res = runner.invoke(app, ["data", "convert", "pc459", str(voc), "--no-progress"])
    assert res.exit_code == 2 and "llmseg[convert]" in res.output, res.output
