"""What a newcomer meets first: `evaluate --save-vis` shows image | ground truth | prediction in the
dataset's palette, a failed run leaves no results folder, a bad --preset is a one-line error, shell
completion is offered, and stage one's caches are ignored by git."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llmseg.cli import app  # noqa: E402

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
DEMO_FLAGS = ["--backbone", "demo-clip", "--dense-mode", "vanilla", "--templates", "single", "--short-side", "64",
              "--crop", "0", "--logit-scale", "50", "--prob-thd", "0", "--area-thd", "0"]


@pytest.fixture
def demo_data(tmp_path, monkeypatch):
    from llmseg.stage2.demo.benchmark import write_benchmark

    monkeypatch.setenv("LLMSEG_CACHE_DIR", str(tmp_path / "cache"))
    spec = write_benchmark(tmp_path / "data", n_images=2, size=64, progress=False)
    return spec, tmp_path / "data"


def _evaluate(data_root: Path, out: Path, *extra: str):
    return runner.invoke(app, ["evaluate", "--dataset", "demo", "--data-root", str(data_root), *DEMO_FLAGS,
                               "--num-workers", "0", "--no-progress", "--out", str(out), *extra])


def test_save_vis_puts_the_ground_truth_beside_the_prediction(demo_data, tmp_path):
    from llmseg.stage2.data.readers import list_samples, load_image, load_label
    from llmseg.stage2.pictures.palettes import palette_for
    from llmseg.stage2.pictures.visualize import BOUNDARY_COLOR, boundary_mask

    spec, data_root = demo_data
    out = tmp_path / "run"
    result = _evaluate(data_root, out, "--save-vis", "1", "--save-pred")
    assert result.exit_code == 0, result.output
    ref = list_samples(spec, data_root)[0]
    picture = np.asarray(Image.open(out / "vis" / f"{ref.stem}.png").convert("RGB"))
    image, truth = load_image(ref.image_path), load_label(ref.label_path).astype(np.int64)
    pred = np.asarray(Image.open(next((out / "pred").iterdir()))).astype(np.int64)
    colors = palette_for(list(spec.classes), "demo")
    assert colors.tolist() == [[0, 0, 0], [255, 120, 0], [0, 120, 255]]
    h, w = truth.shape
    top = next(y for y in range(picture.shape[0]) if np.array_equal(picture[y:y + h, :w], image))
    for panel, labels in enumerate((truth, pred), start=1):  # image | ground truth | prediction
        x = panel * (w + 4)
        valid = labels < len(colors)
        painted = np.zeros((h, w, 3))
        painted[valid] = colors[labels[valid]]
        want = np.where(valid[..., None], 0.5 * image + 0.5 * painted, image.astype(np.float64))
        want[boundary_mask(labels, 1)] = BOUNDARY_COLOR
        np.testing.assert_array_equal(picture[top:top + h, x:x + w], np.rint(want).astype(np.uint8))
    assert not (out / "vis" / f"{list_samples(spec, data_root)[1].stem}.png").exists()  # --save-vis 1


def test_a_failed_evaluate_leaves_no_results_folder(demo_data, tmp_path):
    from llmseg.stage2.data.readers import list_samples

    spec, data_root = demo_data
    first, second = (Path(ref.image_path) for ref in list_samples(spec, data_root))
    good = second.read_bytes()
    first.write_bytes(b"not a jpeg")
    out = tmp_path / "results" / "failed"
    result = _evaluate(data_root, out)
    assert result.exit_code != 0 and "--skip-bad" in result.output, result.output
    assert not out.exists(), sorted(str(p) for p in out.rglob("*"))
    # a run that failed after finishing an image keeps its checkpoint, to resume from
    first.write_bytes(good)
    second.write_bytes(b"not a jpeg")
    assert _evaluate(data_root, out).exit_code != 0
    assert (out / "checkpoint.json").is_file()
    shutil.rmtree(out)
    # a folder that existed before the run is kept as it was
    out.mkdir(parents=True)
    (out / "mine.txt").write_text("keep")
    _evaluate(data_root, out)
    assert (out / "mine.txt").read_text() == "keep"


def test_unknown_preset_is_one_line_naming_the_presets(tmp_path):
    scene = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(scene)
    result = runner.invoke(app, ["segment", str(scene), "--classes", "a, b", "--preset", "foo", "--backbone", "demo-clip",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "unknown preset 'foo'" in result.output and "sclip" in result.output
    assert "pydantic" not in result.output and "errors.pydantic.dev" not in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_shell_completion_is_offered():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "--install-completion" in result.output and "--show-completion" in result.output


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_stage_one_caches_under_label_sets_are_ignored():
    probe = subprocess.run(["git", "check-ignore", "-q", "label_sets/pascal_voc/.cache/top5.gpt-4o-mini.jsonl"], cwd=ROOT)
    assert probe.returncode == 0
    kept = subprocess.run(["git", "check-ignore", "-q", "label_sets/pascal_voc/top5.json"], cwd=ROOT)
    assert kept.returncode == 1




def test_simseg_tokenizer_from_a_saved_folder_offline(tmp_path, monkeypatch):
    """The README's offline recipe: a tokenizer saved into a folder loads from it with no network."""
    pytest.importorskip("transformers")
    from transformers import BertTokenizer

    from llmseg.stage2.backbones.simseg import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plain = tmp_path / "vocab_only"
    plain.mkdir()
    (plain / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nred\ncat\n", encoding="utf-8")
    saved = tmp_path / "saved"
    BertTokenizer.from_pretrained(str(plain)).save_pretrained(str(saved))
    for folder in (plain, saved):
        assert load_tokenizer(str(folder))("Red cat")["input_ids"] == [2, 5, 6, 3]


def test_every_readme_picture_has_the_command_that_makes_it():
    import re

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"\]\((docs/images/[\w.-]+\.png)\)", readme))
    assert shown and all((ROOT / path).is_file() for path in shown)
    for path in shown:
        if path == "docs/images/app.png":  # the browser test's screenshot, its command is beside it
            assert f"LLMSEG_APP_SCREENSHOT={path}" in readme
            continue
        assert re.search(rf"cp\s+\S+\s+{re.escape(path)}", readme), f"no command in the README writes {path}"
    assert not (ROOT / "docs/images/make_overlay.py").exists()
