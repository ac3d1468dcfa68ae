"""Answer parsing and normalisation: JSON found wherever it is, cleaned, counted, never padded."""

from __future__ import annotations

import pytest

from llmseg.stage1.parse import AnswerError, answer_items, answer_schema, extract_json, parse_answer


@pytest.mark.parametrize(
    "text",
    [
        '{"subclasses": ["a", "b"]}',
        'Here you go:\n```json\n{"subclasses": ["a", "b"]}\n```\nEnjoy!',
        'Sure. {"subclasses": ["a", "b"]} Anything else?',
        '<think>maybe {"subclasses": ["x"]}</think>["a", "b"]',
        '{"types": ["a", "b"]}',
        '["a", "b"]',
    ],
)
def test_extracts_the_list_wherever_it_is(text):
    assert answer_items(extract_json(text)) == ["a", "b"]


@pytest.mark.parametrize("text", ["", "   ", "not json at all", '{"subclasses": ["a", "b"', "{}"])
def test_no_json_is_an_error(text):
    with pytest.raises(AnswerError):
        answer_items(extract_json(text))


def test_normalisation_drops_duplicates_empties_and_other_class_names():
    text = '{"subclasses": ["Siamese  cat", "siamese cat", "", "  ", "Dog", "tabby_cat", "Maine\\u00a0Coon", "Persian"]}'
    parsed = parse_answer(text, 4, class_name="cat", other_classes=["cat", "dog"])
    assert parsed.subclasses == ["Siamese cat", "tabby cat", "Maine Coon", "Persian"]
    assert parsed.ok
    notes = parsed.describe()
    assert "'Dog' is the name of another class" in notes and "2 empty entries" in notes and "1 duplicate entry" in notes


def test_wrong_count_is_not_usable_and_never_padded_or_trimmed():
    few = parse_answer('{"subclasses": ["a", "b", "c"]}', 5, class_name="x")
    assert not few.ok and few.subclasses == ["a", "b", "c"]
    assert "3 usable distinct subclasses instead of exactly 5" in few.describe()
    many = parse_answer('{"subclasses": ["a", "b", "c", "d", "e", "f"]}', 5, class_name="x")
    assert not many.ok and len(many.subclasses) == 6


def test_own_class_name_is_kept_and_nfc_applied():
    decomposed = "cafe\u0301 chair"
    parsed = parse_answer(f'["chair", "{decomposed}"]', 2, class_name="chair", other_classes=["chair", "table"])
    assert parsed.ok and parsed.subclasses == ["chair", "caf\u00e9 chair"]


def test_truncated_answer_says_so():
    parsed = parse_answer('{"subclasses": ["a", "b', 2, class_name="x", finish_reason="length")
    assert not parsed.ok and "cut off" in parsed.describe()


def test_non_strings_and_sentences_are_dropped():
    long = "a very long description of a thing that goes on and on well past any reasonable label length"
    parsed = parse_answer(f'["a", 3, null, "{long}", "b"]', 2, class_name="x")
    assert parsed.ok and parsed.subclasses == ["a", "b"]
    assert "not a string" in parsed.describe() and "sentence" in parsed.describe()


def test_schema_is_strict_openai_json_schema():
    fmt = answer_schema()
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["subclasses"] and schema["additionalProperties"] is False
    assert schema["properties"]["subclasses"]["items"] == {"type": "string"}


def test_objects_with_a_name_are_accepted():
    parsed = parse_answer('{"subclasses": [{"name": "tabby", "why": "stripes"}, {"name": "calico"}]}', 2, class_name="cat")
    assert parsed.ok and parsed.subclasses == ["tabby", "calico"]
