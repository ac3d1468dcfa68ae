"""The label-set format: {class name: [subclass strings]} plus a provenance sidecar.

`label_sets/<dataset>/<name>.json` is exactly the seed's format (its released files load
unchanged): a JSON object whose keys are the dataset's classes in order. The sidecar
`<name>.meta.json` says how it was made. Validation reports every problem with the class
named and can write a cleaned copy.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

from . import __version__
from .errors import LlmsegError
from .io import RepeatedKeyError, atomic_path, refuse_repeated_keys, sha256_bytes
from .resources import resolve_label_set_path

Severity = Literal["error", "warning", "info"]


class LabelSetError(LlmsegError, ValueError):
    """A label set that cannot be used; the message names the file and the class."""


class LabelSet(RootModel[dict[str, list[str]]]):
    """A well-formed label set: ordered {class: [subclasses]} with non-empty string entries."""

    @field_validator("root")
    @classmethod
    def _non_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, subclasses in value.items():
            if not subclasses:
                raise ValueError(f"class '{name}' has no subclasses")
            for entry in subclasses:
                if not entry.strip():
                    raise ValueError(f"class '{name}' has an empty subclass")
        return value

    @property
    def classes(self) -> list[str]:
        return list(self.root)

    def subclasses(self, name: str) -> list[str]:
        return self.root[name]

    def items(self):
        return self.root.items()

    def flat_names(self) -> tuple[list[str], list[int]]:
        """All subclass strings in class order and, for each, the index of its class."""
        names: list[str] = []
        owners: list[int] = []
        for index, subclasses in enumerate(self.root.values()):
            names.extend(subclasses)
            owners.extend([index] * len(subclasses))
        return names, owners

    def first(self, k: int) -> LabelSet:
        """Each class's first `k` subclasses (an LLM lists the most typical first): `--k`, tuning K."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        return LabelSet({name: subclasses[:k] for name, subclasses in self.root.items()})

    def with_class_names(self) -> LabelSet:
        """Each class name prepended to its own list (if not already there): `--include-class-name`."""
        out: dict[str, list[str]] = {}
        for name, subclasses in self.root.items():
            keys = {_dedup_key(s) for s in subclasses}
            out[name] = subclasses if _dedup_key(name) in keys else [name, *subclasses]
        return LabelSet(out)


class LabelSetMeta(BaseModel):
    """Provenance sidecar: enough to regenerate the label set."""

    model_config = ConfigDict(extra="allow")

    generator: str = Field(description="'openai', 'hf', 'curated', 'seed-release', ...")
    model: str | None = None
    dataset: str | None = None
    prompt_id: str | None = None
    prompt_sha256: str | None = None
    k: int | None = None
    sampling: dict[str, Any] = Field(default_factory=dict)
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    tool_version: str = __version__
    per_class_attempts: dict[str, int] = Field(default_factory=dict)
    notes: str | None = None


def meta_path_for(path: str | Path) -> Path:
    """`top5.json` -> `top5.meta.json`."""
    path = Path(path)
    return path.with_name(path.name[: -len(".json")] + ".meta.json" if path.name.endswith(".json") else path.name + ".meta.json")


MAX_JSON_DEPTH = 32  # a label set is two levels deep ({class: [subclass]}); far deeper is an attack or a mistake


