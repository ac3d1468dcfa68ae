"""Issue 21 item 8: compare and tune on a full disk (the demo world, its tiny CLIP).

A grid or search whose disk fills up stops with one DiskWriteError naming the file; once space is
free the same call reuses what was finished and ends with the numbers of a run that never failed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from disk_faults import numbers

from llmseg.errors import DiskWriteError

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from llmseg.stage2.demo.benchmark import write_benchmark

    root = tmp_path_factory.mktemp("world") / "data"
    write_benchmark(root, n_images=3, progress=False)
    write_benchmark(root, n_images=4, split="train", progress=False)
    return root


def _config(**kw):
    from llmseg.stage2.config import MethodConfig

    return MethodConfig(backbone="demo-clip", dense_mode="vanilla", templates="single", short_side=64, crop=0,
                        logit_scale=50, area_thd=0.0, **kw)


def _run():
    from llmseg.stage2.engine.runner import RunConfig

    return RunConfig(num_workers=0, progress=False, checkpoint_every=1)


def _files(folder: Path) -> set[str]:
    """Every file under `folder` except the lock files (relative, as text)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and ".llmseg" not in p.name}


def _fail_points(writes: list[Path], folder: Path, wanted: list[str]) -> list[int]:
    """For each wanted name (a suffix of the relative path), how many writes come before its first one."""
    names = [p.relative_to(folder.resolve()).as_posix() for p in writes]
    return [next(i for i, name in enumerate(names) if name.endswith(w)) for w in wanted]


def _compare(world: Path, out: Path) -> dict:
    from llmseg.stage2.experiments.compare import compare

    variants = {"dense": _config(prob_thd=0.0)}
    return compare(["demo"], ["names"], variants, world, out, run=_run(), overlays=1, plots=False)


def _compare_numbers(summary: dict) -> list[tuple]:
    return [(c["dataset"], c["variant"], c["label_set"], c["num_images"], c["mIoU"], c["mAcc"], c["aAcc"])
            for c in summary["cells"]]


@pytest.mark.slow
def test_compare_on_a_full_disk_then_a_rerun_gives_the_clean_grid(world, tmp_path, full_disk, monkeypatch):
    clean_out = tmp_path / "clean"
    disk = full_disk(clean_out, after=10**6)
    clean = _compare(world, clean_out)
    monkeypatch.undo()
    assert _files(clean_out) <= {p.relative_to(clean_out.resolve()).as_posix() for p in disk.written}  # all atomic
    cell = Path("cells/demo/dense/names")
    points = _fail_points(disk.written, clean_out, ["cell.json", "pred/demo_00001.png", "names/metrics.json",
                                                    ".png", "compare.json"])
    assert len(set(points)) == len(points)
    for after in points:
        out = tmp_path / f"full{after}"
        disk = full_disk(out, after)
        with pytest.raises(DiskWriteError) as caught:
            _compare(world, out)
        assert f"cannot write {disk.refused[0]}: No space left on device (ENOSPC)" in str(caught.value)
        monkeypatch.undo()
        again = _compare(world, out)
        assert _compare_numbers(again) == _compare_numbers(clean), disk.refused[0]
        assert numbers(out / cell) == numbers(clean_out / cell)


def _tune(world: Path, out: Path) -> dict:
    from llmseg.stage2.demo.benchmark import CURATED_LABEL_SET
    from llmseg.stage2.experiments.tune import tune

    return tune(_config(label_set=str(CURATED_LABEL_SET)), "demo", world, out, space=["prob_thd=0,0.6"],
                tune_images=2, run=_run())


def _tune_numbers(summary: dict) -> tuple:
    trials = [(t["overrides"], t["mIoU"]) for t in summary["trials"]]
    final = summary["final"]
    return trials, summary["chosen"]["overrides"], (final["mIoU"], final["mAcc"], final["aAcc"], final["num_images"])


@pytest.mark.slow
def test_tune_on_a_full_disk_then_a_rerun_gives_the_clean_choice(world, tmp_path, full_disk, monkeypatch):
    clean_out = tmp_path / "clean"
    disk = full_disk(clean_out, after=10**6)
    clean = _tune(world, clean_out)
    monkeypatch.undo()
    assert _files(clean_out) <= {p.relative_to(clean_out.resolve()).as_posix() for p in disk.written}  # all atomic
    points = _fail_points(disk.written, clean_out, ["tune_images.txt", "trial.json", "checkpoint.json", ".json",
                                                    "final/metrics.json", "tune.json"])
    preset = next(i for i, p in enumerate(disk.written) if p.parent == clean_out.resolve() and p.suffix == ".json"
                  and p.name != "tune.json" and not p.name.startswith("."))  # the tuned preset
    for after in sorted(set(points) | {preset}):
        out = tmp_path / f"full{after}"
        disk = full_disk(out, after)
        with pytest.raises(DiskWriteError) as caught:
            _tune(world, out)
        assert f"cannot write {disk.refused[0]}: No space left on device (ENOSPC)" in str(caught.value)
        monkeypatch.undo()
        assert _tune_numbers(_tune(world, out)) == _tune_numbers(clean), disk.refused[0]
