"""The page's request handler without a browser: bad inputs come back as messages (the app keeps serving),
good ones give exactly what `Segmenter` gives, the model is built once and text embeddings are reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .conftest import DEMO_CLASSES


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from llmseg.stage2.app.core import AppSettings, SegmentApp

    cache = tmp_path_factory.mktemp("app_cache")
    return SegmentApp(AppSettings(cache_dir=cache))


def test_good_request_equals_segmenter(app, reference_segmenter, scene_png, curated_label_set):
    from llmseg.stage2.app.core import LABEL_SET

    result = app.handle(scene_png, DEMO_CLASSES, label_mode=LABEL_SET, label_set_text=json.dumps(curated_label_set))
    assert result.ok, result.message
    expected = reference_segmenter(np.asarray(Image.open(scene_png).convert("RGB")), classes=DEMO_CLASSES,
                                   label_set=curated_label_set)
    np.testing.assert_array_equal(result.output.labels, expected.labels)
    np.testing.assert_array_equal(result.output.subclass, expected.subclass)
    png, summary = result.files
    with Image.open(png) as label_png:
        assert label_png.mode == "P"
        np.testing.assert_array_equal(np.asarray(label_png).astype(np.int64), expected.labels)
    assert json.loads(open(summary, encoding="utf-8").read()) == json.loads(json.dumps(expected.summary()))
    for name in DEMO_CLASSES.split(", "):
        assert f'data-class="{name}"' in result.legend_html
    assert result.overlay.size[1] >= expected.image.shape[0]
    assert result.subclass_overlay is not None
    assert result.label_set == curated_label_set


def test_model_built_once_and_text_embeddings_reused(app, scene_png):
    segmenter = app.warm_up()
    builds = app.pool.builds
    calls = []
    original = segmenter.backbone.encode_text

    def counting(texts):
        calls.append(len(texts))
        return original(texts)

    segmenter.backbone.encode_text = counting
    try:
        classes = "background, red shape, teal shape"  # names this module has not embedded yet
        first = app.handle(scene_png, classes)
        assert first.ok, first.message
        assert calls, "the first request with new classes must run the text encoder"
        seen = len(calls)
        second = app.handle(scene_png, classes)
        assert second.ok, second.message
        assert len(calls) == seen, "a second request with the same classes must reuse the text embeddings"
        np.testing.assert_array_equal(first.output.labels, second.output.labels)
    finally:
        segmenter.backbone.encode_text = original
    assert app.pool.builds == builds
    assert app.warm_up() is segmenter


@pytest.fixture
def bad_files(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    Image.new("RGB", (64, 64), (10, 200, 30)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    huge = tmp_path / "huge.png"
    Image.new("L", (4100, 4100), 128).save(huge)  # 16.8 MP > the default 16.77 MP limit, a small file
    return {"text": str(text), "truncated": str(truncated), "huge": str(huge)}


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ({"classes": ""}, "class list is empty"),
        ({"classes": " , "}, "empty name"),
        ({"classes": "cat, dog, cat"}, "'cat' is given twice"),
        ({"image": None}, "no image"),
        ({"image": "text"}, "notes.png' is not an image"),
        ({"image": "truncated"}, "cut.png"),
        ({"image": "huge"}, "megapixels"),
        ({"label_mode": "label set", "label_set_text": ""}, "label-set box is empty"),
        ({"label_mode": "label set", "label_set_text": '{"background": ['}, "not valid UTF-8 JSON"),
        ({"label_mode": "label set", "label_set_text": '{"cat": ["tabby"]}'}, "background"),
        ({"label_mode": "subclasses from an LLM"}, "--base-url"),
        ({"backbone": "openclip:no-such-arch", "weights": "openai"}, "no-such-arch"),
        ({"backbone": "openclip:ViT-B-16"}, "needs weights"),
        ({"method": "no-such-method"}, "no-such-method"),
    ],
)
def test_bad_input_gives_a_message(app, scene_png, bad_files, monkeypatch, case, expected):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    args = {"image": scene_png, "classes": DEMO_CLASSES, **case}
    if args["image"] in bad_files:
        args["image"] = bad_files[args["image"]]
    result = app.handle(**args)
    assert not result.ok
    assert expected in result.message, result.message
    assert result.files == [] and result.overlay is None
    after = app.handle(scene_png, DEMO_CLASSES)  # the app still serves
    assert after.ok, after.message


def test_subclasses_from_an_llm_are_generated_once(tmp_path, scene_png, reference_segmenter, curated_label_set):
    from llmseg.stage1.testing.server import ScriptedLLMServer
    from llmseg.stage2.app.core import FROM_LLM, AppSettings, SegmentApp

    def answer(class_name: str, k: int) -> list[str]:
        return list(curated_label_set[class_name][:k])

    with ScriptedLLMServer(default=answer, model="scripted") as server:
        settings = AppSettings(cache_dir=tmp_path, base_url=server.base_url, llm_model="scripted", k=3)
        app = SegmentApp(settings)
        first = app.handle(scene_png, DEMO_CLASSES, label_mode=FROM_LLM)
        assert first.ok, first.message
        asked = server.request_count
        assert sorted(server.classes_requested()) == sorted(DEMO_CLASSES.split(", "))
        second = app.handle(scene_png, DEMO_CLASSES, label_mode=FROM_LLM)
        assert second.ok and server.request_count == asked
    assert first.label_set == curated_label_set
    expected = reference_segmenter(scene_png, classes=DEMO_CLASSES, label_set=curated_label_set)
    np.testing.assert_array_equal(first.output.labels, expected.labels)
    # a fresh app (a restart) finds the answers in the on-disk cache: the server is stopped, so asking would fail
    restarted = SegmentApp(AppSettings(cache_dir=tmp_path, base_url=server.base_url, llm_model="scripted", k=3))
    third = restarted.handle(scene_png, DEMO_CLASSES, label_mode=FROM_LLM)
    assert third.ok, third.message
    assert third.label_set == curated_label_set


def test_cli_stays_light_and_names_the_extra_without_gradio(tmp_path):
    code = (
        "import sys\n"
        "import llmseg.cli\n"
        "assert 'gradio' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n"
        "sys.modules['gradio'] = None  # as if the extra were not installed\n"
        "from typer.testing import CliRunner\n"
        "result = CliRunner().invoke(llmseg.cli.app, ['app', '--cache-dir', sys.argv[1]])\n"
        "print(result.exit_code)\n"
        "print('torch' in sys.modules)\n"
        "print(result.output)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    code_line, torch_loaded, output = done.stdout.split("\n", 2)
    assert code_line == "2"
    assert torch_loaded == "False"  # the missing extra is named before any model code (torch) is loaded
    assert "pip install 'llmseg[app]'" in output


def test_settings_take_string_folders(tmp_path):
    from llmseg.stage2.app.core import AppSettings

    settings = AppSettings(cache_dir=str(tmp_path))
    assert settings.outputs == tmp_path / "app" / "outputs"
    assert AppSettings(cache_dir=str(tmp_path), work_dir=str(tmp_path / "w")).outputs == tmp_path / "w"


def test_cli_model_options_are_the_generated_method_options(tmp_path, monkeypatch):
    """`llmseg app` takes --backbone ... --device from cli.options (MethodConfig's help, the registered names),
    and builds AppSettings from them: the weights are --checkpoint for simseg, else --pretrained."""
    from typer.testing import CliRunner

    import llmseg.cli
    from llmseg.stage2.app import ui
    from llmseg.stage2.cli.options import help_text

    runner = CliRunner()
    shown = runner.invoke(llmseg.cli.app, ["app", "--help"], terminal_width=400, env={"COLUMNS": "400", "NO_COLOR": "1"})
    assert shown.exit_code == 0, shown.output
    registered = help_text("backbone").split(" Registered: ", 1)[1].split(".", 1)[0]
    assert "simseg" in registered and "openclip:<arch>" in registered
    backbone_line = next(line for line in shown.output.splitlines() if "--backbone" in line)
    assert f"Registered: {registered}." in backbone_line and "[default: demo]" in backbone_line
    # the app's own default replaces MethodConfig's "(default openclip:ViT-B-16)", and the app says what 'demo' is
    assert "(default openclip" not in backbone_line and "'demo' is the bundled demo CLIP" in backbone_line
    assert "(default openclip:ViT-B-16)" in help_text("backbone")  # evaluate's help keeps it
    assert "Registered: " + help_text("method").split(" Registered: ", 1)[1].split(".", 1)[0] in shown.output

    served = []
    monkeypatch.setattr(ui, "import_gradio", lambda: None)
    monkeypatch.setattr(ui, "launch", lambda settings, host, port: served.append((settings, host, port)))
    common = ["app", "--cache-dir", str(tmp_path), "--port", "0"]
    runs = {
        "simseg": ["--backbone", "simseg", "--checkpoint", "ckpt.pth", "--pretrained", "openai", "--device", "cuda:1"],
        "openclip": ["--backbone", "openclip:ViT-B-16", "--pretrained", "openai", "--checkpoint", "ckpt.pth",
                     "--method", "llm-supervision", "--preset", "naclip"],
        "defaults": [],
    }
    for name, args in runs.items():
        result = runner.invoke(llmseg.cli.app, common + args)
        assert result.exit_code == 0, (name, result.output)
    (simseg, _, port), (openclip, _, _), (default, host, _) = served
    assert (simseg.backbone, simseg.weights, simseg.device, port) == ("simseg", "ckpt.pth", "cuda:1", 0)
    assert (openclip.backbone, openclip.weights, openclip.method, openclip.preset) == (
        "openclip:ViT-B-16", "openai", "llm-supervision", "naclip")
    assert (default.backbone, default.weights, default.method, default.preset, default.device, host) == (
        "demo", None, "dense", None, "cpu", "127.0.0.1")
    assert default.cache_dir == tmp_path
    from llmseg.stage2.app.core import KEEP_OUTPUTS

    assert default.keep_outputs == KEEP_OUTPUTS


def test_only_the_newest_request_outputs_are_kept(tmp_path, scene_png):
    """A long-running app removes the downloads of old requests (--keep-outputs), never the current one's or
    anything it did not write."""
    from llmseg.stage2.app.core import AppSettings, SegmentApp

    settings = AppSettings(cache_dir=tmp_path, keep_outputs=2)
    mine = settings.outputs / "notes"
    mine.mkdir(parents=True)
    (settings.outputs / "123-00001.txt").write_text("a file, not a request folder")
    app = SegmentApp(settings)
    results = []
    for _ in range(4):
        result = app.handle(scene_png, DEMO_CLASSES)
        assert result.ok, result.message
        results.append(result)
        time.sleep(0.02)  # distinct modification times
    folders = {Path(f).parent for r in results for f in r.files}
    left = sorted(p for p in settings.outputs.iterdir() if p.is_dir() and p != mine)
    assert left == sorted({Path(f).parent for r in results[-2:] for f in r.files}) and len(folders) == 4
    assert all(Path(f).is_file() for f in results[-1].files) and not any(Path(f).exists() for f in results[0].files)
    assert mine.is_dir() and (settings.outputs / "123-00001.txt").is_file()


def test_prune_outputs_keeps_all_with_zero_and_never_the_current_folder(tmp_path):
    from llmseg.stage2.app.core import prune_outputs

    folders = [tmp_path / f"1-{i:05d}" for i in range(5)]
    for index, folder in enumerate(folders):
        folder.mkdir()
        os.utime(folder, (1000 + index, 1000 + index))
    assert prune_outputs(tmp_path, 0) == [] and all(f.is_dir() for f in folders)
    # the current request's folder is kept even when its time says it is old (a clock step)
    os.utime(folders[0], (1, 1))
    removed = prune_outputs(tmp_path, 2, keep=folders[0])
    assert sorted(removed) == folders[1:3]
    assert [f.is_dir() for f in folders] == [True, False, False, True, True]
