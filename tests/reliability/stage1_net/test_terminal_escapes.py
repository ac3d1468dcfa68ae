"""Item 17 of issue 21: text from a file or a server never reaches the terminal with its control characters.

ESC[2J clears the screen and 0x9b is a one-byte CSI (C1): in a label-set key, a subclass string or a
server's plain-text error body they must be printed escaped (visible as \\x1b, \\x9b), never raw.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from llmseg.cli import app
from llmseg.stage1.testing import ScriptedLLMServer, raw_http

runner = CliRunner()
HOSTILE = "cat\x1b[2J\x9b31m\u202eevil"


def _raw_free(text: str) -> bool:
    return not any(ch in text for ch in "\x1b\x9b\u202e\x07")


def test_validate_prints_a_hostile_key_escaped(tmp_path, toy):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"background": ["sky"], HOSTILE: ["tabby\x07 cat"], "dog": ["beagle"]}), encoding="utf-8")
    result = runner.invoke(app, ["validate", str(path), "--dataset", "toy", "--no-check-length"])
    assert result.exit_code == 2
    assert _raw_free(result.output), result.output
    assert "cat\\x1b[2J\\x9b31m\\u202eevil" in result.output  # named, visibly


def test_diff_prints_hostile_keys_and_subclasses_escaped(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({HOSTILE: ["x\x1b]0;pwned\x07"], "dog": ["beagle\x9b"]}), encoding="utf-8")
    b.write_text(json.dumps({"dog": ["poodle"]}), encoding="utf-8")
    text = runner.invoke(app, ["subclasses", "diff", str(a), str(b)])
    as_json = runner.invoke(app, ["subclasses", "diff", str(a), str(b), "--json"])
    assert text.exit_code == 1 and as_json.exit_code == 1
    assert _raw_free(text.output) and "\\x9b" in text.output, text.output
    assert _raw_free(as_json.output)
    assert json.loads(as_json.output)["classes_only_in_a"] == [HOSTILE]  # still valid JSON with the exact key


def test_a_plain_text_server_error_is_printed_escaped(toy):
    body = "upstream failed \x1b[2J\x9b2J\x1b]0;owned\x07 try later"
    with ScriptedLLMServer({"cat": [raw_http(body, status=400, content_type="text/plain")]}) as server:
        result = runner.invoke(app, ["subclasses", "toy", "--model", "scripted", "--base-url", server.base_url,
                                     "--quiet", "--backoff-base", "0.01", "--max-retries", "0"], env={"OPENAI_API_KEY": "sk-test"})
    assert result.exit_code == 1
    assert "upstream failed" in result.output and "'cat'" in result.output
    assert _raw_free(result.output), result.output


def test_safe_text_escapes_every_control_character():
    from llmseg.cli_support import safe_text

    every = "".join(map(chr, range(0x00, 0x20))) + "\x7f" + "".join(map(chr, range(0x80, 0xA0)))
    escaped = safe_text(every, newlines=False)
    assert escaped.isprintable() and "\\x1b" in escaped and "\\x9b" in escaped
    assert safe_text("two\nlines") == "two\nlines" and safe_text("café ✓") == "café ✓"


def test_log_lines_from_the_cli_are_escaped():
    """Warnings logged while a command runs (no logging configured) reach the terminal escaped too."""
    import subprocess
    import sys

    code = ("import logging, llmseg.cli_support; "
            "logging.getLogger('llmseg.stage1.generate').warning('asking %s again', 'cat\\x1b[2J\\x9b')")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stderr
    assert "\x1b" not in err and "\x9b" not in err
    assert "asking cat\\x1b[2J\\x9b again" in err
