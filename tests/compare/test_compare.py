"""llmseg compare on the demo world: finished cells are reused, compare.md's deltas are the cells' differences."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _grid(tmp_path):
    from llmseg.stage2.demo.benchmark import CURATED_LABEL_SET, write_benchmark
    from llmseg.stage2.interface import MethodConfig

    root = tmp_path / "data"
    write_benchmark(root, n_images=3, progress=False)
    base = MethodConfig(backbone="demo-clip", dense_mode="vanilla", templates="single", short_side=64, crop=0,
                        logit_scale=50, prob_thd=0.0, area_thd=0.0)
    return root, ["names", f"curated={CURATED_LABEL_SET}"], {"dense": base}


def test_rerun_reuses_finished_cells_and_deltas_match_metrics(tmp_path, monkeypatch):
    from llmseg.stage2 import runner
    from llmseg.stage2.compare import compare

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
