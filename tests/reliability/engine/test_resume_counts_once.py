"""Issue 21 item 1: an image whose files fail to write is neither counted nor finished, so resume counts it once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from rel_engine_support import build, stems

from llmseg.stage2.engine.results import prediction_path
from llmseg.stage2.engine.runner import RunConfig, evaluate

DATASET = "pascal_voc"


def _cfg(out: Path, **kw) -> RunConfig:
    return RunConfig(out=str(out), num_workers=0, progress=False, save_pred=True, **kw)


def _numbers(out: Path) -> tuple:
    metrics = json.loads((out / "metrics.json").read_text())
    confusion = json.loads((out / "confusion.json").read_text())["matrix"]
    return metrics["num_images"], metrics["mIoU"], metrics["mAcc"], metrics["aAcc"], confusion


def _block_prediction(out: Path, stem: str) -> Path:
    """A folder where the prediction PNG goes: its atomic rename fails (IsADirectoryError), as a full disk would."""
    blocker = prediction_path(out / "pred", stem)
    blocker.mkdir(parents=True)
    (blocker / "keep").write_text("x")
    return blocker


@pytest.mark.parametrize("checkpoint_every", [1, 100])
def test_failed_prediction_write_then_resume_equals_a_clean_run(synthetic, tmp_path, checkpoint_every):
    root = synthetic(DATASET, n=6)
    spec, method = build(DATASET, root)
    evaluate(method, spec, root, _cfg(tmp_path / "clean"))

    out = tmp_path / "faulty"
    victim = stems(DATASET, root)[3]
    blocker = _block_prediction(out, victim)
    spec, method = build(DATASET, root)
    with pytest.raises(OSError):
        evaluate(method, spec, root, _cfg(out, checkpoint_every=checkpoint_every))
    state = json.loads((out / "checkpoint.json").read_text())
    assert victim not in state["finished"]
    assert state["metric"]["num_images"] == len(state["finished"]) == 3  # count and marks agree

    (blocker / "keep").unlink()
    os.rmdir(blocker)
    spec, method = build(DATASET, root)
    resumed = evaluate(method, spec, root, _cfg(out, checkpoint_every=checkpoint_every))
    assert resumed["resumed"] is True and method.seen == 3
    assert _numbers(out) == _numbers(tmp_path / "clean")
    assert prediction_path(out / "pred", victim).is_file()


def test_a_failed_overlay_write_is_not_counted_either(synthetic, tmp_path):
    root = synthetic(DATASET, n=4)
    spec, method = build(DATASET, root)
    evaluate(method, spec, root, RunConfig(out=str(tmp_path / "clean"), num_workers=0, progress=False, save_vis=4))

    out = tmp_path / "faulty"
    victim = stems(DATASET, root)[2]
    blocker = out / "vis" / f"{victim}.png"
    blocker.mkdir(parents=True)
    (blocker / "keep").write_text("x")
    spec, method = build(DATASET, root)
    with pytest.raises(OSError):
        evaluate(method, spec, root, RunConfig(out=str(out), num_workers=0, progress=False, save_vis=4))
    (blocker / "keep").unlink()
    os.rmdir(blocker)
    spec, method = build(DATASET, root)
    evaluate(method, spec, root, RunConfig(out=str(out), num_workers=0, progress=False, save_vis=4))
    assert _numbers(out) == _numbers(tmp_path / "clean")


def test_compare_cell_with_a_failed_write_resumes_to_the_clean_numbers(tmp_path):
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.demo.benchmark import write_benchmark
    from llmseg.stage2.engine import runner
    from llmseg.stage2.experiments.compare import compare

    root = tmp_path / "data"
    write_benchmark(root, n_images=4, progress=False)
    variants = {"dense": MethodConfig(backbone="demo-clip", dense_mode="vanilla", templates="single", short_side=64,
                                      crop=0, logit_scale=50, prob_thd=0.0, area_thd=0.0)}
    run = runner.RunConfig(num_workers=0, progress=False)
    clean = compare(["demo"], ["names"], variants, root, tmp_path / "clean", run=run, overlays=1, plots=False)

    out = tmp_path / "faulty"
    cell = out / "cells" / "demo" / "dense" / "names"
    victim = stems("demo", root)[2]
    blocker = prediction_path(cell / "pred", victim)
    blocker.mkdir(parents=True)
    (blocker / "keep").write_text("x")
    with pytest.raises(OSError):
        compare(["demo"], ["names"], variants, root, out, run=run, overlays=1, plots=False)
    (blocker / "keep").unlink()
    os.rmdir(blocker)
    again = compare(["demo"], ["names"], variants, root, out, run=run, overlays=1, plots=False)
    assert [(c["num_images"], c["mIoU"]) for c in again["cells"]] == [(c["num_images"], c["mIoU"]) for c in clean["cells"]]
    assert _numbers(cell) == _numbers(tmp_path / "clean" / "cells" / "demo" / "dense" / "names")
