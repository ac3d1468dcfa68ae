"""Item 7 (torn cache tail, bad records) and the jsonlines reader: a cache file never stops a run."""

from __future__ import annotations

import json
import logging

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmseg.errors import LlmsegError
from llmseg.io import append_jsonl, read_jsonl
from llmseg.stage1.cache import AnswerCache
from llmseg.stage1.generate import generate_label_set
from llmseg.stage1.testing.server import ScriptedLLMServer

CLASSES = ["background", "chat", "café"]


def _answer(key: str, text: str = '{"subclasses": ["a"]}', **extra) -> dict:
    return {"kind": "answer", "key": key, "class": "café", "text": text, "meta": {"finish_reason": "stop"}, **extra}


def test_a_last_line_cut_inside_a_utf8_character_is_dropped_and_named(tmp_path, caplog):
    cache = tmp_path / "log.jsonl"
    append_jsonl(cache, _answer("k1", "crème brûlée"))
    append_jsonl(cache, _answer("k2", "café au lait"))
    line = json.dumps(_answer("k3", "été"), ensure_ascii=False).encode("utf-8")
    cut = line.index("été".encode()) + 1  # inside the two-byte 'é'
    with open(cache, "ab") as fh:
        fh.write(line[:cut])
    with caplog.at_level(logging.WARNING):
        loaded = AnswerCache(cache)
    assert [loaded.get(k)["text"] for k in ("k1", "k2")] == ["crème brûlée", "café au lait"]
    assert loaded.get("k3") is None
    assert any(str(cache) in m and "line 3" in m and "cut short" in m for m in caplog.messages)


def test_an_append_after_a_torn_tail_is_not_swallowed_by_it(tmp_path, caplog):
    cache = tmp_path / "log.jsonl"
    append_jsonl(cache, _answer("k1"))
    with open(cache, "ab") as fh:
        fh.write(b'{"kind": "answer", "key": "k2", "te')  # a run killed mid-write
    append_jsonl(cache, _answer("k3"))  # the resumed run's first answer, paid for
    with caplog.at_level(logging.WARNING):
        keys = [r["key"] for r in read_jsonl(cache)]
    assert keys == ["k1", "k3"]
    assert any("line 2 is not a JSON object" in m for m in caplog.messages)


def test_a_bad_line_in_the_middle_is_skipped_with_its_number(tmp_path, caplog):
    from llmseg.io import iter_jsonl

    cache = tmp_path / "log.jsonl"
    append_jsonl(cache, _answer("k1"))
    with open(cache, "ab") as fh:
        fh.write(b"\xff\xfe not json\n[1, 2]\n\"text\"\n" + b"[" * 100_000 + b"\n")
    append_jsonl(cache, _answer("k2"))
    with caplog.at_level(logging.WARNING):
        numbers = [n for n, _ in iter_jsonl(cache)]
    assert numbers == [1, 6]
    for line in (2, 3, 4, 5):
        assert any(f"{cache}: line {line} is not a JSON object" in m for m in caplog.messages), line


def test_records_with_fields_of_the_wrong_type_are_skipped_and_named(tmp_path, caplog):
    cache = tmp_path / "log.jsonl"
    bad = [
        _answer("k1", meta=["finish_reason", "stop"]),
        _answer("k2", meta="stop"),
        {"kind": "answer", "key": 3, "text": "x"},
        _answer("k4", text=None),
        _answer("k5", messages="hello"),
        {"kind": "note", "event": "batch_submitted", "batch_key": "b", "batch_id": 7, "requests": "all"},
        {"kind": "note", "event": "batch_submitted", "batch_key": "b"},
        {"kind": 5},
    ]
    for record in bad:
        append_jsonl(cache, record)
    append_jsonl(cache, _answer("good"))
    with caplog.at_level(logging.WARNING):
        loaded = AnswerCache(cache)
    assert len(loaded) == 1 and loaded.get("good") is not None
    assert loaded.notes(event="batch_submitted") == []
    assert [s.split(": ", 1)[0] for s in loaded.skipped] == [f"{cache}:{n}" for n in range(1, 8)]
    assert any(f"{cache}: line 1 skipped: 'meta' is list" in m for m in caplog.messages)


def test_a_run_resumes_from_a_cache_whose_meta_is_not_an_object(tmp_path, fast, caplog):
    """The old reader indexed such a record and the run died with AttributeError on meta.get."""
    cache = tmp_path / "log.jsonl"
    with ScriptedLLMServer() as server:
        first, _ = generate_label_set(CLASSES, backend="openai", model="scripted", base_url=server.base_url,
                                      backoff=fast, progress=False, cache_path=cache)
    records = [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines()]
    for record in records:
        if record.get("class") == "chat":
            record["meta"] = ["not", "an", "object"]
    cache.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    with ScriptedLLMServer() as server, caplog.at_level(logging.WARNING):
        again, _ = generate_label_set(CLASSES, backend="openai", model="scripted", base_url=server.base_url,
                                      backoff=fast, progress=False, cache_path=cache)
        assert server.classes_requested() == ["chat"]  # only the skipped record is asked again
    assert again.root == first.root
    assert any("'meta' is list" in m and str(cache) in m for m in caplog.messages)


# ---------------------------------------------------------------------- property-based

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=400) | st.lists(st.sampled_from([
    b'{"kind": "answer", "key": "k", "text": "t"}\n', b'{"kind": "answer", "key": "k", "text": "t", "meta": []}\n',
    b'{"kind": "note", "event": 1}\n', b"\xc3", b"\n", b"[", b"{", b'"', b"null\n", b"\xef\xbb\xbf{}\n",
    b'{"kind": "note", "event": "x", "requests": true}\n', b'{"a": NaN}\n', b"\x1e{}\n",
]), max_size=12).map(b"".join))
def test_any_bytes_load_or_raise_the_projects_error(tmp_path, content):
    cache = tmp_path / "any.jsonl"
    cache.write_bytes(content)
    try:
        loaded = AnswerCache(cache)
    except LlmsegError:
        return
    for key in ("k",):
        record = loaded.get(key)
        assert record is None or (isinstance(record["text"], str) and isinstance(record.get("meta") or {}, dict))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=())),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(st.characters(blacklist_categories=()), max_size=8), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.dictionaries(st.text(st.characters(blacklist_categories=()), max_size=8), _JSON, max_size=5), max_size=6))
def test_appending_then_reading_round_trips(tmp_path, records):
    """Any JSON objects, lone surrogates and line separators included, read back equal and in order."""
    log = tmp_path / "round.jsonl"
    log.unlink(missing_ok=True)
    for record in records:
        append_jsonl(log, record)
    assert read_jsonl(log) == records
