"""`llmseg compare` on the command line: the grid's table and files, and bad settings refused before any run."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEMO_SETTINGS = ["--set", "dense_mode=vanilla", "--set", "templates=single", "--set", "short_side=64", "--set", "crop=0",
                 "--set", "logit_scale=50", "--set", "prob_thd=0", "--set", "area_thd=0"]


def test_compare_command_writes_the_grid(tmp_path):
    from llmseg.cli import app
    from llmseg.stage2.demo.benchmark import CURATED_LABEL_SET, write_benchmark

    root = tmp_path / "data"
    write_benchmark(root, n_images=2, progress=False)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", "--dataset", "demo", "--label-set", "names", "--label-set",
                                      f"curated={CURATED_LABEL_SET}", "--backbone", "demo-clip", *DEMO_SETTINGS,
                                      "--data-root", str(root), "--out", str(out), "--overlays", "1", "--no-plots"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "compare.json").read_text())
    assert summary["cells_evaluated"] == 2
    names = json.loads((out / "cells/demo/dense/names/metrics.json").read_text())["mIoU"]
    curated = json.loads((out / "cells/demo/dense/curated/metrics.json").read_text())["mIoU"]
    assert f"({curated - names:+.2f})" in result.output
    assert summary["cells_evaluated"] == 2 and "2 cells evaluated, 0 reused" in result.output


def test_compare_command_refuses_an_unknown_setting_before_running(tmp_path):
    from llmseg.cli import app

    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", "--dataset", "demo", "--label-set", "names", "--backbone", "demo-clip",
                                      "--set", "no_such_field=1", "--out", str(out)])
    assert result.exit_code == 2
    assert "no_such_field" in result.output
    assert not out.exists()
