"""Property tests (hypothesis) for the two parsers of untrusted text on stage one's side:

- the label-set JSON loader: any text (or any bytes in a file) loads, or raises LabelSetError; what loads
  can then be validated and turned into a LabelSet or a LabelSetError, never another exception;
- the LLM answer parser: any answer gives a ParsedAnswer (usable or saying why not), never an exception.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmseg.labelset import (
    LabelSetError,
    label_set_from_json,
    loads_label_set_json,
    normalize_subclass,
    read_label_set_json,
    validate_label_set,
)
from llmseg.stage1.parse import MAX_ENTRY_CHARS, AnswerError, extract_json, parse_answer

CLASSES = ["background", "cat", "dog"]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.sampled_from(["cat", "dog", "background", "subclasses", "", "c\x1bat", "ñ", "\u0085"]) | st.text(max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(names, inner, max_size=4),
    max_leaves=20,
)


@st.composite
def json_texts(draw) -> str:
    """JSON documents, some broken on purpose: repeated keys, cut short, deep brackets, prose around."""
    value = draw(json_values | st.dictionaries(st.sampled_from(CLASSES), st.lists(st.text(max_size=10), max_size=4)))
    text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    trick = draw(st.sampled_from(["none", "repeat", "cut", "deep", "prose", "fence"]))
    if trick == "repeat" and text.startswith("{") and len(text) > 2:
        text = text[:-1] + (", " if text != "{}" else "") + '"cat": ["x"], "cat": ["y"]}'
    elif trick == "cut":
        text = text[: draw(st.integers(0, len(text)))]
    elif trick == "deep":
        depth = draw(st.sampled_from([2, 40, 999, 1200, 5000]) | st.integers(1, 3000))
        text = "[" * depth + text + "]" * draw(st.integers(0, depth))
    elif trick == "prose":
        text = draw(st.text(max_size=20)) + text + draw(st.text(max_size=20))
    elif trick == "fence":
        text = f"Here:\n```json\n{text}\n```\n" + draw(st.text(max_size=10))
    return text


OPENERS = {"[": "]", '{"a":': "}", "[1,": "]"}


@st.composite
def deep_texts(draw) -> str:
    """Hostile nesting, directly: the JSON decoder recurses, and a few thousand brackets once meant RecursionError."""
    opener = draw(st.sampled_from(sorted(OPENERS)))
    depth = draw(st.sampled_from([2, 999, 1500, 5_000]))
    closed = draw(st.sampled_from([0, depth // 2, depth]))
    inner = draw(st.sampled_from(["", "{}", '"x"', '{"subclasses": ["a"]}']))
    return draw(st.text(max_size=3)) + opener * depth + inner + OPENERS[opener] * closed


any_text = st.text() | json_texts() | deep_texts() | st.text(alphabet="[]{}\",:x \\", max_size=200)


@FAST
@given(any_text)
def test_the_label_set_loader_loads_or_names_the_problem(text):
    try:
        raw = loads_label_set_json(text, "prop.json")
    except LabelSetError as exc:
        assert "prop.json" in str(exc)
        return
    report = validate_label_set(raw, CLASSES, source="prop.json")  # never raises on loaded JSON
    assert report.exit_code in (0, 1, 2)
    try:
        label_set = label_set_from_json(raw, CLASSES, source="prop.json")
    except LabelSetError as exc:
        assert "prop.json" in str(exc)
        return
    assert label_set.classes == CLASSES and not report.errors


@FAST
@given(st.binary(max_size=300) | json_texts().map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_a_label_set_file_with_any_bytes_loads_or_names_the_file(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "any.json"
        path.write_bytes(data)
        try:
            read_label_set_json(path)
        except LabelSetError as exc:
            assert str(path) in str(exc)


@FAST
@given(any_text, st.integers(1, 6), st.sampled_from([None, "stop", "length"]))
def test_the_answer_parser_never_raises(text, k, finish_reason):
    parsed = parse_answer(text, k, class_name="cat", other_classes=CLASSES, finish_reason=finish_reason)
    assert isinstance(parsed.describe(), str)
    if parsed.ok:
        assert len(parsed.subclasses) == k
        keys = [s.casefold() for s in parsed.subclasses]
        assert len(set(keys)) == k
        for entry in parsed.subclasses:
            assert entry == normalize_subclass(entry) and 0 < len(entry) <= MAX_ENTRY_CHARS
            assert entry.casefold() not in {"dog", "background"}
    else:
        assert parsed.describe()


@FAST
@given(any_text)
def test_extract_json_returns_json_or_raises_answer_error(text):
    try:
        value = extract_json(text)
    except AnswerError:
        return
    json.dumps(value)  # a plain JSON value


@FAST
@given(st.lists(st.text(min_size=1, max_size=30).filter(lambda s: normalize_subclass(s)), min_size=1, max_size=6, unique_by=lambda s: normalize_subclass(s).casefold()))
def test_a_clean_answer_round_trips(items):
    # a <think>...</think> span is a reasoning model's aside: the parser drops it from the whole answer by design
    items = [s for s in items if normalize_subclass(s).casefold() not in {"dog", "background"}
             and len(normalize_subclass(s)) <= MAX_ENTRY_CHARS and not re.search(r"<think>.*?</think>", s, re.I | re.S)]
    if not items:
        return
    parsed = parse_answer(json.dumps({"subclasses": items}), len(items), class_name="cat", other_classes=CLASSES)
    assert parsed.ok and parsed.subclasses == [normalize_subclass(s) for s in items]
