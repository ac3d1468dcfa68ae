"""Where data folders are found and where new label sets are written."""

from pathlib import Path

import pytest

import llmseg.resources as resources


def test_bundled_label_sets_resolve_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = resources.resolve_label_set_path("label_sets/pascal_voc/classes.txt")
    assert path.is_file() and path.read_text().startswith("background\n")
    with pytest.raises(FileNotFoundError, match="label set not found: label_sets/nope.json"):
        resources.resolve_label_set_path("label_sets/nope.json")


def test_new_label_sets_go_to_the_checkout_or_else_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMSEG_LABEL_SETS", raising=False)
    monkeypatch.chdir(tmp_path)
    checkout = tmp_path / "repo" / "label_sets"
    checkout.mkdir(parents=True)
    (tmp_path / "repo" / "pyproject.toml").write_text("[project]\nname = 'llmseg'\n")
    (tmp_path / "repo" / "stage2_segment").mkdir()
    monkeypatch.setattr(resources, "_package_dir", lambda name: checkout)
    assert resources.label_sets_output_dir() == checkout
    installed = tmp_path / "venv" / "lib" / "site-packages" / "llmseg" / "label_sets"
    installed.mkdir(parents=True)
    monkeypatch.setattr(resources, "_package_dir", lambda name: installed)
    assert resources.label_sets_output_dir() == Path.cwd() / "label_sets"
    target = tmp_path / "pip-target" / "llmseg" / "label_sets"  # pip install --target: no site-packages in the path
    target.mkdir(parents=True)
    monkeypatch.setattr(resources, "_package_dir", lambda name: target)
    assert resources.label_sets_output_dir() == Path.cwd() / "label_sets"
    monkeypatch.setenv("LLMSEG_LABEL_SETS", str(tmp_path / "mine"))
    assert resources.label_sets_output_dir() == tmp_path / "mine"
