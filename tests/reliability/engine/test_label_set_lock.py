"""Issue 21 item 5, stage one: a label set being written by one `llmseg subclasses` run is refused to a second."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from typer.testing import CliRunner

from llmseg.cli import app
from llmseg.locks import hold_label_set, holder_path
from llmseg.stage1.testing.server import ScriptedLLMServer, valid

FIVE = ["tabby cat", "Siamese cat", "black cat", "Persian cat", "kitten"]


def _classes(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("background\ncat\n", encoding="utf-8")
    return path


def _subclasses(tmp_path, base_url, out, *extra):
    return CliRunner().invoke(app, ["subclasses", "toy", "--classes-file", str(_classes(tmp_path)), "--model", "m",
                                    "--base-url", base_url, "--out", str(out), "--quiet", "--backoff-base", "0.01",
                                    *extra])


def test_a_second_run_on_a_label_set_being_written_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "toy.json"
    with ScriptedLLMServer({"cat": [valid(FIVE)], "background": [valid(["sky", "wall", "floor", "road", "grass"])]}) as server:
        with hold_label_set(out):  # the first run, still going
            refused = _subclasses(tmp_path, server.base_url, out, "--force")
            assert server.request_count == 0  # refused before anything was asked (or paid)
        assert refused.exit_code == 2, refused.output
        assert f"pid {os.getpid()}" in refused.output and str(out) in refused.output
        assert not out.exists()
        done = _subclasses(tmp_path, server.base_url, out)  # the lock went with its holder
    assert done.exit_code == 0, done.output
    assert out.is_file() and not holder_path(out.with_name(out.name + ".lock")).exists()


def test_the_lock_is_held_by_a_real_process_and_named(tmp_path):
    out = tmp_path / "toy.json"
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from llmseg.locks import hold_label_set
        with hold_label_set({str(out)!r}):
            Path({str(go)!r}).with_suffix(".held").touch()
            while not Path({str(go)!r}).exists():
                time.sleep(0.05)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not go.with_suffix(".held").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        with ScriptedLLMServer() as server:
            refused = _subclasses(tmp_path, server.base_url, out)
        assert refused.exit_code == 2 and f"pid {proc.pid}" in refused.output, refused.output
    finally:
        go.touch()
        proc.wait(timeout=60)
