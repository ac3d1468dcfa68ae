"""Item 8: a full or read-only disk names the error and the path, keeps paid answers, and a rerun recovers.

The disk is made to fail on purpose (we run as root, so chmod would not stop a write): the cache's
`open` in `llmseg.io` returns a file whose writes raise ENOSPC, and the label-set writer's
`Path.write_bytes` / `os.replace` raise ENOSPC on a chosen call.
"""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmseg.cli import app
from llmseg.io import read_jsonl, sha256_file
from llmseg.labelset import load_label_set, load_meta
from llmseg.stage1.testing.server import ScriptedLLMServer, valid

CLASSES = ["background", "cat", "dog"]
CAT = ["tabby cat", "Siamese cat", "black cat", "Persian cat", "kitten"]
runner = CliRunner()


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """A private label_sets/ folder with a `toy` dataset of three classes."""
    root = tmp_path / "label_sets"
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "classes.txt").write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
    monkeypatch.setenv("LLMSEG_LABEL_SETS", str(root))
    return root / "toy"


def invoke(server, out: Path, *extra: str):
    args = ["subclasses", "toy", "--base-url", server.base_url, "--quiet", "--backoff-base", "0.01", "--out", str(out),
            "--concurrency", "1", *extra]
    return runner.invoke(app, args, catch_exceptions=False)


class _FullFile(io.RawIOBase):
    """A writable file on a full disk: every write raises ENOSPC."""

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _full_disk_for(monkeypatch, victim: Path, after: int = 0) -> None:
    """Appends to `victim` fail with ENOSPC once `after` of them succeeded; other files are written normally."""
    import llmseg.io as shared_io

    done = {"n": 0}
    real_open = open

    def fake_open(file, mode="r", *args, **kwargs):
        if Path(file) == victim and ("a" in mode or "w" in mode):
            if done["n"] >= after:
                return io.BufferedRandom(_SeekableFull(real_open(file, "a+b")))
            done["n"] += 1
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(shared_io, "open", fake_open, raising=False)


class _SeekableFull(_FullFile):
    """The real file for seeks and reads (the append checks its last byte), a full disk for writes."""

    def __init__(self, fh):
        self._fh = fh

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seek(self, offset, whence=0) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readinto(self, buffer) -> int:
        return self._fh.readinto(buffer)

    def fileno(self) -> int:
        return self._fh.fileno()

    def close(self) -> None:
        self._fh.close()
        super().close()


def test_a_full_disk_under_the_cache_keeps_the_paid_answer_and_the_rerun_uses_it(toy, tmp_path, monkeypatch):
    out = toy / "mine.json"
    cache = toy / ".cache" / "mine.jsonl"
    _full_disk_for(monkeypatch, cache, after=1)  # the first answer is logged, the second finds the disk full
    with ScriptedLLMServer({"cat": [valid(CAT)]}) as server:
        result = invoke(server, out)
        paid = server.classes_requested()
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    message = " ".join(result.output.split())
    assert "No space left on device" in message and str(cache) in message
    rescue = next((tmp_path / "rescue").glob("llmseg-rescue-mine-*.jsonl"))
    assert str(rescue) in message
    assert [r["class"] for r in read_jsonl(rescue)] == [paid[1]]  # the answer the disk refused
    assert not out.exists()

    monkeypatch.undo()
    monkeypatch.setenv("LLMSEG_LABEL_SETS", str(toy.parent))
    monkeypatch.setenv("LLMSEG_RESCUE_DIR", str(tmp_path / "rescue"))
    with ScriptedLLMServer({"cat": [valid(CAT)]}) as server:
        again = invoke(server, out)
        asked = server.classes_requested()
    assert again.exit_code == 0, again.output
    assert not set(paid) & set(asked)  # neither the logged answer nor the rescued one is paid for twice
    assert sorted(paid + asked) == sorted(CLASSES)
    assert load_label_set(out, CLASSES).root["cat"] == CAT
    assert not rescue.exists()  # moved into the cache once the disk had room
    assert {r["class"] for r in read_jsonl(cache) if r["kind"] == "answer"} == set(CLASSES)


def test_when_the_rescue_file_fails_too_the_error_says_the_answer_is_lost(tmp_path, monkeypatch):
    from llmseg.errors import LlmsegError
    from llmseg.stage1.cache import AnswerCache, rescue_path

    cache = tmp_path / "log.jsonl"
    store = AnswerCache(cache)
    _full_disk_for(monkeypatch, cache)
    _full_disk_for_all(monkeypatch)
    with pytest.raises(LlmsegError, match="No space left on device") as caught:
        store.append({"kind": "answer", "key": "k", "class": "cat", "text": "x"})
    assert str(cache) in str(caught.value) and str(rescue_path(cache)) in str(caught.value) and "lost" in str(caught.value)
    assert store.get("k")["text"] == "x"  # still usable by this run


def _full_disk_for_all(monkeypatch) -> None:
    import llmseg.io as shared_io

    real_open = open

    def fake_open(file, mode="r", *args, **kwargs):
        if "a" in mode or "w" in mode:
            return io.BufferedRandom(_SeekableFull(real_open(file, "a+b")))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(shared_io, "open", fake_open, raising=False)


@pytest.mark.parametrize("fail", ["first write", "second write", "first rename", "second rename"])
def test_a_disk_error_while_writing_the_label_set_pair_never_blocks_the_rerun(toy, monkeypatch, fail):
    """The old writer renamed the label set before writing its sidecar: a failure there left an orphan
    label set, and every rerun refused with 'exists; pass --force'."""
    out = toy / "mine.json"
    what = fail.split(" ")[1]
    nth = 1 if fail.startswith("first") else 2
    calls = {"n": 0}
    real_write_bytes, real_replace = Path.write_bytes, os.replace

    def enospc():
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write_bytes(self, data):
        # the pair's temporaries only: the label-set lock's holder file is written in the same folder
        if what == "write" and self.parent == toy and self.name.endswith(".tmp") and ".lock" not in self.name:
            calls["n"] += 1
            if calls["n"] == nth:
                raise enospc()
        return real_write_bytes(self, data)

    def replace(src, dst, *args, **kwargs):
        if what == "rename" and Path(dst).parent == toy and Path(dst).name in ("mine.json", "mine.meta.json"):
            calls["n"] += 1
            if calls["n"] == nth:
                raise enospc()
        return real_replace(src, dst, *args, **kwargs)

    with ScriptedLLMServer({"cat": [valid(CAT)]}) as server:
        with monkeypatch.context() as patch:
            patch.setattr(Path, "write_bytes", write_bytes)
            patch.setattr(os, "replace", replace)
            failed = invoke(server, out)
        assert failed.exit_code == 2, failed.output
        assert "No space left on device" in failed.output and "Traceback" not in failed.output
        again = invoke(server, out)
        assert again.exit_code == 0, again.output
        assert server.request_count == len(CLASSES)  # the rerun replays the cache
    assert load_label_set(out, CLASSES).root["cat"] == CAT
    assert load_meta(out).model_extra["label_set_sha256"] == sha256_file(out)
    assert not [p for p in toy.iterdir() if p.name.endswith(".tmp")]
    assert json.loads(out.read_text(encoding="utf-8"))["dog"]
