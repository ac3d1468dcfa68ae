"""`llmseg segment`: the three forms of the issue, outputs opened and checked, every bad-input rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from llmseg.stage2.pictures.palettes import palette_for, voc_palette


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    """The `llmseg` root app, where stage two mounts `segment`."""
    from llmseg.cli import app as root

    return root


@pytest.fixture
def run(app, tiny_weights, tiny_arch):
    runner = CliRunner()

    def invoke(*args: str):
        common = ["--backbone", f"openclip:{tiny_arch}", "--pretrained", tiny_weights, "--preset", "sclip",
                  "--short-side", "64", "--crop", "0", "--templates", "single"]
        result = runner.invoke(app, ["segment", *args, *common], catch_exceptions=False)
        return result

    return invoke


def _outputs(folder):
    """The per-image files (the run record aside; checked where it matters)."""
    return sorted(p.name for p in folder.iterdir() if p.name != "segment_run.json") if folder.exists() else []


def _record(folder) -> dict:
    return json.loads((folder / "segment_run.json").read_text())


def test_classes_form(run, photo_files, tmp_path):
    out = tmp_path / "out"
    result = run(*map(str, photo_files), "--classes", "red thing, blue thing", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert _outputs(out) == sorted(f"img{i}{s}" for i in range(3) for s in (".json", ".png", "_overlay.png"))
    colors = palette_for(["red thing", "blue thing"])
    for i, path in enumerate(photo_files):
        with Image.open(path) as src:
            size = src.size
        with Image.open(out / f"img{i}.png") as img:
            assert img.mode == "P" and img.size == size
            values = np.asarray(img)
            assert set(np.unique(values)) <= {0, 1}
            assert np.array_equal(np.array(img.getpalette()[:6]).reshape(2, 3), colors)
        with Image.open(out / f"img{i}_overlay.png") as img:
            assert img.width > size[0] and img.height >= size[1]
            legend = {tuple(c) for c in np.unique(np.asarray(img.convert("RGB"))[:, size[0]:].reshape(-1, 3), axis=0)}
        for cls in np.unique(values):
            assert tuple(map(int, colors[cls])) in legend
        summary = json.loads((out / f"img{i}.json").read_text())
        assert {e["name"] for e in summary["present"]} == {["red thing", "blue thing"][c] for c in np.unique(values)}
        assert (summary["height"], summary["width"]) == (size[1], size[0])
    assert "segmented 3 of 3 images" in result.output


def test_dataset_and_label_set_form(run, photo_files, tmp_path):
    out = tmp_path / "voc"
    result = run(str(photo_files[0]), "--dataset", "pascal_voc", "--label-set", "label_sets/pascal_voc/top5.json",
                 "--out", str(out))
    assert result.exit_code == 0, result.output
    assert _outputs(out) == ["img0.json", "img0.png", "img0_overlay.png", "img0_subclass.png"]
    with Image.open(out / "img0.png") as img:
        palette = np.array(img.getpalette()[: 21 * 3]).reshape(21, 3)
    assert np.array_equal(palette, voc_palette(21))  # the dataset's standard colours
    summary = json.loads((out / "img0.json").read_text())
    assert len(summary["classes"]) == 21 and summary["classes"][0] == "background"
    from llmseg.labelset import load_label_set
    from llmseg.resources import resolve_label_set_path

    label_set = load_label_set(resolve_label_set_path("label_sets/pascal_voc/top5.json"))
    for entry in summary["present"]:
        assert {s["name"] for s in entry["subclasses"]} <= set(label_set.subclasses(entry["name"]))


def test_subclasses_auto_form(run, photo_files, tmp_path):
    from llmseg.stage1.testing.server import ScriptedLLMServer, valid

    out = tmp_path / "auto"
    scripts = {"cat": [valid(["tabby cat", "black cat", "kitten"])], "dog": [valid(["beagle", "poodle", "husky"])]}
    with ScriptedLLMServer(scripts=scripts) as server:
        args = [str(photo_files[0]), str(photo_files[1]), "--classes", "cat, dog", "--subclasses", "auto",
                "--backend", "openai", "--model", "scripted", "--base-url", server.base_url, "--k", "3",
                "--out", str(out)]
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert server.count("cat") == 1 and server.count("dog") == 1
        label_set = json.loads((out / "label_set.json").read_text())
        assert label_set == {"cat": ["tabby cat", "black cat", "kitten"], "dog": ["beagle", "poodle", "husky"]}
        assert (out / "label_set.meta.json").is_file()
        for stem in ("img0", "img1"):
            assert (out / f"{stem}_subclass.png").is_file()
            summary = json.loads((out / f"{stem}.json").read_text())
            for entry in summary["present"]:
                assert {s["name"] for s in entry["subclasses"]} <= set(label_set[entry["name"]])
        again = run(*args)  # the answers are cached in the output folder: no new request
        assert again.exit_code == 0, again.output
        assert server.count() == 2


def test_missing_and_unreadable_images_do_not_stop_the_others(run, photo_files, tmp_path):
    broken = tmp_path / "in" / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    out = tmp_path / "out"
    result = run(str(photo_files[0]), str(tmp_path / "nope.jpg"), str(broken), str(photo_files[2]),
                 "--classes", "a, b", "--out", str(out))
    assert result.exit_code == 1
    assert _outputs(out) == sorted(f"img{i}{s}" for i in (0, 2) for s in (".json", ".png", "_overlay.png"))
    assert "nope.jpg" in result.output and "broken.jpg" in result.output
    assert "segmented 2 of 4 images" in result.output and "2 image(s) failed" in result.output
    record = _record(out)
    assert sorted(record["images"]) == ["img0", "img2"]
    assert sorted(record["failed"]) == sorted([str(tmp_path / "nope.jpg"), str(broken)])


def test_same_stem_twice_is_refused_for_the_second(run, photo_files, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    Image.open(photo_files[1]).save(other / "img0.png")
    out = tmp_path / "out"
    result = run(str(photo_files[0]), str(other / "img0.png"), "--classes", "a, b", "--out", str(out))
    assert result.exit_code == 1
    assert "already taken" in result.output
    with Image.open(out / "img0.png") as img, Image.open(photo_files[0]) as src:
        assert img.size == src.size  # the first one's output, not overwritten


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--classes", ""], "empty"),
        (["--classes", " , "], "empty"),
        (["--classes", "cat, dog, cat"], "'cat' is given twice"),
        ([], "give the class names"),
        (["--classes", "cat", "--dataset", "pascal_voc"], "not both"),
        (["--classes", "cat, dog", "--label-set", "LS", "--subclasses", "auto"], "not both"),
        (["--classes", "cat, dog", "--subclasses", "yes"], "'auto'"),
        (["--dataset", "no_such_dataset"], "no_such_dataset"),
    ],
)
def test_bad_run_inputs_stop_before_writing(run, photo_files, tmp_path, args, message):
    out = tmp_path / "out"
    args = [str(tmp_path / "ls.json") if a == "LS" else a for a in args]
    result = run(str(photo_files[0]), *args, "--out", str(out))
    assert result.exit_code == 2
    assert message in result.output
    assert _outputs(out) == []


@pytest.mark.parametrize(
    ("label_set", "culprit"),
    [
        ({"cat": ["tabby"]}, "'dog'"),  # missing class
        ({"cat": ["tabby"], "dog": ["beagle"], "cow": ["calf"]}, "'cow'"),  # extra class
        ({"dog": ["beagle"], "cat": ["tabby"]}, "out of order"),
        ({"cat": ["tabby"], "dog": []}, "'dog'"),  # empty list
    ],
)
def test_label_set_not_matching_the_classes(run, photo_files, tmp_path, label_set, culprit):
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(label_set))
    out = tmp_path / "out"
    result = run(str(photo_files[0]), "--classes", "cat, dog", "--label-set", str(path), "--out", str(out))
    assert result.exit_code == 2
    assert culprit in result.output and "ls.json" in result.output
    assert _outputs(out) == []


def test_bad_method_option_names_the_option(run, photo_files, tmp_path):
    result = run(str(photo_files[0]), "--classes", "a, b", "--assembly", "median", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "--assembly" in result.output


def test_simseg_llm_supervision_form(app, simseg_files, photo_files, tmp_path):
    """The issue's second form: --dataset pascal_voc --label-set ... --method llm-supervision --backbone simseg."""
    checkpoint, tokenizer = simseg_files
    out = tmp_path / "simseg"
    result = CliRunner().invoke(
        app,
        ["segment", str(photo_files[0]), str(photo_files[1]), "--dataset", "pascal_voc", "--label-set",
         "label_sets/pascal_voc/top5.json", "--method", "llm-supervision", "--backbone", "simseg", "--checkpoint",
         checkpoint, "--text-tokenizer", tokenizer, "--templates", "single", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert _outputs(out) == sorted(f"img{i}{s}" for i in (0, 1) for s in (".json", ".png", "_overlay.png", "_subclass.png"))
    record = _record(out)
    assert record["method"]["method"] == "llm-supervision" and record["method"]["crf"] is True  # the seed's default
    assert record["config"]["crf"] is None and record["dataset"] == "pascal_voc"
    for i, path in enumerate(photo_files[:2]):
        with Image.open(path) as src, Image.open(out / f"img{i}.png") as img:
            assert img.size == src.size and img.mode == "P"
            assert np.asarray(img).max() < 21


def test_segment_exposes_every_method_option(app):
    from llmseg.stage2.config import MethodConfig
    from llmseg.stage2.options import flag

    result = CliRunner().invoke(app, ["segment", "--help"], terminal_width=200, env={"COLUMNS": "200"})
    flat = " ".join(result.output.split())
    for name in MethodConfig.model_fields:
        assert flag(name) in flat, name  # --mode-options: the repeatable --mode-option


def test_a_folder_stands_for_its_images(run, photo_files, tmp_path):
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = run(str(tmp_path / "in"), "--classes-file", str(_classes_file(tmp_path)), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert _outputs(out) == sorted(f"img{i}{s}" for i in range(3) for s in (".json", ".png", "_overlay.png"))
    assert json.loads((out / "img0.json").read_text())["classes"] == ["sky", "ground"]


def _classes_file(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("sky\nground\n")
    return path


def test_bad_method_option_is_caught_before_stage_one(run, photo_files, tmp_path):
    from llmseg.stage1.testing.server import ScriptedLLMServer

    with ScriptedLLMServer() as server:
        result = run(str(photo_files[0]), "--classes", "cat, dog", "--subclasses", "auto", "--model", "scripted",
                     "--base-url", server.base_url, "--precision", "fp8", "--out", str(tmp_path / "o"))
        assert result.exit_code == 2 and "--precision" in result.output
        assert server.count() == 0
    assert _outputs(tmp_path / "o") == []


def test_no_crf_and_reserved_names(app, simseg_files, photo_files, tmp_path):
    checkpoint, tokenizer = simseg_files
    reserved = tmp_path / "in" / "label_set.png"
    Image.open(photo_files[0]).save(reserved)
    out = tmp_path / "nocrf"
    result = CliRunner().invoke(
        app,
        ["segment", str(photo_files[0]), str(reserved), "--classes", "background, cat, dog", "--method",
         "llm-supervision", "--backbone", "simseg", "--checkpoint", checkpoint, "--text-tokenizer", tokenizer,
         "--templates", "single", "--no-crf", "--out", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 1 and "reserved" in result.output
    assert _outputs(out) == ["img0.json", "img0.png", "img0_overlay.png"]
    assert _record(out)["method"]["crf"] is False


def test_rerun_skips_finished_images_only_with_the_same_settings(run, photo_files, tmp_path):
    """An interrupted run (here: one that got two of three images) resumes; other settings redo everything."""
    out = tmp_path / "out"
    first = run(*map(str, photo_files[:2]), "--classes", "red thing, blue thing", "--out", str(out))
    assert first.exit_code == 0, first.output
    assert _record(out)["complete"] is True
    stamps = {name: (out / name).stat().st_mtime_ns for name in _outputs(out)}

    again = run(*map(str, photo_files), "--classes", "red thing, blue thing", "--out", str(out))
    assert again.exit_code == 0, again.output
    assert "segmented 3 of 3 images" in again.output and "(2 finished by an earlier run" in again.output
    assert all((out / name).stat().st_mtime_ns == stamp for name, stamp in stamps.items())  # not rewritten
    assert (out / "img2.png").is_file() and set(_record(out)["images"]) == {"img0", "img1", "img2"}

    other = run(*map(str, photo_files), "--classes", "red thing, green thing", "--out", str(out))
    assert other.exit_code == 0 and "finished by an earlier run" not in other.output
    assert (out / "img0.png").stat().st_mtime_ns != stamps["img0.png"]  # redone under the new settings
    assert _record(out)["classes"][1] == "green thing"
    assert json.loads((out / "img0.json").read_text())["classes"] == ["red thing", "green thing"]

    redo = run(*map(str, photo_files), "--classes", "red thing, green thing", "--out", str(out), "--no-resume")
    assert redo.exit_code == 0 and "finished by an earlier run" not in redo.output


def test_a_folder_of_images_shows_a_progress_bar(run, photo_files, tmp_path):
    """`segment` over a folder draws a bar counting the images (--progress forces it off a terminal)."""
    folder = photo_files[0].parent
    out = tmp_path / "out"
    result = run(str(folder), "--classes", "red thing, blue thing", "--out", str(out), "--progress")
    assert result.exit_code == 0, result.output
    assert "segment: 100%" in result.output and f"{len(photo_files)}/{len(photo_files)}" in result.output
    quiet = run(str(folder), "--classes", "red thing, blue thing", "--out", str(tmp_path / "quiet"), "--no-progress")
    assert quiet.exit_code == 0 and "segment:" not in quiet.output
