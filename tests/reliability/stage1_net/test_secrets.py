"""Item 16 of issue 21: no API key, URL password or key-like query value in any file written or line printed.

Stage one runs as a real process against the scripted server, which echoes the credentials it receives
(in answers and in error messages); then every file under the output folder and all printed output
are searched for each secret.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmseg.redact import redact_url, url_secrets
from llmseg.stage1.testing import ScriptedLLMServer, echo_credentials, valid

KEY = "sk-ENVKEY-0123456789abcdef"
PASSWORD = "pw-Secret-4711"
QUERY_KEY = "QUERYKEY-98765"
TOKEN = "tok-AbCdEf-1357"


def _llmseg(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "import sys; from llmseg.cli import main; sys.argv[0] = 'llmseg'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=300)


def _leaks(root: Path, printed: str, secrets: list[str]) -> list[str]:
    """Every (file or 'output', secret) pair where a secret appears, raw or base64 of user:password."""
    found = [f"output: {s}" for s in secrets if s in printed]
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found


def test_no_secret_in_files_or_output_of_a_run(toy, tmp_path):
    env = {**os.environ, "MY_KEY": KEY, "LLMSEG_LABEL_SETS": str(toy)}
    scripts = {"cat": [echo_credentials()], "dog": [echo_credentials(status=500), echo_credentials()]}
    with ScriptedLLMServer(scripts) as server:
        # 1. the key from the environment, echoed in an answer and in a 500's message
        keyed = _llmseg("subclasses", "toy", "--model", "scripted", "--base-url", server.base_url, "--api-key-env", "MY_KEY",
                        "--out", str(toy / "toy" / "keyed.json"), "--backoff-base", "0.01", env=env)
        sent = [r.authorization for r in server.log]
    assert keyed.returncode == 0, keyed.stdout + keyed.stderr
    assert f"Bearer {KEY}" in sent  # the server did receive (and echo) the key
    answers = json.loads((toy / "toy" / "keyed.json").read_text())
    assert answers["cat"][0] == "cat ***"  # the echoed key was redacted before it was logged and parsed

    scripts = {"cat": [echo_credentials()], "dog": [echo_credentials(status=503), echo_credentials()]}
    with ScriptedLLMServer(scripts) as server:
        # 2. credentials inside the base URL: user:password and key-like query values
        host = server.base_url.split("://", 1)[1]
        url = f"http://alice:{PASSWORD}@{host}?api_key={QUERY_KEY}&token={TOKEN}&mode=fast"
        in_url = _llmseg("subclasses", "toy", "--model", "scripted", "--base-url", url,
                         "--out", str(toy / "toy" / "url.json"), "--backoff-base", "0.01", env=env)
        paths = [r.path for r in server.log]
    assert in_url.returncode == 0, in_url.stdout + in_url.stderr
    assert any(QUERY_KEY in p and "/chat/completions?" in p for p in paths)  # the query reached the server intact
    meta = json.loads((toy / "toy" / "url.meta.json").read_text())
    assert "--base-url 'http://***@" in meta["command"] and "api_key=***&token=***&mode=fast" in meta["command"]

    printed = keyed.stdout + keyed.stderr + in_url.stdout + in_url.stderr
    secrets = [KEY, PASSWORD, QUERY_KEY, TOKEN, *url_secrets(url)]
    secrets = [s for s in secrets if s != "alice"]
    assert _leaks(tmp_path, printed, secrets) == []


def test_refine_keeps_echoed_keys_and_old_sidecar_secrets_out(tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models"))
    import clashy
    from clashy import LABEL_SET, REPLACEMENTS, clashy_backbone

    from llmseg.cli import app
    from llmseg.labelset import LabelSetMeta, save_label_set

    folder = tmp_path / "pets"
    folder.mkdir()
    (folder / "classes.txt").write_text("cat\ndog\ncar\n", encoding="utf-8")
    source = folder / "top.json"
    old_command = f"llmseg subclasses pets --base-url 'http://bob:{PASSWORD}@example.org/v1?key={QUERY_KEY}'"
    save_label_set(source, LABEL_SET, LabelSetMeta(generator="openai", command=old_command))  # a pre-fix sidecar
    scripts = {name: [valid(new)] for name, new in REPLACEMENTS.items()}
    scripts["cat"] = [echo_credentials()]
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    # the hand-built encoder knows every text by name: give it the redacted echo (the only answer that should arrive)
    monkeypatch.setitem(clashy.VECTORS, "cat ***", clashy._e(0) + 0.4 * clashy._e(7))
    with clashy_backbone(), ScriptedLLMServer(scripts) as server:
        result = CliRunner().invoke(app, ["subclasses", "--refine", str(source), "--dataset", str(folder), "--backbone", "clashy",
                                          "--templates", "single", "--model", "scripted", "--base-url", server.base_url,
                                          "--quiet", "--backoff-base", "0.01", "--rounds", "1"])
        assert f"Bearer {KEY}" in [r.authorization for r in server.log]
    assert result.exit_code in (0, 1), result.output + repr(result.exception)
    refined = json.loads((folder / "top.refined.json").read_text())
    assert "cat ***" in refined["cat"], result.output
    assert old_command in (folder / "top.meta.json").read_text()  # the planted pre-fix sidecar (input, not output)
    (folder / "top.meta.json").unlink()
    assert (folder / "top.refined.meta.json").is_file()
    assert _leaks(tmp_path, result.output, [KEY, PASSWORD, QUERY_KEY]) == []


@pytest.mark.parametrize(("url", "expected"), [
    ("http://u:p@h:8/v1?api_key=K&x=1", "http://***@h:8/v1?api_key=***&x=1"),
    ("https://h/v1?X-Amz-Signature=abc&access_token=t&sig=s", "https://h/v1?X-Amz-Signature=***&access_token=***&sig=***"),
    ("http://h/v1", "http://h/v1"),
    ("http://TOKEN@[::1/v1", "http://***@[::1/v1"),  # not parseable as a URL: userinfo still masked
])
def test_redact_url(url, expected):
    assert redact_url(url) == expected


def test_a_key_echoed_in_batch_answers_is_not_stored(tmp_path):
    """The Batch API path: the server's answers (read from its output file) hold the key."""
    from llmseg.stage1.batch import BatchOptions
    from llmseg.stage1.generate import Backoff, generate_label_set

    def echoing(class_name: str, k: int) -> list[str]:
        return [f"{class_name} {KEY}", *(f"{class_name} variant {i}" for i in range(1, k))]

    cache = tmp_path / "log.jsonl"
    with ScriptedLLMServer(default=echoing) as server:
        label_set, meta = generate_label_set(
            ["cat", "dog"], backend="openai", model="scripted", base_url=server.base_url, api_key=KEY,
            batch=True, batch_options=BatchOptions(poll_interval=0.01, max_interval=0.02, timeout=30),
            cache_path=cache, backoff=Backoff(base=0.01, cap=0.05), progress=False,
        )
        assert server.batches.created == 1
    assert label_set.root["cat"][0] == "cat ***"
    assert KEY not in cache.read_text() and KEY not in json.dumps(meta.model_dump(mode="json"))


