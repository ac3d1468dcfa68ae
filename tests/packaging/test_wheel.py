"""The installed shape: one import name (`llmseg`), bundled data only, and a wheel that works on its own.

The wheel is built from a copy of the checkout into which a user's label set, a stage-one cache
and a results folder were planted, as they are in a checkout that has been used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_ANYWHERE = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", ".mypy_cache",
                                   ".hypothesis")
# at the root: every virtual environment (.venv, CI's .venv-latest: gigabytes each) and the run outputs
_AT_ROOT = shutil.ignore_patterns(".venv*", "build", "dist", "results", "data", "ckpts", "out")


def IGNORED(folder: str, names: list[str]) -> set[str]:
    """What a checkout holds besides its sources: skipped when copying it."""
    skipped = set(_ANYWHERE(folder, names))
    return skipped | set(_AT_ROOT(folder, names)) if Path(folder) == REPO else skipped

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src") / "llmseg"
    shutil.copytree(REPO, src, ignore=IGNORED)
    voc = src / "label_sets" / "pascal_voc"
    (voc / "top5.my-llm.json").write_text((voc / "top5.json").read_text())
    (voc / "top5.my-llm.meta.json").write_text("{}")
    (voc / ".cache").mkdir()
    (voc / ".cache" / "top5.my-llm.jsonl").write_text("{}\n")
    (src / "label_sets" / "my_dataset").mkdir()
    (src / "label_sets" / "my_dataset" / "classes.txt").write_text("background\ncat\n")
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        check=True, capture_output=True, text=True,
    )
    (built,) = out.glob("llmseg-*.whl")
    return built


def test_wheel_has_one_top_level_package_and_no_user_label_sets(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith((".dist-info", ".data"))}
    assert top == {"llmseg"}, top
    label_files = sorted(n for n in names if n.startswith("llmseg/label_sets/") and not n.endswith(".py"))
    assert label_files, "the bundled label sets are missing from the wheel"
    assert not [n for n in label_files if "my-llm" in n or "/.cache/" in n or "my_dataset" in n], label_files
    bundled = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "label_sets").glob("*/*") if p.is_file())
    shipped = sorted(n.removeprefix("llmseg/") for n in label_files)
    assert set(shipped) <= set(bundled)
    for required in ("label_sets/pascal_voc/classes.txt", "label_sets/pascal_voc/top5.json", "label_sets/ade20k/top5.meta.json",
                     *(f"label_sets/{p.parent.name}/dataset.json" for p in (REPO / "label_sets").glob("*/dataset.json"))):
        assert required in shipped
    assert any(n.startswith("llmseg/prompts/") and n.endswith(".md") for n in names)
    assert any(n.endswith(".safetensors") for n in names), "the demo CLIP weights are missing"
    assert any(n.startswith("llmseg/stage2/methods/preset_files/") for n in names)


def test_wheel_install_works_without_the_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("LLMSEG_LABEL_SETS", None)
    env.pop("LLMSEG_PROMPTS", None)
    code = (
        "import llmseg, pathlib\n"
        "from llmseg import Segmenter, evaluate, generate_label_set, LabelSet, get_dataset\n"
        "from llmseg.resources import label_sets_dir, prompts_dir, label_sets_output_dir\n"
        "print(pathlib.Path(llmseg.__file__).resolve())\n"
        "print(label_sets_dir().resolve()); print(prompts_dir().resolve()); print(label_sets_output_dir().resolve())\n"
        "print(len(get_dataset('pascal_voc').classes))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    package, labels, prompts, output, n = run.stdout.split()
    assert Path(package).is_relative_to(site.resolve())
    assert Path(labels).is_relative_to(site.resolve()) and Path(prompts).is_relative_to(site.resolve())
    assert Path(output) == (tmp_path / "label_sets").resolve(), "new label sets must not go into the installed package"
    assert int(n) == 21
    cli = subprocess.run([sys.executable, "-c", "from llmseg.cli import main; main()", "validate",
                          "label_sets/pascal_voc/top5.json", "--dataset", "pascal_voc", "-q"],
                         env=env, cwd=tmp_path, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr


def test_editable_install_maps_the_design_folders():
    import llmseg
    import llmseg.label_sets
    import llmseg.prompts
    import llmseg.stage1
    import llmseg.stage2

    assert Path(llmseg.__file__).parent == REPO / "shared"
    assert Path(llmseg.stage1.__file__).parent == REPO / "stage1_llm"
    assert Path(llmseg.stage2.__file__).parent == REPO / "stage2_segment"
    assert Path(next(iter(llmseg.label_sets.__path__))) == REPO / "label_sets"
    assert Path(next(iter(llmseg.prompts.__path__))) == REPO / "prompts"


def test_editable_install_exposes_no_generic_top_level_names(tmp_path):
    """Outside the checkout only `llmseg` is importable: no `shared`, `prompts`, ... to clash with."""
    code = (
        "import importlib.util\n"
        "for name in ('shared', 'stage1_llm', 'stage2_segment', 'label_sets', 'prompts'):\n"
        "    print(name, importlib.util.find_spec(name) is not None)\n"
        "print('llmseg', importlib.util.find_spec('llmseg') is not None)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    found = dict(line.split() for line in run.stdout.splitlines())
    assert found == {"shared": "False", "stage1_llm": "False", "stage2_segment": "False", "label_sets": "False",
                     "prompts": "False", "llmseg": "True"}, found
