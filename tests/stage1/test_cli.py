"""`llmseg subclasses` end to end (typer's CliRunner) against the scripted server, and `diff`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llmseg.cli import app
from llmseg.labelset import load_label_set, load_meta, save_label_set
from llmseg.stage1.testing.server import ScriptedLLMServer, valid

runner = CliRunner()
FIVE = ["tabby cat", "Siamese cat", "black cat", "Persian cat", "kitten"]


@pytest.fixture
def toy(tmp_path, classes, monkeypatch):
    """A private label_sets/ folder with a `toy` dataset, so default output paths land in tmp_path."""
    root = tmp_path / "label_sets"
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    monkeypatch.setenv("LLMSEG_LABEL_SETS", str(root))
    return root


def invoke(*args):
    return runner.invoke(app, ["subclasses", *map(str, args)], catch_exceptions=False)


def test_generate_default_paths_validate_and_provenance(toy, classes):
    with ScriptedLLMServer({"cat": [valid(FIVE)]}) as server:
        result = invoke("toy", "--model", "Org/Some-Model-7B", "--base-url", server.base_url, "--quiet", "--backoff-base", "0.01")
    assert result.exit_code == 0, result.output
    out = toy / "toy" / "top5.some-model-7b.json"
    assert out.is_file() and not (toy / "toy" / "top5.json").exists()
    assert (toy / "toy" / ".cache" / "top5.some-model-7b.jsonl").is_file()
    label_set = load_label_set(out, classes)
    assert label_set.root["cat"] == FIVE
    meta = load_meta(out)
    assert meta.generator == "openai" and meta.model == "Org/Some-Model-7B" and meta.dataset == "toy"
    assert meta.model_extra["command"].startswith("llmseg subclasses toy --k 5 --backend openai --model Org/Some-Model-7B")
    assert "label_set_sha256" in meta.model_extra
    assert f"wrote {out}" in result.output and "5 classes, 5 requests" in result.output
    # the file passes `llmseg validate` with no errors
    check = runner.invoke(app, ["validate", str(out), "--dataset", "toy", "--no-check-length"])
    assert check.exit_code in (0, 1), check.output
    assert "0 errors" in check.output
    # a second run refuses to overwrite without --force, and then replays the cache
    with ScriptedLLMServer() as server:
        again = invoke("toy", "--model", "Org/Some-Model-7B", "--base-url", server.base_url, "--quiet")
        assert again.exit_code == 2 and "--force" in again.output
        forced = invoke("toy", "--model", "Org/Some-Model-7B", "--base-url", server.base_url, "--quiet", "--force")
        assert forced.exit_code == 0 and server.request_count == 0


def test_generate_with_classes_file_out_k_prompt_and_include_class_name(tmp_path, classes):
    classes_file = tmp_path / "mine.txt"
    classes_file.write_text("\n".join(classes) + "\n", encoding="utf-8")
    out = tmp_path / "x" / "top3.json"
    with ScriptedLLMServer() as server:
        result = invoke(
            "my_dataset", "--classes-file", classes_file, "--k", 3, "--out", out, "--base-url", server.base_url,
            "--model", "m", "--prompt", "subclasses.chils.v1", "--include-class-name", "--quiet",
        )  # fmt: skip
        assert "Generate a list of 3 types" in server.log[0].messages[-1]["content"]
    assert result.exit_code == 0, result.output
    label_set = load_label_set(out, classes)
    assert label_set.root["dog"] == ["dog", "dog variant 1", "dog variant 2", "dog variant 3"]
    meta = load_meta(out)
    assert meta.k == 3 and meta.prompt_id == "subclasses.chils.v1" and meta.model_extra["include_class_name"]
    assert "--include-class-name" in meta.model_extra["command"]


def test_failure_exit_code_names_the_classes(tmp_path, classes):
    classes_file = tmp_path / "toy" / "classes.txt"
    classes_file.parent.mkdir()
    classes_file.write_text("\n".join(classes) + "\n", encoding="utf-8")
    out = tmp_path / "toy" / "top5.json"
    with ScriptedLLMServer({"car": [valid(["a"])] * 3}) as server:
        result = invoke("toy", "--classes-file", classes_file, "--out", out, "--base-url", server.base_url,
                        "--model", "m", "--max-retries", 2, "--quiet", "--backoff-base", "0.01")  # fmt: skip
    assert result.exit_code == 1
    assert "stage one failed for 1 of 5 classes" in result.output and "'car'" in result.output
    assert not out.exists()


def test_api_key_flag_warns_and_never_lands_in_output_files(tmp_path, classes, monkeypatch):
    sentinel = "sk-SENTINEL-0123456789abcdef"
    classes_file = tmp_path / "toy" / "classes.txt"
    classes_file.parent.mkdir()
    classes_file.write_text("\n".join(classes) + "\n", encoding="utf-8")
    with ScriptedLLMServer() as server:
        result = invoke("toy", "--classes-file", classes_file, "--base-url", server.base_url, "--model", "m",
                        "--api-key", sentinel, "--out", tmp_path / "toy" / "a.json", "--quiet")  # fmt: skip
        assert result.exit_code == 0 and "shell history" in result.output
        monkeypatch.setenv("MY_LLM_KEY", sentinel)
        result = invoke("toy", "--classes-file", classes_file, "--base-url", server.base_url, "--model", "m",
                        "--api-key-env", "MY_LLM_KEY", "--out", tmp_path / "toy" / "b.json", "--quiet")  # fmt: skip
        assert result.exit_code == 0
        assert {r.authorization for r in server.log} == {f"Bearer {sentinel}"}
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 6  # two label sets, two sidecars, two caches
    for path in written:
        assert sentinel.encode() not in path.read_bytes(), path


def test_unknown_dataset_and_bad_backend_are_clear(toy):
    result = invoke("nope", "--model", "m")
    assert result.exit_code == 2 and "no class file for dataset 'nope'" in result.output
    result = invoke("toy", "--backend", "vllm")
    assert result.exit_code == 2 and "unknown backend 'vllm'" in result.output
    result = invoke("toy", "--backend", "hf")
    assert result.exit_code == 2 and "needs --model" in result.output


def test_help_of_the_group_and_both_commands():
    group = invoke("--help")
    assert group.exit_code == 0 and "generate" in group.output and "diff" in group.output
    assert "llmseg subclasses DATASET" in group.output
    assert invoke().exit_code in (0, 2)  # no arguments: the help
    generate = invoke("generate", "--help")
    for flag in ("--k", "--backend", "--base-url", "--api-key-env", "--prompt", "--concurrency", "--rpm", "--cache", "--force"):
        assert flag in generate.output
    diff = invoke("diff", "--help")
    assert diff.exit_code == 0 and "only A has" in diff.output


def test_diff_shows_per_class_differences(tmp_path):
    a, b = tmp_path / "top5.a.json", tmp_path / "top5.b.json"
    save_label_set(a, {"cat": ["tabby", "Siamese", "kitten"], "dog": ["poodle", "pug"], "car": ["sedan"]}, None)
    save_label_set(b, {"cat": ["Tabby", "Persian", "kitten"], "dog": ["poodle", "pug"], "bus": ["minibus"]}, None)
    result = invoke("diff", a, b)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    cat = lines.index("cat:  (overlap 2, jaccard 0.50)")
    assert lines[cat + 1 : cat + 5] == ["  - Siamese", "  + Persian", "  = tabby", "  = kitten"]
    assert "class 'car': only in" in result.output and "class 'bus': only in" in result.output
    assert "dog:" not in result.output  # identical classes are hidden unless --all
    assert "dog:  (same)" in invoke("diff", a, b, "--all").output
    data = json.loads(invoke("diff", a, b, "--json").output)
    assert data["changed"]["cat"] == {"common": ["tabby", "kitten"], "only_a": ["Siamese"], "only_b": ["Persian"]}
    assert data["unchanged"] == ["dog"] and data["classes_only_in_a"] == ["car"] and data["mean_jaccard"] == 0.75
    assert invoke("diff", a, a).exit_code == 0
    assert invoke("diff", a, tmp_path / "missing.json").exit_code == 2


def test_the_makefile_command_with_the_server_from_the_environment(toy, classes):
    """`make subclasses` runs `llmseg subclasses $(DATASET) --k $(K) --backend $(BACKEND) --model $(LLM)`."""
    import os
    import subprocess
    import sys

    with ScriptedLLMServer() as server:
        env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "LLMSEG_LABEL_SETS": str(toy)}
        command = [sys.executable, "-c", "from llmseg.cli import main; main()",
                   "subclasses", "toy", "--k", "5", "--backend", "openai", "--model", "scripted"]  # fmt: skip
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert server.request_count == len(classes)
    out = toy / "toy" / "top5.scripted.json"
    assert load_label_set(out, classes).classes == classes
    assert load_meta(out).model_extra["backend"]["base_url"].startswith(server.base_url)
    assert "100%" in result.stderr and "subclasses" in result.stderr  # the progress bar
    assert "5 classes, 5 requests (0 answers from cache), 0 retries, 0 re-asks, 0 failed" in result.stdout
