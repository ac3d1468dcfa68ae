"""The runner end to end on synthetic benchmarks with a reference method (no model needed)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from engine_refmethods import build_oracle, expected_metrics

from llmseg.datasets import bundled_datasets
from llmseg.stage2.data import DataError, load_label
from llmseg.stage2.engine.runner import RunConfig, RunError, evaluate, score

HERE = Path(__file__).resolve().parent


def _cfg(out: Path, **kw) -> RunConfig:
    return RunConfig(out=str(out), num_workers=0, progress=False, **kw)


def _assert_matches(report: dict, want: dict) -> None:
    assert report["num_images"] == want["num_images"]
    for key in ("mIoU", "mAcc", "aAcc"):
        assert report[key] == pytest.approx(want[key], abs=1e-3), key
    got_iou = [row["IoU"] for row in report["per_class"]]
    for g, w in zip(got_iou, want["IoU"], strict=True):
        assert (g is None) == (w is None) and (g is None or g == pytest.approx(w, abs=1e-3))


@pytest.mark.parametrize("name", bundled_datasets())
def test_evaluate_every_benchmark_layout(name, synthetic, tmp_path):
    root = synthetic(name, n=4)
    spec, method = build_oracle(name, root, noise=0.25)
    out = tmp_path / "out"
    report = evaluate(method, spec, root, _cfg(out, batch_size=3), extra_info={"note": "test"})
    _assert_matches(report, expected_metrics(name, root, noise=0.25))
    assert method.calls == [3, 1]  # batched as asked
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["mIoU"] == report["mIoU"] and saved["dataset"] == name
    assert saved["method"] == {"name": "oracle", "noise": 0.25, "num_classes": spec.num_classes}
    assert saved["settings"]["run"]["batch_size"] == 3 and saved["extra"] == {"note": "test"}
    assert saved["versions"]["torch"] and saved["wall_time_s"] >= 0 and saved["images_per_s"] > 0
    md = (out / "metrics.md").read_text()
    assert spec.classes[-1] in md and "mIoU" in md


@pytest.mark.slow
def test_pool_and_loader_workers_give_identical_results(synthetic, tmp_path):
    root = synthetic("pascal_voc", n=6)
    spec, method = build_oracle("pascal_voc", root)
    inline = evaluate(method, spec, root, _cfg(tmp_path / "a"))
    spec, method = build_oracle("pascal_voc", root)
    pooled = evaluate(
        method, spec, root,
        RunConfig(out=str(tmp_path / "b"), num_workers=1, post_workers=2, batch_size=2, progress=False),
    )
    a = json.loads((tmp_path / "a" / "confusion.json").read_text())["matrix"]
    b = json.loads((tmp_path / "b" / "confusion.json").read_text())["matrix"]
    assert a == b and inline["mIoU"] == pooled["mIoU"]
    _assert_matches(pooled, expected_metrics("pascal_voc", root))


def test_done_results_run_inline_without_pool(synthetic, tmp_path):
    root = synthetic("ade20k", n=3)
    spec, method = build_oracle("ade20k", root, needs_cpu=False)
    report = evaluate(method, spec, root, _cfg(tmp_path / "o", post_workers=2))
    _assert_matches(report, expected_metrics("ade20k", root))


def test_kill_and_resume_gives_identical_metrics(synthetic, tmp_path):
    root = synthetic("pascal_context", n=7)
    spec, method = build_oracle("pascal_context", root)
    full = evaluate(method, spec, root, _cfg(tmp_path / "full"))
    out = tmp_path / "killed"
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        from pathlib import Path
        from engine_refmethods import build_oracle
        from llmseg.stage2.engine.runner import RunConfig, evaluate
        spec, method = build_oracle("pascal_context", Path({str(root)!r}), kill_after=5)
        evaluate(method, spec, {str(root)!r}, RunConfig(out={str(out)!r}, num_workers=0, progress=False,
                 checkpoint_every=2, batch_size=1))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr  # SIGKILL: no chance to clean up
    state = json.loads((out / "checkpoint.json").read_text())
    assert state["finished"] and len(state["finished"]) < 7 and not state["complete"]
    assert not (out / "metrics.json").exists()
    spec, method = build_oracle("pascal_context", root)
    resumed = evaluate(method, spec, root, _cfg(out, checkpoint_every=2))
    assert sum(method.calls) == 7 - len(state["finished"])  # only the rest was computed
    assert resumed["resumed"] is True and resumed["num_images"] == 7
    assert json.loads((out / "confusion.json").read_text()) == json.loads((tmp_path / "full" / "confusion.json").read_text())
    for key in ("mIoU", "mAcc", "aAcc"):
        assert resumed[key] == full[key]
    # a finished run started again is a no-op with the same numbers
    spec, method = build_oracle("pascal_context", root)
    again = evaluate(method, spec, root, _cfg(out))
    assert method.calls == [] and again["mIoU"] == full["mIoU"]


def test_resume_refuses_other_settings_and_no_resume_starts_over(synthetic, tmp_path):
    root = synthetic("pascal_voc", n=3)
    spec, method = build_oracle("pascal_voc", root)
    evaluate(method, spec, root, _cfg(tmp_path / "o"))
    spec, other = build_oracle("pascal_voc", root, noise=0.5)
    with pytest.raises(RunError, match="other settings"):
        evaluate(other, spec, root, _cfg(tmp_path / "o"))
    report = evaluate(other, spec, root, _cfg(tmp_path / "o", resume=False))
    assert sum(other.calls) == 3 and report["resumed"] is False
    _assert_matches(report, expected_metrics("pascal_voc", root, noise=0.5))


def _break_files(root: Path) -> dict[str, str]:
    """Corrupt one image, delete one label, resize another label; returns stem -> expected text."""
    base = root / "VOCdevkit/VOC2012"
    stems = (base / "ImageSets/Segmentation/val.txt").read_text().split()
    (base / "JPEGImages" / f"{stems[0]}.jpg").write_bytes(b"not a jpeg at all")
    (base / "SegmentationClass" / f"{stems[1]}.png").unlink()
    lab = base / "SegmentationClass" / f"{stems[2]}.png"
    from PIL import Image

    with Image.open(lab) as img:
        img.crop((0, 0, 10, 10)).save(lab)
    return {stems[0]: "cannot read image", stems[1]: "label not found", stems[2]: "size mismatch"}


def test_bad_files_stop_with_the_file_named_or_are_skipped(synthetic, tmp_path):
    root = synthetic("pascal_voc", n=6)
    spec, method = build_oracle("pascal_voc", root)  # built before the damage
    broken = _break_files(root)
    first = next(iter(broken))
    with pytest.raises(DataError, match=f"{first}.jpg"):
        evaluate(method, spec, root, _cfg(tmp_path / "stop"))
    report = evaluate(method, spec, root, _cfg(tmp_path / "skip", skip_bad=True, batch_size=2))
    assert report["num_skipped"] == 3 and report["num_images"] == 3
    for item in report["skipped"]:
        assert broken[item["stem"]] in item["error"] and item["stem"] in item["error"]
    _assert_matches(report, expected_metrics("pascal_voc", root, exclude=tuple(broken)))
    assert "Skipped files" in (tmp_path / "skip" / "metrics.md").read_text()


def test_prediction_of_wrong_size_is_an_error(synthetic, tmp_path):
    from engine_refmethods import NoisyPending

    root = synthetic("cityscapes", n=2)
    spec, method = build_oracle("cityscapes", root)

    class Shrunk:
        num_classes = spec.num_classes

        def forward(self, images):
            return [NoisyPending(np.zeros((5, 5), np.int64)) for _ in images]

        def describe(self):
            return {"name": "shrunk"}

    with pytest.raises(RunError, match="prediction for .*leftImg8bit.png is 5x5"):
        evaluate(Shrunk(), spec, root, _cfg(tmp_path / "o"))


def test_save_pred_then_score_gives_the_same_metrics(synthetic, tmp_path):
    root = synthetic("cityscapes", n=5)
    spec, method = build_oracle("cityscapes", root)
    out = tmp_path / "run"
    report = evaluate(method, spec, root, _cfg(out, save_pred=True, save_vis=2))
    preds = sorted(p.relative_to(out / "pred").as_posix() for p in (out / "pred").rglob("*.png"))
    assert len(preds) == 5 and all(p.endswith("_gtFine_labelTrainIds.png") and "/" in p for p in preds)
    assert len(list((out / "vis").rglob("*.png"))) == 2
    # the saved PNG holds class ids (palette indices), not colours
    first = next((out / "pred").rglob("*.png"))
    assert load_label(first).max() < spec.num_classes
    scored = score(spec, root, out / "pred", _cfg(tmp_path / "scored"))
    for key in ("mIoU", "mAcc", "aAcc", "num_images"):
        assert scored[key] == report[key]
    assert (tmp_path / "scored" / "metrics.json").is_file() and (tmp_path / "scored" / "metrics.md").is_file()


def test_score_reports_missing_predictions(synthetic, tmp_path):
    root = synthetic("ade20k", n=3)
    spec, method = build_oracle("ade20k", root)
    evaluate(method, spec, root, _cfg(tmp_path / "run", save_pred=True))
    victim = sorted((tmp_path / "run" / "pred").glob("*.png"))[0]
    victim.unlink()
    with pytest.raises(DataError, match=f"no prediction for {victim.stem}"):
        score(spec, root, tmp_path / "run" / "pred", _cfg(tmp_path / "s"))
    report = score(spec, root, tmp_path / "run" / "pred", _cfg(tmp_path / "s", skip_bad=True))
    assert report["num_skipped"] == 1 and report["num_images"] == 2
    _assert_matches(report, expected_metrics("ade20k", root, exclude=(victim.stem,)))


def test_metrics_json_records_label_set_and_checkpoint_hashes(synthetic, tmp_path):
    import hashlib

    root = synthetic("pascal_voc", n=2)
    spec, method = build_oracle("pascal_voc", root)
    label_set = tmp_path / "top5.json"
    label_set.write_text('{"background": ["sky"]}')
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"weights")
    extra = {"method_config": {"label_set": str(label_set), "checkpoint": str(ckpt), "pretrained": "openai"}}
    report = evaluate(method, spec, root, _cfg(tmp_path / "o"), extra_info=extra)
    assert report["label_set"] == {"path": str(label_set.resolve()), "sha256": hashlib.sha256(label_set.read_bytes()).hexdigest()}
    assert report["checkpoint"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert report["pretrained"] == {"path": "openai", "sha256": None}  # a tag, not a file
    assert report["device"]["device"] == "cpu" and report["device"]["cpu_count"]


def test_the_progress_bar_names_the_run(synthetic, tmp_path, capsys):
    """Several runs in one command (demo run, compare) each get a bar labelled with their own name."""
    root = synthetic("pascal_voc", n=2)
    spec, method = build_oracle("pascal_voc", root, needs_cpu=False)
    for run in ("names-crf", "subclasses"):
        evaluate(method, spec, root, RunConfig(out=str(tmp_path / run), num_workers=0, progress=True))
    err = capsys.readouterr().err
    assert "pascal_voc names-crf" in err and "pascal_voc subclasses" in err
