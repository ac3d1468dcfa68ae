"""Issue 21 item 14: the page must not read server files a request names.

Each attack names a server file (a JSON holding a secret) through a page field: the label-set box, the label-set
upload, the Preset field, the preset upload, the Weights box, the Backbone box (open_clip's 'local-dir:').
The answer must mention neither the secret's key nor its value, and must be the same, word for word, for a
path that does not exist: the page must not say whether the file is there. Legitimate uses (pasted JSON,
uploads as bytes, bundled presets, the weights the app was started with, `--allow-local-weights`) still work.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

SECRET = {"password": [12345]}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from llmseg.stage2.app.core import AppSettings, SegmentApp

    return SegmentApp(AppSettings(cache_dir=tmp_path_factory.mktemp("app_cache")))


@pytest.fixture
def server_files(tmp_path) -> tuple[Path, Path]:
    """(a secret JSON that exists, the same name in a folder where it does not)."""
    present, absent = tmp_path / "present", tmp_path / "absent"
    present.mkdir()
    absent.mkdir()
    for name in ("creds.json", "open_clip_config.json"):
        (present / name).write_text(json.dumps(SECRET), encoding="utf-8")
    return present / "creds.json", absent / "creds.json"


def _attacks() -> dict[str, dict]:
    """Page fields, each naming the file PATH (or its folder DIR)."""
    return {
        "label-set box, a path": {"label_mode": "label set", "label_set_text": "PATH"},
        "label-set box, a quoted path": {"label_mode": "label set", "label_set_text": "'PATH'"},
        "label-set upload given as a path": {"label_mode": "label set", "label_set_file": "PATH"},
        "preset field, a path": {"preset": "PATH"},
        "preset upload given as a path": {"preset_file": "PATH"},
        "weights box, open_clip": {"backbone": "openclip:ViT-B-16", "weights": "PATH"},
        "weights box, simseg": {"backbone": "simseg", "weights": "PATH"},
        "backbone box, open_clip local-dir": {"backbone": "openclip:local-dir:DIR", "weights": "openai"},
    }


def _ask(app, scene_png, classes, attack: dict, path: Path) -> str:
    fields = {k: v.replace("PATH", str(path)).replace("DIR", str(path.parent)) for k, v in attack.items()}
    result = app.handle(scene_png, classes, **fields)
    assert not result.ok, f"the page used a server file: {result.message}"
    assert result.files == [] and result.output is None
    return result.message.replace(str(path), "<PATH>").replace(str(path.parent), "<DIR>")


@pytest.mark.parametrize("attack", list(_attacks()))
def test_no_answer_reveals_a_server_file(app, scene_png, demo_classes, server_files, attack):
    secret, missing = server_files
    about_secret = _ask(app, scene_png, demo_classes, _attacks()[attack], secret)
    about_missing = _ask(app, scene_png, demo_classes, _attacks()[attack], missing)
    for leaked in ("password", "12345"):
        assert leaked not in about_secret, about_secret
    assert about_secret == about_missing, "the answer tells whether the file exists"


def _curated() -> dict[str, list[str]]:
    from llmseg.stage2.demo.benchmark import CURATED_LABEL_SET

    return json.loads(CURATED_LABEL_SET.read_text(encoding="utf-8"))


def test_uploaded_label_set_equals_pasted_json(app, scene_png, demo_classes):
    text = json.dumps(_curated())
    pasted = app.handle(scene_png, demo_classes, label_mode="label set", label_set_text=text)
    uploaded = app.handle(scene_png, demo_classes, label_mode="label set", label_set_file=text.encode("utf-8"))
    assert pasted.ok and uploaded.ok, (pasted.message, uploaded.message)
    np.testing.assert_array_equal(uploaded.output.labels, pasted.output.labels)
    np.testing.assert_array_equal(uploaded.output.subclass, pasted.output.subclass)
    assert uploaded.label_set == pasted.label_set == _curated()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"label_set_text": '{"background": ["sky"], "background": ["grass"]}'}, "'background' is given twice"),
        ({"label_set_file": b"\xff\xfe not utf-8"}, "not UTF-8"),
        ({"label_set_file": b"[1, 2]"}, "JSON object"),
        ({"label_set_file": b"[" * 100_000}, "uploaded label set"),
    ],
)
def test_bad_label_set_inputs_are_named(app, scene_png, demo_classes, fields, expected):
    result = app.handle(scene_png, demo_classes, label_mode="label set", **fields)
    assert not result.ok and expected in result.message, result.message


def test_presets_come_from_the_bundled_list_or_an_upload(app, scene_png, demo_classes):
    from llmseg.stage2.methods.presets import PRESET_DIR, bundled_presets

    name = bundled_presets()[0]
    by_name = app.handle(scene_png, demo_classes, preset=name)
    upload = (PRESET_DIR / f"{name}.json").read_bytes()
    by_upload = app.handle(scene_png, demo_classes, preset_file=upload)
    assert by_name.ok and by_upload.ok, (by_name.message, by_upload.message)
    assert "uploaded preset" in by_upload.message and str(app.settings.cache_dir) not in by_upload.message
    np.testing.assert_array_equal(by_upload.output.labels, by_name.output.labels)

    unknown = app.handle(scene_png, demo_classes, preset="no-such-preset")
    assert not unknown.ok and "no-such-preset" in unknown.message and name in unknown.message
    bad_upload = app.handle(scene_png, demo_classes, preset_file=b'{"name": "x", "default": {}, "typo": 1}')
    assert not bad_upload.ok and "typo" in bad_upload.message, bad_upload.message


@pytest.fixture(scope="module")
def demo_weights(tmp_path_factory) -> tuple[str, str]:
    """('openclip:<demo arch>', a weights file on the server): a real local open_clip model."""
    from llmseg.stage2.demo.train import WEIGHTS_PATH, materialize, register_model_config

    arch = register_model_config()
    return f"openclip:{arch}", str(materialize(WEIGHTS_PATH, tmp_path_factory.mktemp("weights")))


def test_local_weights_need_the_flag_or_the_start_settings(tmp_path, scene_png, demo_classes, demo_weights):
    from llmseg.stage2.app.core import AppSettings, SegmentApp

    backbone, weights = demo_weights
    closed = SegmentApp(AppSettings(cache_dir=tmp_path / "closed"))
    refused = closed.handle(scene_png, demo_classes, backbone=backbone, weights=weights)
    assert not refused.ok and "--allow-local-weights" in refused.message, refused.message
    assert closed.pool.builds == 0

    opened = SegmentApp(AppSettings(cache_dir=tmp_path / "open", allow_local_weights=True))
    allowed = opened.handle(scene_png, demo_classes, backbone=backbone, weights=weights)
    assert allowed.ok, allowed.message

    # the operator's own start settings are trusted: `llmseg app --backbone ... --pretrained FILE`
    started = SegmentApp(AppSettings(cache_dir=tmp_path / "started", backbone=backbone, weights=weights))
    default = started.handle(scene_png, demo_classes)
    assert default.ok, default.message
    np.testing.assert_array_equal(default.output.labels, allowed.output.labels)


def test_cli_offers_allow_local_weights():
    from typer.testing import CliRunner

    import llmseg.cli

    result = CliRunner().invoke(llmseg.cli.app, ["app", "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0 and "--allow-local-weights" in result.output
