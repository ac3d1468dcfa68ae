"""Issue 21 item 3: NaN, infinity and out-of-range settings are refused in MethodConfig, preset files and tune --grid."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from llmseg.errors import ConfigError

BAD_VALUES = [
    ("logit_scale", math.nan), ("logit_scale", math.inf), ("logit_scale", -5.0), ("logit_scale", 0.0),
    ("prob_thd", math.nan), ("prob_thd", -0.1), ("prob_thd", 1.5), ("area_thd", math.inf), ("area_thd", -1.0),
    ("naclip_std", math.nan), ("naclip_std", 0.0), ("short_side", 0), ("short_side", -3), ("short_side", 10**9),
    ("crop", -1), ("stride", -2), ("k", 0), ("top_cls_num", 0), ("candidates", 0), ("crf_iterations", -1),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_method_config_refuses_non_finite_and_out_of_range(field, value):
    from pydantic import ValidationError

    from llmseg.stage2.config import MethodConfig

    with pytest.raises(ValidationError, match=field):
        MethodConfig(**{field: value})


@pytest.mark.parametrize("text", ["nan", "1e400", "-5", "inf", "-inf"])
def test_tune_grid_refuses_nan_inf_and_negative_logit_scale(text):
    from llmseg.stage2.experiments.tune import SearchSpace

    with pytest.raises(ConfigError, match=f"--grid logit_scale: bad value '{text}'"):
        SearchSpace.parse([f"logit_scale=40,{text}"])


def test_tune_command_refuses_the_nan_grid(tmp_path):
    from llmseg.cli import app

    result = CliRunner().invoke(app, ["tune", "--dataset", "demo", "--backbone", "demo-clip", "--grid",
                                      "logit_scale=nan,1e400,-5", "--out", str(tmp_path / "t")])
    assert result.exit_code == 2 and "logit_scale" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "t").exists()


def _preset(tmp_path: Path, default: dict, datasets: dict | None = None, name: str = "mine.json") -> Path:
    base = {"dense_mode": "vanilla", "short_side": 64, "crop": 0, "stride": 0, "logit_scale": 50.0, "prob_thd": 0.0,
            "area_thd": 0.0, "pamr": False}
    path = tmp_path / name
    path.write_text(json.dumps({"name": "mine", "default": {**base, **default}, "datasets": datasets or {}}))
    return path


@pytest.mark.parametrize(
    ("default", "datasets", "where"),
    [
        ({"logit_scale": math.nan}, None, "default.logit_scale"),
        ({"logit_scale": math.inf}, None, "default.logit_scale"),
        ({}, {"demo": {"prob_thd": -0.5}}, "datasets.demo.prob_thd"),
        ({"crop": -32}, None, "default.crop"),
        ({"short_side": "64"}, None, "default.short_side"),
        ({"logit_scal": 40}, None, "logit_scal"),  # a typo
        ({}, {"demo": {"prob_th": 0.1}}, "prob_th"),
        ({"assembly": "median"}, None, "default.assembly"),
        ({"dense_mode": "nope"}, None, "default.dense_mode"),
        ({"resize": {"library": "pillow"}}, None, "default.resize.library"),
        ({"pos_embed": {"offset": math.nan}}, None, "default.pos_embed.offset"),
        ({"k": 0}, None, "default.k"),
    ],
)
def test_a_bad_preset_file_names_the_file_and_the_field(tmp_path, default, datasets, where):
    from llmseg.stage2.methods.presets import load_preset

    path = _preset(tmp_path, default, datasets)
    with pytest.raises(ConfigError) as err:
        load_preset(str(path))
    assert str(path) in str(err.value) and where in str(err.value)


def test_evaluate_with_a_nan_preset_is_a_named_error(tmp_path):
    from llmseg.cli import app
    from llmseg.stage2.demo.benchmark import write_benchmark

    root = tmp_path / "data"
    write_benchmark(root, n_images=1, progress=False)
    path = _preset(tmp_path, {"logit_scale": math.nan})
    assert "NaN" in path.read_text()
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["evaluate", "--dataset", "demo", "--backbone", "demo-clip", "--preset", str(path),
                                      "--templates", "single", "--data-root", str(root), "--out", str(out),
                                      "--no-progress", "--num-workers", "0"])
    assert result.exit_code == 2, result.output
    assert "default.logit_scale" in result.output and str(path) in result.output and not (out / "metrics.json").exists()


def test_a_preset_without_logit_scale_is_a_named_error_not_a_key_error(tmp_path):
    from llmseg.datasets import get_dataset
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.methods import build_method

    path = tmp_path / "bare.json"
    path.write_text(json.dumps({"name": "bare", "default": {"dense_mode": "vanilla", "crop": 0}}))
    with pytest.raises(ConfigError, match="sets no logit_scale"):
        build_method(MethodConfig(backbone="demo-clip", preset=str(path), templates="single"), get_dataset("demo").classes,
                     "demo")


def test_a_preset_key_given_twice_is_a_named_error(tmp_path):
    """json.loads would keep the second logit_scale silently."""
    from llmseg.stage2.methods.presets import load_preset

    path = tmp_path / "twice.json"
    path.write_text('{"name": "twice", "default": {"logit_scale": 40, "logit_scale": 1e9}}')
    with pytest.raises(ConfigError, match=r"twice.json: key 'logit_scale' is given twice"):
        load_preset(str(path))


def test_a_fixed_preset_file_is_read_again(tmp_path):
    """The preset cache follows the file: a corrected file is not answered with the old error."""
    from llmseg.stage2.methods.presets import load_preset

    path = _preset(tmp_path, {"logit_scale": -1.0})
    with pytest.raises(ConfigError):
        load_preset(str(path))
    path.write_text(json.dumps({"name": "mine", "default": {"logit_scale": 42.0}}))
    assert load_preset(str(path)).default["logit_scale"] == 42.0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
KEYS = st.sampled_from(["dense_mode", "short_side", "crop", "stride", "logit_scale", "prob_thd", "area_thd", "pamr",
                        "naclip_std", "assembly", "k", "top_cls_num", "templates", "crf", "pos_embed", "resize",
                        "normalize", "crop_remainder", "whole_remainder", "whole_upsample", "typo"])
BLOCK = st.dictionaries(KEYS, JSON, max_size=5)
PRESET = st.fixed_dictionaries(
    {"name": st.text(max_size=5) | JSON},
    optional={"default": BLOCK | JSON, "datasets": st.dictionaries(st.sampled_from(["demo", "pascal_voc"]), BLOCK | JSON,
                                                                    max_size=2) | JSON,
              "method": st.sampled_from(["dense", "llm-supervision"]) | JSON, "paper": JSON, "extra": JSON},
)


COUNTER = itertools.count()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=PRESET | JSON)
def test_any_json_preset_loads_or_raises_config_error(tmp_path, document):
    from llmseg.stage2.methods.presets import load_preset, preset_settings

    path = tmp_path / f"p{next(COUNTER)}.json"  # a new file each time: nothing is answered from the cache
    path.write_text(json.dumps(document))  # NaN / Infinity written as JSON's extensions, as json.dumps does
    try:
        table = load_preset(str(path))
    except ConfigError:
        return
    for dataset in (None, "demo", "pascal_voc"):
        values = preset_settings(str(path), dataset)
        for key, value in values.items():
            if isinstance(value, float):
                assert math.isfinite(value), key
    assert isinstance(table.default, dict)
