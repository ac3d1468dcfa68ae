"""llmseg tune on the demo world: val is read once, at the end; the preset file reproduces the choice."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

N_VAL, N_TRAIN, N_TUNE = 4, 6, 3
GRID = ["k=1,3", "prob_thd=0,0.6"]


def _world(tmp_path: Path) -> Path:
    from llmseg.stage2.demo.benchmark import write_benchmark

    root = tmp_path / "data"
    write_benchmark(root, n_images=N_VAL, progress=False)
    write_benchmark(root, n_images=N_TRAIN, split="train", progress=False)
    return root


def _base():
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.demo.benchmark import CURATED_LABEL_SET

    return MethodConfig(backbone="demo-clip", dense_mode="vanilla", templates="single", short_side=64, crop=0,
                        logit_scale=50, area_thd=0.0, label_set=str(CURATED_LABEL_SET))


def _run():
    from llmseg.stage2.engine.runner import RunConfig

    return RunConfig(num_workers=0, progress=False)


def _split_images(root: Path, split: str) -> set[Path]:
    from llmseg.datasets import get_dataset
    from llmseg.stage2.data.readers import list_samples

    return {ref.image_path.resolve() for ref in list_samples(get_dataset("demo").with_split(split), root)}


@pytest.fixture
def reads(monkeypatch):
    """Every image the readers decode, in order (workers are off, so all reads happen in this process)."""
    from llmseg.stage2.data import readers

    seen: list[Path] = []
    real = readers.load_image

    def logged(path, *args, **kwargs):
        seen.append(Path(path).resolve())
        return real(path, *args, **kwargs)

    monkeypatch.setattr(readers, "load_image", logged)
    return seen


def test_no_val_image_is_read_before_the_final_evaluation(tmp_path, reads):
    from llmseg.stage2.experiments.tune import tune

    root = _world(tmp_path)
    val, train = _split_images(root, "val"), _split_images(root, "train")
    summary = tune(_base(), "demo", root, tmp_path / "t", space=GRID, tune_images=N_TUNE, run=_run())
    first_val = next(i for i, p in enumerate(reads) if p in val)
    assert all(p in train for p in reads[:first_val])  # every read before the first val image is a train image
    assert all(p in val for p in reads[first_val:])  # after it: the final run only
    assert sorted(set(reads[first_val:])) == sorted(val) and len(reads[first_val:]) == N_VAL  # val read once
    tuned = {p for p in reads[:first_val]}
    subset = (tmp_path / "t" / "tune_images.txt").read_text().split()
    assert len(tuned) == N_TUNE == len(subset) and len(reads[:first_val]) == N_TUNE * len(summary["trials"])
    assert summary["chosen_on"]["split"] == "train" and summary["final"]["split"] == "val"
    final = json.loads((tmp_path / "t" / "final" / "metrics.json").read_text())
    assert final["split"] == "val" and final["extra"]["tune"]["chosen_on"]["split"] == "train"


def test_without_final_no_val_image_is_read_at_all(tmp_path, reads):
    from llmseg.stage2.experiments.tune import tune

    root = _world(tmp_path)
    val = _split_images(root, "val")
    summary = tune(_base(), "demo", root, tmp_path / "t", space=["k=1,3"], tune_images=N_TUNE, final=False, run=_run())
    assert reads and not any(p in val for p in reads)
    assert summary["final"] is None and not (tmp_path / "t" / "final").exists()
    assert "was not evaluated" in (tmp_path / "t" / "tune.md").read_text()


def test_choice_is_the_best_trial_and_the_preset_file_reproduces_it(tmp_path):
    from llmseg.datasets import get_dataset
    from llmseg.stage2.engine import runner
    from llmseg.stage2.experiments.tune import tune
    from llmseg.stage2.methods import build_method

    root = _world(tmp_path)
    out = tmp_path / "t"
    summary = tune(_base(), "demo", root, out, space=GRID, tune_images=N_TUNE, run=_run())
    # the choice, recomputed from the trials' own metrics.json files (first best in search order)
    scores = [json.loads((out / t["folder"] / "metrics.json").read_text())["mIoU"] for t in summary["trials"]]
    assert len(scores) == 4 and summary["chosen"]["trial"] == scores.index(max(scores)) + 1
    assert summary["chosen"]["mIoU"] == max(scores)
    best = summary["trials"][summary["chosen"]["trial"] - 1]["overrides"]
    md = (out / "tune.md").read_text()
    assert f"**{summary['chosen']['trial']}**" in md and f"mIoU {summary['final']['mIoU']}" in md

    # the same settings given explicitly, evaluated on val by hand: the final run's numbers
    spec = get_dataset("demo")
    explicit = _base().model_copy(update=best)
    manual = runner.evaluate(build_method(explicit, spec.classes, dataset="demo"), spec, root,
                             _run().model_copy(update={"out": str(tmp_path / "manual")}))
    assert manual["mIoU"] == summary["final"]["mIoU"] and manual["aAcc"] == summary["final"]["aAcc"]

    # the preset file alone (no --set of the fixed settings) through the CLI gives the same numbers
    from typer.testing import CliRunner

    from llmseg.cli import app

    preset = out / summary["preset"]
    result = CliRunner().invoke(app, ["evaluate", "--dataset", "demo", "--data-root", str(root), "--backbone", "demo-clip",
                                      "--preset", str(preset), "--label-set", _base().label_set, "--num-workers", "0",
                                      "--no-progress", "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "cli" / "metrics.json").read_text())["mIoU"] == summary["final"]["mIoU"]
    written = json.loads(preset.read_text())
    assert written["datasets"]["demo"]["k"] == best["k"] and written["default"]["dense_mode"] == "vanilla"
    assert "train" in written["source"]


def test_rerun_reuses_everything_and_an_interrupted_search_resumes(tmp_path, monkeypatch, reads):
    from llmseg.stage2.engine import runner
    from llmseg.stage2.experiments.tune import tune

    root = _world(tmp_path)
    out = tmp_path / "t"
    real = runner.evaluate
    calls: list[str] = []

    def dies_on_third(method, spec, data_root, cfg, extra_info=None):
        calls.append(cfg.out)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(method, spec, data_root, cfg, extra_info)

    monkeypatch.setattr(runner, "evaluate", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        tune(_base(), "demo", root, out, space=GRID, tune_images=N_TUNE, run=_run())
    assert not (out / "tune.json").exists()
    monkeypatch.setattr(runner, "evaluate", real)
    reads.clear()
    summary = tune(_base(), "demo", root, out, space=GRID, tune_images=N_TUNE, run=_run())
    assert [t["reused"] for t in summary["trials"]] == [True, True, False, False]
    assert len(reads) == 2 * N_TUNE + N_VAL  # two trials and the final run, nothing else
    reads.clear()
    again = tune(_base(), "demo", root, out, space=GRID, tune_images=N_TUNE, run=_run())
    assert reads == [] and all(t["reused"] for t in again["trials"]) and again["final"]["reused"]
    assert again["final"]["mIoU"] == summary["final"]["mIoU"]


def test_refuses_the_evaluation_split_overlaps_and_bad_spaces(tmp_path):
    from llmseg.datasets import DatasetError
    from llmseg.errors import ConfigError
    from llmseg.stage2.experiments.tune import TuneError, tune

    root = _world(tmp_path)
    with pytest.raises(TuneError, match="evaluation split"):
        tune(_base(), "demo", root, tmp_path / "a", space=["k=1"], tune_split="val", run=_run())
    with pytest.raises(DatasetError, match="no split 'test'.*it knows: val, train"):
        tune(_base(), "demo", root, tmp_path / "b", space=["k=1"], tune_split="test", run=_run())
    with pytest.raises(ConfigError, match="more than --max-trials 3"):
        tune(_base(), "demo", root, tmp_path / "c", space=GRID, max_trials=3, run=_run())
    with pytest.raises(ConfigError, match="--top-cls-num does not apply to --method dense"):
        tune(_base(), "demo", root, tmp_path / "f", space=["top_cls_num=3,5"], run=_run())
    with pytest.raises(ConfigError, match="--grid k truncates a label set"):
        tune(_base().model_copy(update={"label_set": None}), "demo", root, tmp_path / "g", space=["k=1,2"], run=_run())
    assert not any((tmp_path / name).exists() for name in "abcdfg")  # refused before any folder was written
    with pytest.raises(ConfigError, match="logit_scale: given as a fixed setting and searched"):
        tune(_base(), "demo", root, tmp_path / "d", space=["logit_scale=10,20"], run=_run())
    # a "train" list that holds a val image is refused before anything runs
    split = root / "VOCdevkit/VOC2012/ImageSets/Segmentation"
    (split / "train.txt").write_text((split / "train.txt").read_text() + (split / "val.txt").read_text().split()[0] + "\n")
    with pytest.raises(TuneError, match="1 images of demo's 'train' split are also in its evaluation split"):
        tune(_base(), "demo", root, tmp_path / "e", space=["k=1"], run=_run())


def test_search_space_parsing_and_sampling():
    from llmseg.errors import ConfigError
    from llmseg.stage2.experiments.tune import SearchSpace, choose_subset

    space = SearchSpace.parse(["prob_thd=0,0.1,none", "assembly=max,softmax", "k=1,1,2"])
    assert space.values == {"prob_thd": (0.0, 0.1, None), "assembly": ("max", "softmax"), "k": (1, 2)}
    points = space.points()
    assert len(points) == space.size() == 12 and len({json.dumps(p) for p in points}) == 12
    drawn = space.sample(5, seed=3)
    assert drawn == space.sample(5, seed=3) and len(drawn) == 5 and all(p in points for p in drawn)
    assert [points.index(p) for p in drawn] == sorted(points.index(p) for p in drawn)
    assert space.sample(50, seed=0) == points
    for bad, message in (("k=0", "--grid k: bad value '0'"), ("crop=0,1", "not a tunable setting"),
                         ("assembly=nope", "--grid assembly: bad value 'nope'"), ("k", "FIELD=V1,V2")):
        with pytest.raises(ConfigError, match=message):
            SearchSpace.parse([bad])
    stems = [f"s{i}" for i in range(20)]
    subset = choose_subset(stems, 7, seed=1)
    assert subset == choose_subset(stems, 7, seed=1) and len(set(subset)) == 7
    assert subset == [s for s in stems if s in subset] and choose_subset(stems, 7, seed=2) != subset
    assert choose_subset(stems, None, 0) == stems


def test_default_space_follows_the_method_and_dataset(tmp_path):
    from llmseg.datasets import get_dataset
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.demo.benchmark import CURATED_LABEL_SET
    from llmseg.stage2.experiments.tune import default_space

    demo = get_dataset("demo")
    dense = default_space(MethodConfig(backbone="demo-clip", label_set=str(CURATED_LABEL_SET)), demo)
    assert set(dense.values) == {"logit_scale", "prob_thd", "area_thd", "k"}
    longest = max(len(v) for v in json.loads(Path(CURATED_LABEL_SET).read_text()).values())
    assert dense.values["k"][-1] == longest
    seed = default_space(MethodConfig(method="llm-supervision", backbone="demo-clip", label_set=str(CURATED_LABEL_SET)), demo)
    assert set(seed.values) == {"top_cls_num", "assembly", "k"} and max(seed.values["top_cls_num"]) <= demo.num_classes
    no_background = default_space(MethodConfig(backbone="demo-clip"), get_dataset("ade20k"))
    assert set(no_background.values) == {"logit_scale"}


def test_cli_tune_end_to_end_and_its_refusal(tmp_path):
    from typer.testing import CliRunner

    from llmseg.cli import app
    from llmseg.stage2.demo.benchmark import CURATED_LABEL_SET

    root = _world(tmp_path)
    common = ["tune", "--dataset", "demo", "--data-root", str(root), "--backbone", "demo-clip",
              "--label-set", str(CURATED_LABEL_SET), "--set", "dense_mode=vanilla", "--set", "templates=single",
              "--set", "short_side=64", "--set", "crop=0", "--num-workers", "0", "--no-progress"]
    bad = CliRunner().invoke(app, [*common, "--tune-split", "val", "--out", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "evaluation split" in bad.output
    result = CliRunner().invoke(app, [*common, "--grid", "k=1,3", "--tune-images", "2", "--search", "random", "--trials", "1",
                                      "--out", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "ok" / "tune.json").read_text())
    assert len(summary["trials"]) == 1 and summary["search"]["kind"] == "random"
    assert "# llmseg tune" in result.output and f"mIoU {summary['final']['mIoU']}" in result.output