def _check_tree(value: Any, source: str) -> None:
    """Refuse nesting deeper than MAX_JSON_DEPTH and strings that are not valid Unicode (lone surrogates).

    Iterative, so that a hostile depth cannot overflow the stack here; a lone surrogate would fail
    later, when the name is printed or written as UTF-8, far from the file that holds it.
    """
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise LabelSetError(f"{source}: JSON nested more than {MAX_JSON_DEPTH} levels deep; a label set is "
                                "{class: [subclasses]}")
        if isinstance(item, dict):
            stack.extend((k, depth + 1) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise LabelSetError(f"{source}: the string {ascii(item[:60])} holds a lone surrogate "
                                    "(\\ud800-\\udfff), not valid Unicode") from exc


def loads_label_set_json(text: str, source: str = "label set") -> Any:
    """Label-set JSON text -> raw JSON (key order kept); anything else is a LabelSetError naming `source`.

    Refused: invalid JSON, a key given twice in one object (naming the key), nesting deeper than
    MAX_JSON_DEPTH (no RecursionError traceback), lone surrogates. `validate_label_set` judges the rest.
    """
    try:
        data = json.loads(text, object_pairs_hook=refuse_repeated_keys)
    except RepeatedKeyError as exc:
        raise LabelSetError(f"{source}: key {exc.key!r} is given twice in one object (only one value can hold); "
                            "remove the other") from exc
    except json.JSONDecodeError as exc:
        raise LabelSetError(f"{source}: not valid UTF-8 JSON: {exc}") from exc
    except RecursionError as exc:
        raise LabelSetError(f"{source}: JSON nested too deeply to be a label set") from exc
    _check_tree(data, source)
    return data


def read_label_set_json(path: str | Path) -> Any:
    """The raw JSON of a label-set file, key order preserved; errors (see loads_label_set_json) name the file."""
    path = Path(path)
    if not path.is_file():
        raise LabelSetError(f"label set not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LabelSetError(f"{path}: not valid UTF-8 JSON: {exc}") from exc
    except OSError as exc:
        raise LabelSetError(f"cannot read label set {path}: {exc.strerror or exc}") from exc
    return loads_label_set_json(text, str(path))


def load_label_set(path: str | Path, classes: Sequence[str] | None = None) -> LabelSet:
    """Load a label set; with `classes`, also require its keys to be exactly those classes in order.

    Only errors stop loading; warnings (duplicates, underscores...) are what `llmseg validate` is for.
    A path that does not exist as given is looked up in the bundled `label_sets/` folder, as
    `llmseg segment` does (`resolve_label_set_path`), so every command resolves it the same way.
    """
    try:
        path = resolve_label_set_path(path)
    except FileNotFoundError as exc:
        raise LabelSetError(str(exc)) from exc
    return label_set_from_json(read_label_set_json(path), classes, source=str(path))


def label_set_from_json(raw: Any, classes: Sequence[str] | None = None, *, source: str = "label set") -> LabelSet:
    """Raw label-set JSON (a file's, or a dict from Python) -> LabelSet; with `classes`, its keys must
    be exactly those classes in order. Errors name `source` and every offending class."""
    if classes is not None:
        report = validate_label_set(raw, classes, source=source)
        if report.errors:
            problems = "; ".join(f"class '{i.cls}': {i.message}" if i.cls is not None else i.message for i in report.errors)
            raise LabelSetError(f"{source} does not match the {len(classes)} classes: {problems}")
    try:
        return LabelSet.model_validate(raw)
    except Exception as exc:  # pydantic.ValidationError: re-raise with the source named
        raise LabelSetError(f"{source}: not a label set: {exc}") from exc


def load_meta(path: str | Path) -> LabelSetMeta | None:
    """The sidecar of a label set, or None if it has none."""
    meta = meta_path_for(path)
    if not meta.is_file():
        return None
    try:
        return LabelSetMeta.model_validate_json(meta.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # pydantic's ValidationError is a ValueError; so is UnicodeDecodeError
        raise LabelSetError(f"{meta}: not a readable label-set sidecar: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def save_label_set(path: str | Path, label_set: LabelSet | dict[str, list[str]], meta: LabelSetMeta | None) -> Path:
    """Write the label set and (if given) its sidecar as a pair. The sidecar records the set's sha256.

    Both are written in full to temporaries first; only then is the sidecar renamed into place,
    and the label set last. A full or read-only disk therefore leaves the old pair (or nothing),
    never a label set without its sidecar that a rerun would refuse to overwrite; at worst a
    sidecar without its label set, which a rerun simply replaces. OSError becomes a LabelSetError
    naming the file and the disk error.
    """
    path = Path(path)
    data = label_set.root if isinstance(label_set, LabelSet) else label_set
    body = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    sidecar = None
    if meta is not None:
        record = meta.model_dump(mode="json")
        record["label_set_sha256"] = sha256_bytes(body)
        sidecar = (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    writing = path
    try:
        with atomic_path(path) as set_tmp:
            set_tmp.write_bytes(body)
            if sidecar is not None:
                writing = meta_path_for(path)
                with atomic_path(writing) as meta_tmp:  # renamed when this block ends, before the label set
                    meta_tmp.write_bytes(sidecar)
                writing = path
    except OSError as exc:
        raise LabelSetError(
            f"could not write {writing}: {exc.strerror or exc}" + (f" [errno {exc.errno}]" if exc.errno else "")
            + f"; {path} was left as it was: free some space or write elsewhere (--out), then rerun"
        ) from exc
    return path


# --------------------------------------------------------------------------- normalisation

_SPACES = re.compile(r"\s+")


def _strip_controls(text: str) -> str:
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text)


def normalize_subclass(text: str) -> str:
    """NFC, control characters and underscores to spaces, whitespace collapsed, stripped."""
    text = unicodedata.normalize("NFC", text)
    text = _strip_controls(text).replace("_", " ")
    return _SPACES.sub(" ", text).strip()


def _dedup_key(text: str) -> str:
    """Two entries are the same subclass when they match after normalisation, ignoring case."""
    return normalize_subclass(text).casefold()


# --------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Issue:
    severity: Severity
    code: str
    message: str
    cls: str | None = None
    fixable: bool = False

    def __str__(self) -> str:
        where = f"class '{self.cls}': " if self.cls is not None else ""
        return f"{self.severity}: {where}{self.message} [{self.code}]"


@dataclass
class ValidationReport:
    source: str
    issues: list[Issue] = field(default_factory=list)
    fixed: dict[str, list[str]] | None = None  # a cleaned copy, when every error is fixable

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def exit_code(self) -> int:
        """0 clean, 1 warnings only, 2 errors."""
        if self.errors:
            return 2
        return 1 if self.warnings else 0


TokenCounter = Callable[[str], int]


def clip_token_counter() -> TokenCounter:
    """Tokens (with start/end tokens) of open_clip's bundled BPE tokenizer; works offline."""
    # lazy import: start-up time (open_clip imports torch; `import llmseg.cli` loads this module)
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    return lambda text: len(tokenizer.encode(text)) + 2


def validate_label_set(
    data: Any,
    classes: Sequence[str],
    *,
    source: str = "<label set>",
    token_counter: TokenCounter | None = None,
    context_length: int = 77,
    longest_template: str = "a photo of a {}.",
) -> ValidationReport:
    """Check raw label-set JSON against a dataset's classes; every rule of the format.

    Errors: not an object, missing/extra/out-of-order keys, a list that is not a list or is
    empty, non-string or empty entries. Warnings: duplicates after normalisation, entries
    needing normalisation, a subclass under two classes or equal to another class's name,
    entries too long for the text encoder once put into `longest_template`.
    """
    report = ValidationReport(source=source)
    add = report.issues.append
    if not isinstance(data, dict):
        add(Issue("error", "not-an-object", f"{source}: top level must be a JSON object {{class: [subclasses]}}"))
        return report

    class_list = list(classes)
    reorderable = _check_keys(data, class_list, add)
    rules = _SubclassRules(add, {_dedup_key(c): c for c in class_list}, token_counter, context_length, longest_template)
    fixed: dict[str, list[str]] = {}
    fixable = reorderable  # a cleaned copy needs exactly the dataset's keys and every list cleanable
    for name in class_list if reorderable else list(data):
        if name not in data:
            continue
        cleaned, complete = rules.check_list(name, data[name])
        fixable = fixable and complete
        if cleaned is not None:
            fixed[name] = cleaned

    for key, names in rules.owners.items():
        if len(names) > 1:
            add(Issue("warning", "shared-subclass", f"subclass '{key}' appears under {', '.join(repr(n) for n in names)}", cls=names[0]))

    if fixable:
        report.fixed = {name: fixed[name] for name in class_list}
    return report


def _check_keys(data: dict[Any, Any], class_list: list[str], add: Callable[[Issue], None]) -> bool:
    """Report missing, extra and out-of-order keys; True when the keys are the dataset's classes (in any order)."""
    keys = list(data)
    missing = [c for c in class_list if c not in data]
    known = set(class_list)
    extra = [k for k in keys if k not in known]
    folded = {normalize_subclass(c).casefold(): c for c in class_list}
    for name in missing:
        add(Issue("error", "missing-class", "missing from the label set", cls=name))
    for name in extra:
        hint = folded.get(normalize_subclass(name).casefold())
        suffix = f" (did you mean '{hint}'?)" if hint and hint != name else ""
        add(Issue("error", "extra-class", f"not a class of the dataset{suffix}", cls=name))
    reorderable = not missing and not extra
    if reorderable and keys != class_list:
        first = next(i for i, (a, b) in enumerate(zip(keys, class_list, strict=True)) if a != b)
        add(
            Issue(
                "error",
                "key-order",
                f"keys out of order: position {first} holds '{keys[first]}', the dataset has '{class_list[first]}' there",
                cls=keys[first],
                fixable=True,
            )
        )
    return reorderable


@dataclass
class _SubclassRules:
    """What each class's subclass list is checked against, and which classes each subclass has been seen under."""

    add: Callable[[Issue], None]
    class_keys: dict[str, str]  # dedup key of a class name -> that class
    token_counter: TokenCounter | None
    context_length: int
    longest_template: str
    owners: dict[str, list[str]] = field(default_factory=dict)  # casefolded subclass -> the classes listing it

    def check_list(self, name: str, value: Any) -> tuple[list[str] | None, bool]:
        """(the cleaned list, whether every entry could be cleaned); (None, False) when `value` is no non-empty list."""
        if not isinstance(value, list):
            self.add(Issue("error", "not-a-list", f"value must be a list of strings, got {type(value).__name__}", cls=name))
            return None, False
        if not value:
            self.add(Issue("error", "empty-list", "has no subclasses", cls=name))
            return None, False
        cleaned: list[str] = []
        seen: dict[str, str] = {}
        complete = True
        for position, entry in enumerate(value):
            normal = self._normalised_entry(name, position, entry)
            if normal is None:
                complete = False
                continue
            key = normal.casefold()
            if key in seen:
                self.add(Issue("warning", "duplicate", f"{entry!r} duplicates {seen[key]!r}", cls=name, fixable=True))
                continue
            seen[key] = entry
            cleaned.append(normal)
            self._check_kept(name, entry, normal)
        return cleaned, complete

    def _normalised_entry(self, name: str, position: int, entry: Any) -> str | None:
        """The entry normalised (a warning when that changes it); None, with an error, for a non-string or empty one."""
        if not isinstance(entry, str):
            self.add(Issue("error", "not-a-string", f"entry {position} is {entry!r}, not a string", cls=name))
            return None
        normal = normalize_subclass(entry)
        if not normal:
            self.add(Issue("error", "empty-entry", f"entry {position} is empty", cls=name))
            return None
        if normal != entry:
            self.add(Issue("warning", "needs-normalisation", f"{entry!r} normalises to {normal!r}", cls=name, fixable=True))
        return normal

    def _check_kept(self, name: str, entry: str, normal: str) -> None:
        """The checks of an entry that stays: its owner recorded, another class's name, parentheses, its length."""
        key = normal.casefold()
        owners = self.owners.setdefault(key, [])
        if name not in owners:
            owners.append(name)
        other = self.class_keys.get(key)
        if other is not None and other != name:
            self.add(Issue("warning", "equals-other-class", f"{entry!r} is the name of class '{other}'", cls=name))
        if "(" in normal or ")" in normal:
            self.add(Issue("info", "parentheses", f"{entry!r} contains parentheses", cls=name))
        if self.token_counter is not None:
            tokens = self.token_counter(self.longest_template.format(normal))
            if tokens > self.context_length:
                self.add(
                    Issue(
                        "warning",
                        "too-long",
                        f"{normal!r} takes {tokens} tokens in the longest template, over the text encoder's {self.context_length}",
                        cls=name,
                    )
                )
