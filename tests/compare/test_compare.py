"""llmseg compare on the demo world: finished cells are reused, compare.md's deltas are the cells' differences."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _grid(tmp_path):
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.demo.benchmark import CURATED_LABEL_SET, write_benchmark

    root = tmp_path / "data"
    write_benchmark(root, n_images=3, progress=False)
    base = MethodConfig(backbone="demo-clip", dense_mode="vanilla", templates="single", short_side=64, crop=0,
                        logit_scale=50, prob_thd=0.0, area_thd=0.0)
    return root, ["names", f"curated={CURATED_LABEL_SET}"], {"dense": base}


def test_rerun_reuses_finished_cells_and_deltas_match_metrics(tmp_path, monkeypatch):
    from llmseg.stage2.engine import runner
    from llmseg.stage2.experiments.compare import compare

    root, label_sets, variants = _grid(tmp_path)
    calls = []
    real = runner.evaluate

    def counting(method, spec, data_root, cfg, extra_info=None):
        calls.append(cfg.out)
        return real(method, spec, data_root, cfg, extra_info)

    monkeypatch.setattr(runner, "evaluate", counting)
    run = runner.RunConfig(num_workers=0, progress=False)
    out = tmp_path / "cmp"
    first = compare(["demo"], label_sets, variants, root, out, run=run, overlays=1, plots=False)
    assert len(calls) == 2 and first["cells_evaluated"] == 2
    # a cell whose run was cut short (no metrics.json, incomplete checkpoint) is the only one recomputed
    cut = out / "cells" / "demo" / "dense" / "curated"
    (cut / "metrics.json").unlink()
    calls.clear()
    second = compare(["demo"], label_sets, variants, root, out, run=run, overlays=1, plots=False)
    assert calls == [str(cut)] and second["cells_reused"] == 1
    names = json.loads((out / "cells/demo/dense/names/metrics.json").read_text())
    curated = json.loads((cut / "metrics.json").read_text())
    delta = second["deltas"][0]
    assert abs(delta["delta"] - (curated["mIoU"] - names["mIoU"])) < 1e-9
    md = (out / "compare.md").read_text()
    assert f"({curated['mIoU'] - names['mIoU']:+.2f})" in md


def test_a_cell_killed_part_way_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """Kill the grid inside a cell (after some of its images): the rerun reuses the first cell, continues
    the killed one from its checkpoint and ends with the metrics of an uninterrupted grid."""
    from llmseg.stage2.demo.benchmark import write_benchmark
    from llmseg.stage2.engine import runner
    from llmseg.stage2.experiments.compare import compare

    root, label_sets, variants = _grid(tmp_path)
    write_benchmark(root, n_images=6, progress=False)
    run = runner.RunConfig(num_workers=0, progress=False, checkpoint_every=1)
    clean = compare(["demo"], label_sets, variants, root, tmp_path / "clean", run=run, overlays=0, plots=False)

    consumed = []
    real_consume = runner._RankLoop._consume

    def dies_in_second_cell(self, item, result):
        consumed.append(item["stem"])
        if len(consumed) == 6 + 3:  # the whole first cell, then 2 images of the second one done
            raise KeyboardInterrupt
        return real_consume(self, item, result)

    monkeypatch.setattr(runner._RankLoop, "_consume", dies_in_second_cell)
    out = tmp_path / "killed"
    try:
        compare(["demo"], label_sets, variants, root, out, run=run, overlays=0, plots=False)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the grid was not interrupted")
    cut = out / "cells" / "demo" / "dense" / "curated"
    saved = json.loads((cut / "checkpoint.json").read_text())
    assert not saved["complete"] and len(saved["finished"]) == 2 and not (cut / "metrics.json").exists()

    monkeypatch.setattr(runner._RankLoop, "_consume", real_consume)
    forwarded = []
    real_forward = runner._RankLoop._batch

    def counting(self, batch):
        forwarded.extend(item["stem"] for item in batch)
        return real_forward(self, batch)

    monkeypatch.setattr(runner._RankLoop, "_batch", counting)
    again = compare(["demo"], label_sets, variants, root, out, run=run, overlays=0, plots=False)
    assert again["cells_reused"] == 1 and again["cells_evaluated"] == 1
    assert len(forwarded) == 4 and not set(forwarded) & set(saved["finished"])  # only the 4 images left
    assert [c["mIoU"] for c in again["cells"]] == [c["mIoU"] for c in clean["cells"]]
    assert again["deltas"][0]["delta"] == clean["deltas"][0]["delta"]


def test_without_matplotlib_the_grid_runs_and_says_the_charts_were_skipped(tmp_path, monkeypatch):
    import builtins

    from llmseg.stage2.engine import runner
    from llmseg.stage2.experiments.compare import compare

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named '{name}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    root, label_sets, variants = _grid(tmp_path)
    out = tmp_path / "cmp"
    summary = compare(["demo"], label_sets, variants, root, out, run=runner.RunConfig(num_workers=0, progress=False),
                      overlays=1, plots=True)
    assert not list(out.glob("*.png"))  # no chart
    assert [p for p in summary["pictures"] if p.startswith("overlays/")]  # the overlays are PIL-only and still there
    note = "charts skipped: matplotlib is not installed (pip install 'llmseg[plots]')"
    assert note in summary["notes"] and note in (out / "compare.md").read_text()