def _ask_once(base_url: str, api_key: str | None) -> None:
    from llmseg.stage1.backends.base import Sampling
    from llmseg.stage1.backends.openai_compat import OpenAIBackend

    backend = OpenAIBackend("scripted", base_url=base_url, api_key=api_key)
    try:
        backend.complete([{"role": "user", "content": "Class: cat\nNumber of subtypes: 5"}], schema=None, sampling=Sampling())
    finally:
        backend.close()


def test_a_base_url_password_that_replaces_the_key_is_warned_about(caplog):
    """With user:password@ in --base-url the SDK sends HTTP Basic auth, and the key never leaves: say so."""
    with ScriptedLLMServer({"cat": [valid()]}) as server:
        host = server.base_url.split("://", 1)[1]
        with caplog.at_level("WARNING", logger="llmseg.stage1.backends.openai_compat"):
            _ask_once(f"http://alice:{PASSWORD}@{host}", KEY)
        sent = [r.authorization for r in server.log]
    assert sent and all(a.startswith("Basic ") for a in sent)  # the fact the warning states: no Bearer key was sent
    warned = [r.getMessage() for r in caplog.records if "Basic auth instead of the API key" in r.getMessage()]
    assert len(warned) == 1 and PASSWORD not in warned[0] and KEY not in warned[0]


def test_no_warning_without_a_key_or_without_userinfo(caplog, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with ScriptedLLMServer({"cat": [valid(), valid()]}) as server:
        host = server.base_url.split("://", 1)[1]
        with caplog.at_level("WARNING", logger="llmseg.stage1.backends.openai_compat"):
            _ask_once(f"http://alice:{PASSWORD}@{host}", None)  # a local server behind Basic auth, no key to lose
            _ask_once(server.base_url, KEY)  # the key, no userinfo: sent as Bearer
        assert f"Bearer {KEY}" in [r.authorization for r in server.log]
    assert not [r for r in caplog.records if "Basic auth" in r.getMessage()]
