"""Turn an LLM's answer into exactly K clean subclass names, or say precisely why it cannot.

Accepted shapes: `{"subclasses": [...]}`, any object with exactly one list value, or a bare
list; as the whole answer, inside a ``` fence, or embedded in prose. `<think>` blocks of
reasoning models are ignored. Entries are normalised with the label-set rules
(`llmseg.labelset.normalize_subclass`); empty entries, duplicates and names of other classes
are dropped. A list that does not then hold exactly K entries is unusable: the caller asks
again, it never pads or trims.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from llmseg.errors import LlmsegError
from llmseg.labelset import normalize_subclass

MAX_ENTRY_CHARS = 80  # longer than this is a sentence, not a name
MAX_JSON_STARTS = 2048  # '[' / '{' positions tried as the start of embedded JSON: bounds the work on a hostile answer


class SubclassAnswer(BaseModel):
    """The structured-output schema sent as `response_format` (json_schema, strict)."""

    subclasses: list[str] = Field(description="Visually distinct subtypes of the class, short noun phrases.")


def answer_schema() -> dict[str, Any]:
    """The OpenAI `response_format` value for `SubclassAnswer` (strict: every field required, no extras)."""
    schema = SubclassAnswer.model_json_schema()
    schema.pop("description", None)  # the class docstring is for developers, not for the LLM
    schema["additionalProperties"] = False
    schema["required"] = ["subclasses"]
    return {"type": "json_schema", "json_schema": {"name": "subclass_answer", "strict": True, "schema": schema}}


class AnswerError(LlmsegError, ValueError):
    """No JSON list could be found in an answer."""


_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```[a-zA-Z0-9_-]*\s*\n?(.*?)```", re.DOTALL)


def extract_json(text: str) -> Any:
    """The first JSON object or list in `text` (whole, fenced, or embedded in prose)."""
    text = _THINK.sub("", text or "").strip()
    if not text:
        raise AnswerError("the answer is empty")
    candidates = [text, *(m.group(1).strip() for m in _FENCE.finditer(text))]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            pass
        except RecursionError:  # nested thousands deep: not an answer, and no traceback either
            raise AnswerError("the answer's JSON is nested too deeply") from None
    decoder = json.JSONDecoder()
    for number, match in enumerate(re.finditer(r"[\[{]", text)):
        if number >= MAX_JSON_STARTS:
            break
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(value, dict | list) and value:
            return value
    raise AnswerError("the answer holds no complete JSON object or list")


def answer_items(value: Any) -> list[Any]:
    """The list of subclass entries inside a decoded answer."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in ("subclasses", "subtypes", "types", "items"):
            if isinstance(value.get(key), list):
                return value[key]
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
        raise AnswerError('the JSON object has no "subclasses" list')
    raise AnswerError(f"the JSON is a {type(value).__name__}, not an object with a list")


def _short_json(value: Any, limit: int = 60) -> str:
    """A bounded JSON rendering of an unusable entry, for the repair turn (never a RecursionError)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (RecursionError, ValueError):
        text = f"<a nested {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class ParsedAnswer:
    """The clean entries of one answer, what was dropped and why; usable iff exactly K entries remain."""

    k: int
    subclasses: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was dropped or wrong, for the re-ask turn
    error: str | None = None  # no list could be read at all

    @property
    def ok(self) -> bool:
        return self.error is None and len(self.subclasses) == self.k

    def describe(self) -> str:
        """Why the answer is unusable (or what was dropped from a usable one), one line."""
        parts = [self.error] if self.error else []
        if self.error is None and len(self.subclasses) != self.k:
            parts.append(f"it gives {len(self.subclasses)} usable distinct subclasses instead of exactly {self.k}")
        return "; ".join(parts + self.notes)


def parse_answer(
    text: str,
    k: int,
    *,
    class_name: str,
    other_classes: Sequence[str] = (),
    finish_reason: str | None = None,
) -> ParsedAnswer:
    """Parse and normalise one answer for `class_name`: drop what is unusable, then count."""
    result = ParsedAnswer(k=k)
    try:
        items = answer_items(extract_json(text))
    except AnswerError as exc:
        result.error = str(exc)
        if finish_reason == "length":
            result.error += " (it was cut off at the token limit)"
        return result
    others = {normalize_subclass(c).casefold(): c for c in other_classes if c != class_name}
    seen: set[str] = set()
    empty = duplicates = 0
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            item = item["name"]  # [{"name": "tabby cat", "description": ...}, ...]
        if not isinstance(item, str):
            result.notes.append(f"entry {_short_json(item)} is not a string")
            continue
        entry = normalize_subclass(item)
        key = entry.casefold()
        if not entry:
            empty += 1
        elif len(entry) > MAX_ENTRY_CHARS:
            result.notes.append(f"'{entry[:40]}...' is a sentence, not a short name")
        elif key in others:
            result.notes.append(f"'{entry}' is the name of another class")
        elif key in seen:
            duplicates += 1
        else:
            seen.add(key)
            result.subclasses.append(entry)
    if empty:
        result.notes.append(f"{empty} empty entr{'y' if empty == 1 else 'ies'}")
    if duplicates:
        result.notes.append(f"{duplicates} duplicate entr{'y' if duplicates == 1 else 'ies'}")
    return result
