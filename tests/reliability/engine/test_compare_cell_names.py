"""Issue 21 item 2: label sets (and variants) whose names map to one cell folder are refused before any run."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from llmseg.errors import ConfigError


def _label_set(path, classes, word):
    import json

    path.write_text(json.dumps({c: [f"{word} {c}"] for c in classes}))
    return path


def test_my_set_and_my_underscore_set_are_refused_on_the_command_line(tmp_path):
    from llmseg.cli import app
    from llmseg.datasets import get_dataset
    from llmseg.stage2.demo.benchmark import write_benchmark

    classes = list(get_dataset("demo").classes)
    a, b = _label_set(tmp_path / "a.json", classes, "a"), _label_set(tmp_path / "b.json", classes, "b")
    root = tmp_path / "data"
    write_benchmark(root, n_images=1, progress=False)
    out = tmp_path / "cmp"
    result = CliRunner().invoke(app, ["compare", "--dataset", "demo", "--label-set", f"my set={a}", "--label-set",
                                      f"my_set={b}", "--backbone", "demo-clip", "--data-root", str(root),
                                      "--out", str(out), "--overlays", "0", "--no-plots"])
    assert result.exit_code == 2, result.output
    assert "my set" in result.output and "my_set" in result.output and "Traceback" not in result.output
    assert not (out / "cells").exists()  # nothing ran


@pytest.mark.parametrize("names", [("my set", "my_set"), ("a/b", "a_b"), ("Curated", "curated"), ("x", "x")])
def test_plan_cells_checks_folder_names(tmp_path, names):
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.experiments.compare import LabelSetChoice, plan_cells

    choices = [LabelSetChoice(n, str(tmp_path / f"{i}.json")) for i, n in enumerate(names)]
    with pytest.raises(ConfigError, match="share the cell folder"):
        plan_cells(["demo"], choices, {"dense": MethodConfig(backbone="demo-clip")}, tmp_path / "o", None)


def test_variants_sharing_a_folder_are_refused(tmp_path):
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.experiments.compare import plan_cells

    variants = {"fast run": MethodConfig(backbone="demo-clip"), "fast_run": MethodConfig(backbone="demo-clip", crop=0)}
    with pytest.raises(ConfigError, match="fast run"):
        plan_cells(["demo"], ["names"], variants, tmp_path / "o", None)


def test_dot_dot_name_stays_inside_the_grid(tmp_path):
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.experiments.compare import LabelSetChoice, plan_cells

    cells = plan_cells(["demo"], [LabelSetChoice("..", None)], {"dense": MethodConfig(backbone="demo-clip")},
                       tmp_path / "o", None)
    assert cells[0].out.resolve().is_relative_to((tmp_path / "o" / "cells").resolve())
    assert cells[0].out.name != ".."
