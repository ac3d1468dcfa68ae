"""Issue 21 item 13: checkpoints by elapsed time as well as by count; stale temporaries go after a successful run."""

from __future__ import annotations

import json
from pathlib import Path

from rel_engine_support import CheckpointWatcher, build

from llmseg.stage2.engine import runner
from llmseg.stage2.engine.runner import RunConfig, evaluate

DATASET = "ade20k"
N = 8


def _cfg(out: Path, **kw) -> RunConfig:
    return RunConfig(out=str(out), num_workers=0, progress=False, **kw)


def test_checkpoint_written_when_the_interval_passes_not_only_every_n_images(synthetic, tmp_path, monkeypatch):
    root = synthetic(DATASET, n=N)
    out = tmp_path / "o"
    ticks = iter(range(0, 10_000, 10))  # a fake clock: every reading is 10 s later than the last
    monkeypatch.setattr(runner, "clock", lambda: float(next(ticks)))
    spec, method = build(DATASET, root, CheckpointWatcher, checkpoint=out / "checkpoint.json")
    evaluate(method, spec, root, _cfg(out, checkpoint_every=100, checkpoint_seconds=15))
    seen = method.on_disk  # finished images in the checkpoint on disk, read before each image
    assert len(seen) == N and seen == sorted(seen)
    assert 0 < seen[-1] < N and len(set(seen) - {0}) >= 2  # written several times mid-run, by time alone


def test_default_interval_does_not_checkpoint_a_fast_run_by_time(synthetic, tmp_path, monkeypatch):
    root = synthetic(DATASET, n=N)
    out = tmp_path / "o"
    monkeypatch.setattr(runner, "clock", lambda: 0.0)  # time stands still: only the count could trigger one
    spec, method = build(DATASET, root, CheckpointWatcher, checkpoint=out / "checkpoint.json")
    evaluate(method, spec, root, _cfg(out, checkpoint_every=100))
    assert method.on_disk == [0] * N
    assert RunConfig().checkpoint_seconds == 30.0


def test_zero_seconds_checkpoints_every_image(synthetic, tmp_path):
    root = synthetic(DATASET, n=4)
    out = tmp_path / "o"
    spec, method = build(DATASET, root, CheckpointWatcher, checkpoint=out / "checkpoint.json")
    evaluate(method, spec, root, _cfg(out, checkpoint_every=100, checkpoint_seconds=0))
    assert method.on_disk == [0, 1, 2, 3]


def test_stale_temporaries_are_gone_after_a_successful_rerun(synthetic, tmp_path):
    root = synthetic(DATASET, n=3)
    out = tmp_path / "o"
    spec, method = build(DATASET, root)
    first = evaluate(method, spec, root, _cfg(out, save_pred=True))
    # what a writer killed mid-write leaves (llmseg.io.atomic_path's temporaries), and files that are not ours
    stale = [out / ".checkpoint.json.k3j2_x.json.tmp", out / ".metrics.json.abc.json.tmp",
             out / "pred" / ".some.png.q1.png.tmp"]
    kept = [out / "notes.tmp", out / "pred" / "keep.txt"]
    for path in stale + kept:
        path.write_text("half")
    spec, method = build(DATASET, root)
    again = evaluate(method, spec, root, _cfg(out, save_pred=True))
    assert method.seen == 0 and again["mIoU"] == first["mIoU"]  # nothing left to compute, still a success
    assert not any(p.exists() for p in stale)
    assert all(p.read_text() == "half" for p in kept)
    assert json.loads((out / "checkpoint.json").read_text())["complete"] is True


def test_a_failed_run_leaves_temporaries_alone(synthetic, tmp_path):
    """Only a successful run cleans up its folder."""
    import pytest

    root = synthetic(DATASET, n=3)
    out = tmp_path / "o"
    out.mkdir()
    stale = out / ".checkpoint.json.zz.json.tmp"
    stale.write_text("half")
    spec, method = build(DATASET, root)
    method.lookup.clear()  # every image unknown: the method fails
    with pytest.raises(KeyError):
        evaluate(method, spec, root, _cfg(out))
    assert stale.exists()
