"""metrics.json records the command line, never the credentials a URL argument carries."""

from __future__ import annotations

import json
import sys

from rel_engine_support import build

from llmseg.stage2.engine.runner import RunConfig, evaluate


def test_metrics_json_command_has_no_url_credentials(synthetic, tmp_path, monkeypatch):
    root = synthetic("ade20k", n=2)
    argv = ["llmseg", "evaluate", "-d", "ade20k", "--pretrained", "https://user:hunter2pw@weights.example/v.bin?token=SECRET123&rev=7"]
    monkeypatch.setattr(sys, "argv", argv)
    spec, method = build("ade20k", root, noise=0.2)
    evaluate(method, spec, root, RunConfig(out=str(tmp_path / "out"), num_workers=0, progress=False))
    text = (tmp_path / "out" / "metrics.json").read_text()
    assert "hunter2pw" not in text and "SECRET123" not in text and "user:" not in text
    command = json.loads(text)["command"]
    assert command[:5] == argv[:5]  # everything else as typed
    assert command[5] == "https://***@weights.example/v.bin?token=***&rev=7"
